"""Image connectors (linear / Kosmos-2's resampler), held-out REC during training, time budget, and
fine-tuning from a checkpoint in the release's format (XLM-R sentencepiece processor, 65,037 tokens)."""
import json
from pathlib import Path

import pytest
import torch

from kosmos.cli import main
from transformers.models.kosmos2.modeling_kosmos2 import Kosmos2ImageToTextProjection

from kosmos.modeling import (Kosmos2LinearConnectorForConditionalGeneration, LinearConnector, MergedConnector,
                             load_pretrained)
from kosmos.presets import build_model, get_preset
from kosmos.tokenizer import build_processor, train_tokenizer
from kosmos.toydata import write_toy_refcoco, write_toy_shards
from kosmos.train import TrainConfig, read_log, train

torch.set_num_threads(1)
# ../shared/data/kosmos2-release beside the checkout (looked up through the parents, for nested worktrees)
RELEASE_TOKENIZER = next((p / "shared" / "data" / "kosmos2-release" for p in Path(__file__).resolve().parents[1:]
                          if (p / "shared" / "data" / "kosmos2-release").is_dir()),
                         Path(__file__).resolve().parents[2] / "shared" / "data" / "kosmos2-release")
CAPTIONS = ["a red square on a white background", "a blue circle next to a green square"] * 10


@pytest.fixture(scope="module")
def processor():
    return build_processor(train_tokenizer(CAPTIONS, vocab_size=80), image_size=64)


@pytest.mark.parametrize("connector", ["linear", "merged", "resampler"])
def test_every_connector_saves_and_loads(processor, tmp_path, connector):
    from PIL import Image

    model = build_model(get_preset("tiny"), len(processor.tokenizer), seed=0, connector=connector).eval()
    slots = model.config.latent_query_num
    # linear: one image slot per ViT token (8x8 patches of a 64 px image + the class token); merged: one per 2x2
    assert slots == {"linear": 65, "merged": 17, "resampler": get_preset("tiny").latent_query_num}[connector]
    kinds = {"linear": LinearConnector, "merged": MergedConnector}
    assert type(model.image_to_text_projection) is kinds.get(connector, Kosmos2ImageToTextProjection)
    assert model.get_image_features(torch.zeros(2, 3, 64, 64)).pooler_output.shape == (2, slots, 128)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()).get("connector", "resampler") == connector
    loaded = load_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    enc = processor(images=Image.new("RGB", (64, 64), (200, 20, 20)), text="<grounding><phrase> a square</phrase>",
                    num_image_tokens=slots, return_tensors="pt")
    with torch.no_grad():
        # the same up to float rounding (the merged slots' matmul may take another kernel on reloaded tensors)
        torch.testing.assert_close(model(**enc).logits, loaded(**enc).logits)


def test_linear_connector_keeps_position(processor):
    """Each image slot is one patch: changing one corner of the image changes only that patch's slot (and the
    class token's), where the resampler's slots all mix the whole image."""
    model = build_model(get_preset("tiny"), len(processor.tokenizer), seed=0, connector="linear").eval()
    assert isinstance(model, Kosmos2LinearConnectorForConditionalGeneration)
    a = torch.zeros(1, 3, 64, 64)
    b = a.clone()
    b[..., :8, :8] = 3.0  # top-left patch only
    with torch.no_grad():
        ea = model.get_image_features(a).pooler_output
        eb = model.get_image_features(b).pooler_output
    moved = (ea - eb).norm(dim=-1)[0, 1:]  # the patch slots (slot 0 is the class token)
    # the changed patch's slot moves most (the ViT's attention mixes a little into the others)
    assert int(moved.argmax()) == 0 and moved[0] > 2 * moved[1:].mean()


def test_merged_connector_joins_each_2x2_block_of_patches_into_one_slot():
    """Slot 1 + 4 * row + col (4 x 4 slots over 8 x 8 patches) reads patches (2 row .. 2 row + 1, 2 col .. 2 col
    + 1) and no other; slot 0 reads the class token alone."""
    config = build_model(get_preset("tiny"), 80, seed=0, connector="merged").config
    connector = MergedConnector(config)
    width = config.vision_config.hidden_size
    with torch.no_grad():
        connector.dense.weight.zero_()
        connector.dense.bias.zero_()
        connector.class_dense.weight.zero_()
        connector.class_dense.bias.zero_()
        for part in range(4):  # output j of the merged slot = feature 0 of the block's part j
            connector.dense.weight[part, part * width] = 1.0
        connector.class_dense.weight[4, 0] = 1.0
    features = torch.zeros(1, 65, width)
    features[0, 1:, 0] = torch.arange(64, dtype=torch.float32)  # patch p (row-major on the 8 x 8 grid) holds p
    features[0, 0, 0] = -1.0
    slots, _ = connector(features)
    assert slots.shape == (1, 17, config.text_config.embed_dim)
    for row in range(4):
        for col in range(4):
            top_left = 16 * row + 2 * col
            expected = [top_left, top_left + 1, top_left + 8, top_left + 9]
            assert slots[0, 1 + 4 * row + col, :4].tolist() == expected
    assert slots[0, 0, 4] == -1.0 and slots[0, 1:, 4].abs().sum() == 0


def test_tiny_connector_is_merged_with_or_without_other_sources():
    """The preset's connector whatever the mixture holds (tiny: merged); --connector decides when given."""
    def connector(**given):
        return TrainConfig(output="o", **given).resolved().model_preset().connector

    assert connector(data=["g"]) == "merged"
    assert connector(mix=["grounded=g:16"]) == "merged"
    assert connector(data=["g"], mix=["text=t.jsonl"]) == "merged"
    assert connector(data=["g"], mix=["captions=c", "interleaved=d.jsonl:2"]) == "merged"
    assert connector(data=["g"], mix=["text=t.jsonl"], connector="linear") == "linear"
    assert connector(data=["g"], connector="resampler") == "resampler"
    assert TrainConfig(output="o", data=["g"], preset="small").model_preset().connector == "linear"
    assert TrainConfig(output="o", data=["g"], mix=["text=t"], preset="paper").model_preset().connector == "resampler"


def test_merged_connector_refuses_an_odd_patch_grid():
    cfg = TrainConfig(data=["x"], output="o", connector="merged", image_size=40, patch_size=8)
    assert any("odd grid (5 x 5)" in p for p in cfg.number_problems())
    assert not TrainConfig(data=["x"], output="o", connector="merged", image_size=48, patch_size=8).number_problems()


def heldout_refcoco(root: Path, n: int = 3) -> Path:
    """MDETR RefCOCO json for ``n`` toy images (one expression each) with images/ beside it."""
    return write_toy_refcoco(root, "finetune_refcoco_val.json", n)


def test_eval_every_keeps_the_best_model_and_logs_location_accuracy(tmp_path):
    write_toy_shards(tmp_path / "shards", num_shards=1, per_shard=8)
    heldout_refcoco(tmp_path / "val")
    summary = train(TrainConfig(data=[str(tmp_path / "shards")], output=str(tmp_path / "run"), steps=4, batch_size=4,
                                log_every=1, checkpoint_every=4, loader_workers=0, eval_every=2,
                                eval_data=str(tmp_path / "val"), data_options={"shuffle_buffer": 0}),
                    log=lambda m: None)
    evals = read_log(tmp_path / "run", "eval_log.jsonl")
    assert [e["step"] for e in evals] == [2, 4] and all(e["eval_total"] == 3 for e in evals)
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert best["eval_rec"] == max(e["eval_rec"] for e in evals) and summary["best"] == best
    assert isinstance(load_pretrained(tmp_path / "run" / "best"), Kosmos2LinearConnectorForConditionalGeneration)
    for entry in read_log(tmp_path / "run"):
        assert 0.0 <= entry["loc_acc"] <= 1.0 and entry["text_loss"] > 0 and entry["loc_loss"] > 0


def test_max_minutes_stops_early_with_a_checkpoint(tmp_path):
    write_toy_shards(tmp_path / "shards", num_shards=1, per_shard=8)
    summary = train(TrainConfig(data=[str(tmp_path / "shards")], output=str(tmp_path / "run"), steps=1000,
                                batch_size=2, log_every=100, checkpoint_every=1000, loader_workers=0,
                                max_minutes=1e-9, data_options={"shuffle_buffer": 0}), log=lambda m: None)
    assert summary["step"] == 1 and not summary["finished"]
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_0000001"
    assert [e["step"] for e in read_log(tmp_path / "run")] == [1]


def test_init_gets_fine_tuning_defaults():
    scratch = TrainConfig(data=["x"], output="o").resolved()
    tuned = TrainConfig(data=["x"], output="o", init="some/dir").resolved()
    assert (scratch.lr, scratch.location_loss_weight, scratch.location_sigma) == (get_preset("tiny").lr, 10.0, 1.5)
    assert (tuned.lr, tuned.warmup_steps, tuned.location_loss_weight, tuned.location_sigma) == (1e-5, 100, 1.0, 0.0)
    assert TrainConfig(data=["x"], output="o", init="d", lr=3e-4).resolved().lr == 3e-4


@pytest.fixture(scope="module")
def release_format_model(tmp_path_factory):
    """A tiny random Kosmos-2 saved as the release is: Kosmos2ForConditionalGeneration (resampler, 64 latent
    queries, 224 px, patch 14) with the released XLM-R processor of 65,037 tokens."""
    if not (RELEASE_TOKENIZER / "sentencepiece.bpe.model").exists():
        pytest.skip(f"the released tokenizer model is not at {RELEASE_TOKENIZER}")
    pytest.importorskip("sentencepiece")
    from transformers import (CLIPImageProcessor, Kosmos2Config, Kosmos2ForConditionalGeneration, Kosmos2Processor,
                              XLMRobertaTokenizer)

    tokenizer = XLMRobertaTokenizer.from_pretrained(str(RELEASE_TOKENIZER))
    processor = Kosmos2Processor(CLIPImageProcessor(size={"shortest_edge": 224},
                                                    crop_size={"height": 224, "width": 224}), tokenizer)
    assert len(processor.tokenizer) == 65037
    config = Kosmos2Config(
        text_config=dict(vocab_size=65037, embed_dim=32, layers=1, attention_heads=2, ffn_dim=64,
                         max_position_embeddings=512),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=224, patch_size=14),
        latent_query_num=64)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("release")
    Kosmos2ForConditionalGeneration(config).save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    return root / "model"


@pytest.mark.slow
def test_init_from_release_format_trains_predicts_and_scores(release_format_model, tmp_path, capsys):
    write_toy_shards(tmp_path / "shards", num_shards=1, per_shard=8)
    refcoco = heldout_refcoco(tmp_path / "heldout")
    assert main(["train", "--data", str(tmp_path / "shards"), "--output", str(tmp_path / "run"), "--init",
                 str(release_format_model), "--steps", "2", "--batch-size", "2", "--log-every", "1",
                 "--loader-workers", "0", "--threads", "1", "--shuffle-buffer", "0"]) == 0
    capsys.readouterr()
    log = read_log(tmp_path / "run")
    assert [e["step"] for e in log] == [1, 2] and max(e["lr"] for e in log) == pytest.approx(1e-5)  # fine-tuning lr
    saved = load_pretrained(tmp_path / "run" / "checkpoints" / "step_0000002" / "model")
    assert saved.config.text_config.vocab_size == 65037 and saved.config.latent_query_num == 64
    assert main(["predict", "rec", "--model", str(tmp_path / "run"), "--images", str(refcoco.parent / "images"),
                 "--annotations", str(refcoco), "--output", str(tmp_path / "rec.jsonl"), "--threads", "1"]) == 0
    rows = [json.loads(l) for l in (tmp_path / "rec.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == [10, 11, 12]
    capsys.readouterr()
    assert main(["score", "rec", "--predictions", str(tmp_path / "rec.jsonl"), "--annotations", str(refcoco)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["total"] == 3 and 0.0 <= result["accuracy_pct"] <= 100.0


def test_sincos2d_codes_have_unit_rms_and_encode_distance():
    from kosmos.modeling import sincos2d

    xs = torch.tensor([0.1, 0.15, 0.9, 0.1])
    ys = torch.tensor([0.1, 0.1, 0.9, 0.8])
    codes = sincos2d(xs, ys, dim=64, max_cycles=4.0)
    assert codes.shape == (4, 64)
    assert torch.allclose(codes.pow(2).mean(1), torch.ones(4), atol=1e-5)
    near = torch.dot(codes[0], codes[1])
    assert near > torch.dot(codes[0], codes[2]) and near > torch.dot(codes[0], codes[3])
    odd = sincos2d(xs, ys, dim=66, max_cycles=4.0)  # a width not divisible by 4 is padded, RMS kept
    assert odd.shape == (4, 66) and torch.allclose(odd.pow(2).mean(1), torch.ones(4), atol=1e-5)


def test_location_embedding_init_codes_cells_in_the_tied_head(processor, tmp_path):
    """sincos2d: each ``<patch_index_i>`` row is the code of cell i's centre (row by row) at the token init's
    scale, in the embeddings and the LM head they share; the other rows and ``random`` keep transformers'."""
    from kosmos.modeling import init_location_embeddings, sincos2d
    from kosmos.train.losses import location_token_ids

    ids = location_token_ids(processor.tokenizer)
    model = build_model(get_preset("tiny"), len(processor.tokenizer), seed=0)
    before = model.get_input_embeddings().weight.detach().clone()
    init_location_embeddings(model, ids)
    weight = model.get_input_embeddings().weight.detach()
    assert torch.equal(model.get_output_embeddings().weight, model.get_input_embeddings().weight)
    # cell 33 is row 1, column 1 of the 32x32 grid: centre (1.5/32, 1.5/32)
    expected = sincos2d(torch.tensor([1.5 / 32]), torch.tensor([1.5 / 32]), weight.size(1), 16.0)[0] * 0.02
    assert torch.allclose(weight[ids[33]], expected, atol=1e-7)
    others = torch.ones(len(weight), dtype=torch.bool)
    others[ids] = False
    assert torch.equal(weight[others], before[others])
    # neighbouring cells score alike: the head's rows of cells 33 and 34 are closer than 33 and 990
    assert torch.dot(weight[ids[33]], weight[ids[34]]) > torch.dot(weight[ids[33]], weight[ids[990]])
    plain = build_model(get_preset("tiny"), len(processor.tokenizer), seed=0)
    init_location_embeddings(plain, ids, how="random")
    assert torch.equal(plain.get_input_embeddings().weight, before)
    with pytest.raises(ValueError, match="unknown location embedding init"):
        init_location_embeddings(model, ids, how="learned")
    with pytest.raises(ValueError, match="expected 1024 location tokens"):
        init_location_embeddings(model, ids[:10])


def test_tiny_location_embeddings_start_as_the_cell_code_by_default(processor):
    """The preset decides how a from-scratch model's location tokens start (tiny: sincos2d, the others: random);
    --location-embedding-init wins; the run's model is built with it."""
    from kosmos.modeling import sincos2d
    from kosmos.train.losses import location_token_ids
    from kosmos.train.setup import build_or_load_model

    def resolved(**given):
        return TrainConfig(output="o", data=["g"], **given).resolved()

    assert resolved().location_embedding_init == "sincos2d"
    assert resolved(mix=["text=t.jsonl"]).location_embedding_init == "sincos2d"
    assert resolved(preset="small").location_embedding_init == "random"
    assert resolved(preset="paper").location_embedding_init == "random"
    assert resolved(location_embedding_init="random").location_embedding_init == "random"
    ids = location_token_ids(processor.tokenizer)
    width = get_preset("tiny").text_hidden
    cell_33 = sincos2d(torch.tensor([1.5 / 32]), torch.tensor([1.5 / 32]), width, 16.0)[0] * 0.02
    coded = build_or_load_model(resolved(), processor, None).get_input_embeddings().weight.detach()
    assert torch.allclose(coded[ids[33]], cell_33, atol=1e-7)
    plain = build_or_load_model(resolved(location_embedding_init="random"), processor, None)
    assert not torch.allclose(plain.get_input_embeddings().weight.detach()[ids[33]], cell_33, atol=1e-3)


def test_vision_position_init_sets_a_2d_code_that_saves_and_loads(processor, tmp_path):
    """sincos2d: each patch's position embedding is the code of its centre (row-major, class token 0) at the
    patch content's scale; random keeps transformers' init (std 0.02); the choice survives save/load."""
    from kosmos.modeling import SINCOS_RMS, init_vision_positions, sincos2d

    coded = build_model(get_preset("tiny"), len(processor.tokenizer), seed=0)
    plain = build_model(get_preset("tiny"), len(processor.tokenizer), seed=0, vision_position_init="random")
    weight = coded.vision_model.model.embeddings.position_embedding.weight.detach()
    assert torch.count_nonzero(weight[0]) == 0
    # patch 9 is row 1, column 1 of the 8x8 grid: centre (1.5/8, 1.5/8)
    expected = sincos2d(torch.tensor([1.5 / 8]), torch.tensor([1.5 / 8]), weight.size(1), 4.0)[0] * SINCOS_RMS
    assert torch.allclose(weight[1 + 9], expected, atol=1e-6)
    plain_weight = plain.vision_model.model.embeddings.position_embedding.weight.detach()
    assert 0.01 < float(plain_weight.std()) < 0.03
    # everything but the position embeddings is the same seeded init
    differing = [k for k, v in coded.state_dict().items() if not torch.equal(v, plain.state_dict()[k])]
    assert differing == ["vision_model.model.embeddings.position_embedding.weight"]
    coded.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path)
    assert torch.equal(loaded.vision_model.model.embeddings.position_embedding.weight, weight)
    with pytest.raises(ValueError, match="unknown vision position init"):
        init_vision_positions(coded, "learned")
