"""The fast-binding episodes of ``make e2e-icl`` (bench/e2e_icl.py): what the training documents say."""
import random

from bench import e2e_icl


def tiny_bank():
    """Four stand-in renders of every kind of the synthetic world, as bytes that name their kind."""
    from grit_pipeline.synth.vocab import COLOURS, SHAPES

    return {(shape, colour): [f"{colour}-{shape}-{n}".encode() for n in range(4)]
            for shape in SHAPES for colour in COLOURS}


def test_episode_binds_names_to_kinds_and_the_query_is_another_render():
    bank = tiny_bank()
    ep = e2e_icl.episode(random.Random(3), bank, ways=2, shots=2)
    kind_of = dict(zip(ep["names"], ep["kinds"]))
    assert len(ep["context"]) == 4 and sorted(n for n, _ in ep["context"]) == sorted(ep["names"] * 2)
    for name, image in ep["context"]:
        assert image in bank[kind_of[name]]
    answer_kind = ep["kinds"][ep["answer"]]
    assert ep["query"] in bank[answer_kind] and ep["query"] not in [image for _, image in ep["context"]]
    assert ep["kinds"][0][0] != ep["kinds"][1][0] and ep["kinds"][0][1] != ep["kinds"][1][1]


def test_episode_document_with_images_and_in_words():
    ep = e2e_icl.episode(random.Random(5), tiny_bank(), ways=2, shots=2)
    document, images = e2e_icl.episode_document(ep)
    answer = ep["names"][ep["answer"]]
    assert images == [image for _, image in ep["context"]] + [ep["query"]]
    assert document["texts"][1::2] == [f"This is a {name}" for name, _ in ep["context"]] + [
        f"Question: What is this? Answer: {answer}"]
    assert document["texts"][0::2] == [None] * 5 and document["images"][0::2] == [f"img{i}.jpg" for i in range(5)]

    words, none = e2e_icl.episode_document(ep, in_words=True)
    kind_of = dict(zip(ep["names"], ep["kinds"]))
    assert none == [] and words["images"] == [None] * 10
    expected = [e2e_icl.describe(kind_of[name]) for name, _ in ep["context"]] + [e2e_icl.describe(kind_of[answer])]
    assert words["texts"][0::2] == expected and words["texts"][1::2] == document["texts"][1::2]
    assert e2e_icl.describe(("circle", "red")) == "A red circle."
