"""The text core: noun chunks, abstract filter, expansion (Kosmos-2 paper, section 2, steps 1 and 2)."""
import pytest
from spacy.tokens import Doc

from grit_pipeline.text import DEFAULT_ABSTRACT_NOUNS, caption_spans, doc_spans, load_nlp


def texts(caption, spans):
    return [caption[s:e] for s, e in spans]


def test_paper_example_dog_in_a_field(nlp):
    caption = "a dog in a field of flowers"
    [spans] = caption_spans([caption], nlp=nlp)
    assert texts(caption, spans.noun_chunks) == ["a dog", "a field", "flowers"]
    # ref_exps one-to-one with noun_chunks, as GrIT-20M stores them (containment is applied later)
    assert texts(caption, spans.ref_exps) == ["a dog in a field of flowers", "a field of flowers", "flowers"]


def test_conjunction_is_not_expanded_across(nlp):
    caption = "a cat and a dog sitting on a bench"
    [spans] = caption_spans([caption], nlp=nlp)
    chunks = texts(caption, spans.noun_chunks)
    exps = dict(zip(chunks, texts(caption, spans.ref_exps)))
    assert exps["a cat"] == "a cat"  # root 'cat' has cc/conj children: stays as it is
    assert "a dog" not in exps["a cat"]


def test_abstract_nouns_dropped_and_configurable(nlp):
    caption = "a moment of peace by the lake"
    [default] = caption_spans([caption], nlp=nlp)
    assert "peace" not in texts(caption, default.noun_chunks)
    assert "the lake" in texts(caption, default.noun_chunks)
    [keep_all] = caption_spans([caption], nlp=nlp, abstract_nouns=[])
    assert "peace" in texts(caption, keep_all.noun_chunks)
    [custom] = caption_spans([caption], nlp=nlp, abstract_nouns=["LAKE"])
    assert "the lake" not in texts(caption, custom.noun_chunks)
    assert "peace" in texts(caption, custom.noun_chunks)


def test_default_abstract_list_is_the_authors():
    assert DEFAULT_ABSTRACT_NOUNS == {
        "time", "life", "love", "freedom", "happiness", "wisdom", "peace", "justice", "hope",
        "courage", "faith", "understanding", "advantage", "pursuit"}


def test_expansion_trims_punctuation(nlp):
    caption = "A dog by the lake."
    [spans] = caption_spans([caption], nlp=nlp)
    assert texts(caption, spans.ref_exps)[0] == "A dog by the lake"


def _doc(nlp, words, heads, deps, pos, spaces=None, tags=None):
    # A hand-built parse: rules tested independently of the statistical model's choices.
    doc = Doc(nlp.vocab, words=words, spaces=spaces, heads=heads, deps=deps, pos=pos, tags=tags,
              lemmas=[w.lower() for w in words])
    return doc


def expansions(doc):
    spans = doc_spans(doc)
    return dict(zip(texts(doc.text, spans.noun_chunks), texts(doc.text, spans.ref_exps)))


def test_a_chunk_whose_root_is_a_conjunct_is_not_expanded(nlp):
    # "a cat and a dog sitting on a sofa": 'dog' is the conjunct of 'cat'; GrIT-20M keeps "a dog" alone
    words = ["a", "cat", "and", "a", "dog", "sitting", "on", "a", "sofa"]
    heads = [1, 1, 1, 4, 1, 4, 5, 8, 6]
    deps = ["det", "ROOT", "cc", "det", "conj", "acl", "prep", "det", "pobj"]
    pos = ["DET", "NOUN", "CCONJ", "DET", "NOUN", "VERB", "ADP", "DET", "NOUN"]
    got = expansions(_doc(nlp, words, heads, deps, pos))
    assert got == {"a cat": "a cat", "a dog": "a dog", "a sofa": "a sofa"}
    # the same words without the conjunction: "a dog sitting on a sofa" expands
    got = expansions(_doc(nlp, words[3:], [1, 1, 1, 2, 5, 3], ["det", "ROOT", "acl", "prep", "det", "pobj"], pos[3:]))
    assert got["a dog"] == "a dog sitting on a sofa"


DANGLING_CASES = [
    # (words, heads, deps, pos, tags, chunk, expansion)
    # "a bowl filled with" (the preposition's object is missing): the expansion stops before "with"
    (["a", "bowl", "filled", "with"], [1, 1, 1, 2], ["det", "ROOT", "acl", "prep"],
     ["DET", "NOUN", "VERB", "ADP"], None, "a bowl", "a bowl filled"),
    # "a vase on a table next to": a multiword preposition, both words go
    (["a", "vase", "on", "a", "table", "next", "to"], [1, 1, 1, 4, 2, 1, 5],
     ["det", "ROOT", "prep", "det", "pobj", "prep", "prep"], ["DET", "NOUN", "ADP", "DET", "NOUN", "ADV", "ADP"],
     None, "a vase", "a vase on a table"),
    # a stranded preposition whose object is the relative pronoun is complete
    (["a", "house", "that", "we", "live", "in"], [1, 1, 4, 4, 1, 4], ["det", "ROOT", "dobj", "nsubj", "relcl", "prep"],
     ["DET", "NOUN", "PRON", "PRON", "VERB", "ADP"], ["DT", "NN", "WDT", "PRP", "VBP", "IN"],
     "a house", "a house that we live in"),
    # ... but not when the relative pronoun is the clause's subject
    (["a", "dog", "that", "is", "waiting", "for"], [1, 1, 4, 4, 1, 4], ["det", "ROOT", "nsubj", "aux", "relcl", "prep"],
     ["DET", "NOUN", "PRON", "AUX", "VERB", "ADP"], ["DT", "NN", "WDT", "VBZ", "VBG", "IN"],
     "a dog", "a dog that is waiting"),
]


@pytest.mark.parametrize("words, heads, deps, pos, tags, chunk, expected", DANGLING_CASES)
def test_an_expression_never_ends_on_a_dangling_word(nlp, words, heads, deps, pos, tags, chunk, expected):
    assert expansions(_doc(nlp, words, heads, deps, pos, tags=tags))[chunk] == expected


@pytest.mark.parametrize("caption, chunk, expected", [
    ("a plate of food with a fork and a glass of", "a plate", "a plate of food with a fork and a glass"),
    ("the view from the top of", "the view", "the view from the top"),
    ("people standing around a table which", "people", "people standing around a table"),
    ("a man and a woman walking on the beach at sunset", "a woman", "a woman"),
    ("a bowl filled with fruit and vegetables on a table", "a bowl", "a bowl filled with fruit and vegetables on a table"),
    # a list that spaCy reads as apposition + conjunction is treated like a conjunction
    ("a big black square, the black ring, a blue triangle and some blue rings against a striped cloth",
     "a big black square", "a big black square"),
    # a single appositive is no list: the expansion keeps it, as the paper's subtree rule does
    ("two women walking on the beach at sunset, a moment of peace", "two women",
     "two women walking on the beach at sunset, a moment of peace"),
    # a particle completing a "with" phrase is kept; it is no dangling preposition
    ("a room with the lights on", "a room", "a room with the lights on"),
    ("a man picking up", "a man", "a man picking up"),
])
def test_both_rules_on_parsed_captions(nlp, caption, chunk, expected):
    [spans] = caption_spans([caption], nlp=nlp)
    assert dict(zip(texts(caption, spans.noun_chunks), texts(caption, spans.ref_exps)))[chunk] == expected


def test_any_installed_pipeline_path_or_a_clear_error(tmp_path):
    import spacy

    model = load_nlp()
    model.to_disk(tmp_path / "copy")
    copy = load_nlp(str(tmp_path / "copy"))  # a saved pipeline by path works like the package
    caption = "a dog in a field of flowers"
    assert caption_spans([caption], nlp=copy)[0] == caption_spans([caption], nlp=model)[0]
    spacy.blank("en").to_disk(tmp_path / "blank")
    with pytest.raises(RuntimeError, match="cannot give noun chunks"):
        load_nlp(str(tmp_path / "blank"))
    with pytest.raises(RuntimeError, match="no-such-pipeline: .*E050"):
        load_nlp("no-such-pipeline")


def test_expansion_trims_dangling_conjunction_and_punct(nlp):
    # "a dog with a hat and ," : 'and' hangs off 'hat' with no conjunct; ',' trails the subtree
    words = ["a", "dog", "with", "a", "hat", "and", ",", "runs"]
    heads = [1, 7, 1, 4, 2, 4, 1, 7]
    deps = ["det", "nsubj", "prep", "det", "pobj", "cc", "punct", "ROOT"]
    pos = ["DET", "NOUN", "ADP", "DET", "NOUN", "CCONJ", "PUNCT", "VERB"]
    doc = _doc(nlp, words, heads, deps, pos)
    spans = doc_spans(doc)
    got = dict(zip(texts(doc.text, spans.noun_chunks), texts(doc.text, spans.ref_exps)))
    assert got["a dog"] == "a dog with a hat"
    assert got["a hat"] == "a hat"  # 'hat' has a cc child: not expanded


def test_chunk_without_children_stays(nlp):
    caption = "flowers"
    [spans] = caption_spans([caption], nlp=nlp)
    assert spans.noun_chunks == spans.ref_exps == [(0, 7)]


def test_official_wire_hanger_caption_offsets_are_chars(nlp):
    caption = "a wire hanger with a paper cover that reads we heart our customers"
    [spans] = caption_spans([caption], nlp=nlp)
    # 'a paper cover' is [19, 32) in the released record; its expansion runs to the caption end as there
    assert (19, 32) in spans.noun_chunks
    i = spans.noun_chunks.index((19, 32))
    assert spans.ref_exps[i] == (19, 66) == (19, len(caption))


ODD_CAPTIONS = [
    "", "   ", "\n\t", "🐶🐶 a dog 🐕 on a 🛹 skateboard", "一只狗在草地上", "кошка на диване", "كلب في الحديقة",
    "a red ball " * 455, "<b>a dog</b> <script>alert('x')</script> on a mat", "a cat\x00\x07 on\x1b[31m a mat\r\n",
    "...", "!!!???", "A", "12345", "a dog\u2028on a mat", "ﬁne print on a sign",
]


def test_odd_captions_never_crash(nlp):
    results = caption_spans(ODD_CAPTIONS + [None, 42, b"bytes"], nlp=nlp)
    assert len(results) == len(ODD_CAPTIONS) + 3
    for caption, spans in zip(ODD_CAPTIONS, results):
        if not caption.strip():
            assert spans.error == "caption is empty or whitespace only"
            continue
        assert spans.error is None
        assert len(spans.noun_chunks) == len(spans.ref_exps)
        for (cs, ce), (rs, re_) in zip(spans.noun_chunks, spans.ref_exps):
            assert 0 <= rs <= cs < ce <= re_ <= len(caption)
            assert caption[rs:re_] == caption[rs:re_].strip()
    assert [r.error for r in results[-3:]] == ["caption is missing", "caption is not text (int)",
                                               "caption is not text (bytes)"]
    long_caption = ODD_CAPTIONS[7]
    assert len(long_caption) > 5000 and len(results[7].noun_chunks) >= 400


def test_batches_equal_single_calls(nlp):
    captions = ["a dog in a field of flowers", "", "two cats on a red sofa near a window", "the sky"]
    batched = caption_spans(captions, nlp=nlp, batch_size=2)
    singles = [caption_spans([c], nlp=nlp)[0] for c in captions]
    assert batched == singles


def test_model_loaded_once_and_without_ner():
    assert load_nlp() is load_nlp()
    assert "ner" not in load_nlp().pipe_names
    assert {"parser", "lemmatizer"} <= set(load_nlp().pipe_names)


def test_unknown_model_gives_clear_error():
    with pytest.raises(RuntimeError, match="no usable spaCy pipeline: no_such_spacy_model_xyz"):
        load_nlp("no_such_spacy_model_xyz")
