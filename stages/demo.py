"""`make demo`: the main job on the embedded default.

Runs the text core on the bundled captions and prints what GRIT's rules find.
"""
from __future__ import annotations

import json
from importlib import resources

from grit_pipeline.text import caption_spans


def main() -> int:
    captions = resources.files("grit_pipeline").joinpath("data/demo_captions.txt").read_text().splitlines()
    for caption, spans in zip(captions, caption_spans(captions)):
        print(json.dumps({"caption": caption,
                          "noun_chunks": [caption[s:e] for s, e in spans.noun_chunks],
                          "ref_exps": [caption[s:e] for s, e in spans.ref_exps]}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
