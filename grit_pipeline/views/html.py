"""Small helpers shared by the gallery and the report: escaping, embedding, thumbnails, colours."""
from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from pathlib import Path
from typing import Any

from PIL import Image

# Distinct colours for boxes and their caption spans (cycled when a caption has more spans).
PALETTE = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#17becf",
    "#f032e6", "#9a6324", "#008080", "#800000", "#808000", "#000075",
)


def esc(value: Any) -> str:
    """Text for HTML element content or a quoted attribute: ``& < > " '`` escaped."""
    return html.escape("" if value is None else str(value), quote=True)


def json_for_script(value: Any) -> str:
    """JSON safe to place inside ``<script>``: no ``</script>``, ``<!--``, ``&`` or JS line terminators."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def fill_template(template: str, **values: str) -> str:
    """Replace each ``{name}`` in ``template`` in one pass (inserted text is never rescanned, so a
    caption containing ``{cards}`` stays text); an unknown name is an error."""
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), template)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def safe_link(url: str | None) -> str:
    """The url as escaped text, linked only when it is http(s) (a ``javascript:`` url stays text)."""
    if not url:
        return ""
    text = esc(url if len(url) <= 120 else url[:117] + "...")
    if url.lower().startswith(("http://", "https://")):
        return f'<a href="{esc(url)}" rel="noreferrer noopener" target="_blank">{text}</a>'
    return f"<span>{text}</span>"


class ImageUnavailable(Exception):
    """The image bytes could not be turned into a picture the page can show."""


def thumbnail(data: bytes, max_side: int = 512, quality: int = 85) -> tuple[bytes, int, int]:
    """JPEG bytes of the decoded image (EXIF orientation applied, like the pipeline's decoder),
    at most ``max_side`` pixels on its longer side; returns (jpeg, width, height).

    Boxes are normalised to the decoded image, so the thumbnail must be that image: it is decoded by the
    pipeline's own decoder, under the same pixel limit."""
    from grit_pipeline.images import ImageDecodeError, decode_image

    try:
        image = decode_image(data)
    except ImageDecodeError as error:
        raise ImageUnavailable(str(error)) from None
    try:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality)
        return out.getvalue(), image.width, image.height
    except Exception as error:  # PIL raises many types for bad bytes; all mean "cannot show"
        raise ImageUnavailable(f"{type(error).__name__}: {error}") from error


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write to ``PATH.tmp-<pid>`` then rename, so a reader never sees half a page."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
