"""``captions``: image-caption pairs as img2dataset writes them (the LAION/COYO shards grit itself reads).

``<s> <image> slots </image> caption </s>``, no grounding. The caption is ``KEY.txt`` (img2dataset) or the json's
``caption``; samples img2dataset failed to download are skipped (``not_usable``).
"""
from __future__ import annotations

from typing import Any

from kosmos.sequence import Image, Text
from kosmos.sources.base import SampleError
from kosmos.sources.grounded import FAILED_STATUSES, TarSource, check_plain_text, sample_image


def decode_caption(raw: dict[str, Any]) -> str:
    import json

    key = raw.get("__key__", "?")
    record = {}
    if "json" in raw:
        try:
            record = json.loads(raw["json"])
        except (ValueError, UnicodeDecodeError) as error:
            raise SampleError("bad_json", f"{key}: {error}") from None
        if not isinstance(record, dict):
            raise SampleError("bad_json", f"{key}: json is not an object")
        if record.get("status") in FAILED_STATUSES:
            raise SampleError("not_usable", f"{key}: status {record.get('status')!r}")
    caption = raw.get("txt")
    caption = caption.decode("utf-8", "replace") if isinstance(caption, bytes) else caption
    if not isinstance(caption, str) or not caption.strip():
        caption = record.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise SampleError("empty_text", f"{key}: no caption")
    return " ".join(caption.split())


class CaptionsSource(TarSource):
    kind = "captions"

    def texts(self, raw: dict[str, Any]) -> list[str]:
        try:
            return [decode_caption(raw)]
        except SampleError:
            return []

    def units(self, raw: dict[str, Any], epoch: int, counters: dict[str, int]) -> list[dict]:
        encoder = self.encoder
        caption = decode_caption(raw)
        check_plain_text(caption, encoder.tokenizer, f"caption of {raw.get('__key__')!r}")
        pixels, _ = encoder.pixels(sample_image(raw), self.config.image_mode)
        row = encoder.encode([Image(pixels), Text(caption)],
                             max_tokens=encoder.image_length() + 1 + self.config.max_length)
        row["key"], row["text"] = raw.get("__key__"), caption
        return [row]
