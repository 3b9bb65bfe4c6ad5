"""The ranking scorer: the shared prefix gives the same log-likelihoods as each candidate alone; lm-evaluation-
harness's acc and acc_norm by hand; ROC AUC and SQuAD EM/F1 by hand."""
from __future__ import annotations

import pytest
import torch

from kosmos.evaluate.metrics import classification, squad
from kosmos.evaluate.rank import Option, RankItem, rank

WORDS = ("the photo of the red blue square circle question what is sentiment opinion answer positive negative yes "
         "no here are three images following image correct it an of a dax blicket this")


def tiny_model(seed: int = 0):
    """A random tiny Kosmos-2 (tiny preset, linear connector) and its processor, built offline in seconds."""
    from kosmos.presets import build_model, get_preset
    from kosmos.tokenizer import build_processor, train_tokenizer

    tokenizer = train_tokenizer([WORDS, WORDS.title(), "? : . , !"] * 5, vocab_size=200)
    preset = get_preset("tiny")
    processor = build_processor(tokenizer, preset.image_size)
    model = build_model(preset, len(tokenizer), seed=seed, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id).eval()
    return model, processor


def write_images(folder, colours=((220, 30, 30), (30, 60, 220), (30, 180, 30))) -> list[str]:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, colour in enumerate(colours):
        image = Image.new("RGB", (48, 40), (245, 245, 245))
        ImageDraw.Draw(image).rectangle((8 + n, 6, 30, 30 - n), fill=colour)
        path = folder / f"img{n}.png"
        image.save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("rank_images"))


def reference_loglikelihood(model, processor, option: Option) -> float:
    """Independent path: the whole sequence through the model's own image insertion (input ids + image
    embeddings, ``kosmos.modeling.sequence_logits``), summed log-probabilities of the continuation."""
    from kosmos.evaluate.generate import ImageCache
    from kosmos.evaluate.rank import encode_option
    from kosmos.modeling import sequence_logits
    from kosmos.sequence import SequenceEncoder

    encoder = SequenceEncoder(processor, model.config.latent_query_num, model.config.vision_config.image_size)
    pixels = ImageCache(encoder)
    encoded = encode_option(encoder, option, pixels)
    ids = torch.tensor([encoded.ids])
    mask = torch.tensor([[int(k is not None) for k in encoded.keys]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "image_embeds_position_mask": mask,
             "pixel_values": torch.stack([pixels(f)[0] for f in encoded.images]) if encoded.images else None}
    with torch.no_grad():
        logits = sequence_logits(model, batch)[0].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    return sum(float(log_probs[p - 1, encoded.ids[p]]) for p in range(encoded.first_scored, len(encoded.ids)))


def test_shared_prefix_gives_the_loglikelihoods_of_each_candidate_alone(tiny, images):
    model, processor = tiny
    demos = (("image", images[0]), ("text", "An image of a red square"), ("image", images[1]),
             ("text", "An image of a blue circle"))
    items = [
        # one context, four candidates (multiple choice after an interleaved prompt)
        RankItem("mc", [Option(demos + (("image", images[2]), ("text", "An image of")), c)
                        for c in (" a red square", " a blue circle", " the dax", " positive")]),
        # several contexts, one continuation (P("Yes") over candidate images; partial scoring)
        RankItem("yes", [Option((("text", "Here are three images:"), ("image", images[0]), ("image", images[1]),
                                 ("text", "The following image is:"), ("image", path), ("text", "Is it correct?")),
                                " Yes") for path in images]),
        RankItem("text", [Option((("text", "the photo of the"),), " red"), Option((("text", "the photo of a"),), " red")]),
    ]
    shared = {r["id"]: r for r in rank(model, processor, items)}
    whole = {r["id"]: r for r in rank(model, processor, items, shared_prefix=False)}
    for item in items:
        alone = [next(rank(model, processor, [RankItem("one", [option])]))["loglikelihoods"][0] for option in item.options]
        reference = [reference_loglikelihood(model, processor, option) for option in item.options]
        assert shared[item.id]["loglikelihoods"] == pytest.approx(alone, abs=1e-4)
        assert whole[item.id]["loglikelihoods"] == pytest.approx(alone, abs=1e-4)
        assert alone == pytest.approx(reference, abs=1e-4)
        assert shared[item.id]["tokens"] == whole[item.id]["tokens"]
    # the candidates really differ, so equality is not trivial
    assert len({round(v, 3) for v in shared["mc"]["loglikelihoods"]}) == 4
    assert len({round(v, 3) for v in shared["yes"]["loglikelihoods"]}) == 3


def test_the_shared_prefix_stops_at_the_first_difference(tiny, images):
    from kosmos.evaluate.generate import ImageCache
    from kosmos.evaluate.rank import encode_option, shared_prefix_length
    from kosmos.sequence import SequenceEncoder

    model, processor = tiny
    encoder = SequenceEncoder(processor, model.config.latent_query_num, model.config.vision_config.image_size)
    pixels = ImageCache(encoder)
    context = (("text", "the photo of the"), ("image", images[0]))
    mc = [encode_option(encoder, Option(context, c), pixels) for c in (" red", " blue")]
    assert shared_prefix_length(mc) == mc[0].first_scored  # the whole context, image included
    # two different images at the same place: the prefix ends at the first slot of the image (the <image> tag stays)
    yes = [encode_option(encoder, Option((("text", "the photo"), ("image", path)), " yes"), pixels) for path in images[:2]]
    start = yes[0].keys.index(next(k for k in yes[0].keys if k is not None))
    assert shared_prefix_length(yes) == start


def test_acc_and_acc_norm_by_hand():
    # summed log-likelihoods -4 and -6; choices of 2 and 6 characters: per character -2.0 and -1.0
    result = classification.multiple_choice([-4.0, -6.0], [2, 6], gold=1)
    assert result == {"acc": 0.0, "acc_norm": 1.0}
    assert classification.multiple_choice([-4.0, -6.0], [2, 6], gold=0) == {"acc": 1.0, "acc_norm": 0.0}
    assert classification.multiple_choice([-3.0, -3.0], [3, 3], gold=0) == {"acc": 1.0, "acc_norm": 1.0}  # ties: first


def test_roc_auc_by_hand():
    # positives 0.9, 0.4; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) -> 3/4
    assert classification.roc_auc([0.9, 0.5, 0.4, 0.1], [1, 0, 1, 0]) == pytest.approx(0.75)
    assert classification.roc_auc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)  # a tie counts half
    with pytest.raises(ValueError):
        classification.roc_auc([0.1, 0.2], [1, 1])


def test_squad_em_and_f1_by_hand():
    assert squad.squad_em_f1("The Penguin Books", ["Penguin Books"]) == (1.0, 1.0)
    em, f1 = squad.squad_em_f1("penguin books ltd", ["Penguin Books"])
    assert em == 0.0 and f1 == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
