"""kosmos training loop: schedule, loss on location tokens, atomic checkpoints, exact resume, Ray Train."""
import json
import os
from dataclasses import replace

import pytest
import torch

from kosmos import checkpoint as ckpt
from kosmos.toydata import write_toy_shards
from kosmos.train import (TrainConfig, location_token_mask, lr_factor, read_log, sequence_losses, train)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_shards")
    write_toy_shards(root, num_shards=2, per_shard=10, corrupt_keys=("000000004",))
    return str(root)


def small_config(shards, output, **overrides):
    values = dict(data=[shards], output=str(output), preset="tiny", steps=6, batch_size=4, log_every=1,
                  checkpoint_every=3, loader_workers=0, lr=2e-3, warmup_steps=2,
                  data_options={"shuffle_buffer": 8})
    values.update(overrides)
    return TrainConfig(**values)


def test_lr_schedule_warmup_then_linear_decay():
    factors = [lr_factor(s, warmup=4, total=12) for s in range(12)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and factors[8] == pytest.approx(0.5) and factors[11] == pytest.approx(0.125)
    assert lr_factor(12, 4, 12, min_ratio=0.1) == pytest.approx(0.1)


def test_lr_decay_fraction_holds_the_peak_until_the_last_part_of_the_run():
    from kosmos.train.losses import decay_factor

    factors = [lr_factor(s, warmup=2, total=12, decay_fraction=0.5) for s in range(13)]
    assert factors[:2] == [0.5, 1.0] and factors[2:8] == [1.0] * 6  # the first half after warm-up at the peak
    assert factors[8:] == pytest.approx([0.8, 0.6, 0.4, 0.2, 0.0])
    # the time budget's clock decays the same way
    assert [decay_factor(p, 0.1, 0.25) for p in (0.0, 0.75, 0.875, 1.0, 1.5)] == pytest.approx([1, 1, 0.55, 0.1, 0.1])
    from kosmos.presets import TINY_DECAY_FRACTION

    resolved = lambda **given: TrainConfig(output="x", data=["d"], **given).resolved().decay_fraction  # noqa: E731
    assert resolved() == TINY_DECAY_FRACTION < 1 and resolved(decay_fraction=0.5) == 0.5
    assert resolved(preset="small") == resolved(preset="paper") == 1.0  # the paper's decay over the whole run
    assert resolved(init="m") == 1.0  # fine-tuning decays over the whole run
    for bad in (0, 1.5, float("nan")):
        problems = TrainConfig(output="x", data=["d"], decay_fraction=bad).number_problems()
        assert any("--decay-fraction" in p for p in problems)


def test_sequence_losses_separate_location_tokens():
    lookup = torch.tensor([False, False, True, True])
    logits = torch.zeros(1, 4, 4)
    logits[0, 0, 2] = 10.0  # predicts token 2 (a location token) confidently at position 0
    labels = torch.tensor([[-100, 2, 1, 3]])
    out = sequence_losses(logits, labels, lookup)
    expected_loc = torch.nn.functional.cross_entropy(logits[0, [0, 2]], torch.tensor([2, 3]), reduction="sum")
    expected_all = torch.nn.functional.cross_entropy(logits[0, :3], torch.tensor([2, 1, 3]))
    assert int(out.loc_n) == 2 and int(out.n) == 3
    assert out.loc_sum.item() == pytest.approx(expected_loc.item())
    assert out.objective.item() == pytest.approx(expected_all.item())
    assert int(out.loc_correct) == 1  # position 0 argmax is 2 (right); position 2 is a tie -> id 0 (wrong)



def test_small_boxes_weigh_more_by_their_size_in_cells():
    """Corners pair up within a row, two by two; a box s cells across weighs clamp(pivot / s, 1, max) times."""
    from kosmos.train.losses import target_weights

    first = 50  # <patch_index_0000>
    lookup = torch.zeros(first + 1024, dtype=torch.bool)
    lookup[first:] = True
    cell = lambda x, y: first + 32 * y + x  # noqa: E731
    labels = torch.tensor([
        [-100, 5, cell(0, 0), cell(1, 1), 6, -100, -100],             # 2 x 2 cells: 8 / 2 = 4, capped at 3
        [-100, cell(3, 3), cell(12, 12), cell(0, 0), cell(3, 1), 7, -100],  # 10 x 10: 1; then 4 x 2 (s 2.83): 2.83
        [-100, 8, cell(5, 5), -100, -100, -100, -100],                # a corner left alone (cut): 1
    ])
    weights = target_weights(labels, lookup, 10.0, size_pivot=8.0, size_max=3.0)
    assert weights[0, :4].tolist() == pytest.approx([1.0, 30.0, 30.0, 1.0])
    assert weights[1, :5].tolist() == pytest.approx([10.0, 10.0, 10 * 8 / 8 ** 0.5, 10 * 8 / 8 ** 0.5, 1.0])
    assert weights[2, :2].tolist() == pytest.approx([1.0, 10.0])
    assert weights[:, -1].tolist() == [0.0, 0.0, 0.0] and weights[2, 2:].sum() == 0  # no target, no weight
    # off (the paper's loss): every location target weighs the location weight
    plain = target_weights(labels, lookup, 10.0)
    assert torch.equal(plain, target_weights(labels, lookup, 10.0, size_pivot=8.0, size_max=1.0))
    assert plain[0, :4].tolist() == [1.0, 10.0, 10.0, 1.0]
    # and the loss optimises with those weights: objective = sum(w * loss) / sum(w)
    torch.manual_seed(0)
    logits = torch.randn(3, 7, first + 1024)
    per = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, first + 1024), labels[:, 1:].reshape(-1),
                                            ignore_index=-100, reduction="none").view(3, 6)
    out = sequence_losses(logits, labels, lookup, 10.0, size_pivot=8.0, size_max=3.0)
    assert out.objective.item() == pytest.approx(float((per * weights).sum() / weights.sum()), rel=1e-5)
    assert out.loss_sum.item() == pytest.approx(float(per.sum()), rel=1e-5)  # the log stays unweighted
    # the flags: off by default, out-of-range values are one line each
    assert (TrainConfig(data=["x"], output="o").resolved().small_box_weight) == 1.0
    assert TrainConfig(data=["x"], output="o", small_box_weight=0.5, small_box_cells=0).number_problems() == [
        "--small-box-weight must be a finite number >= 1, got 0.5",
        "--small-box-cells must be a finite number > 0, got 0"]

def test_location_weight_and_label_masking_on_a_hand_built_batch():
    """Two rows: masked (-100) targets count nowhere; location targets are weighted in the objective only."""
    torch.manual_seed(0)
    vocab = 6
    lookup = torch.tensor([False, False, False, False, True, True])  # ids 4, 5 are location tokens
    logits = torch.randn(2, 5, vocab)
    labels = torch.tensor([[-100, -100, 1, 4, 5],     # prompt masked, then text, two location tokens
                           [-100, 2, 3, -100, -100]])  # text then padding
    per = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1),
                                            ignore_index=-100, reduction="none").view(2, 4)
    text = [per[0, 1], per[1, 0], per[1, 1]]
    loc = [per[0, 2], per[0, 3]]
    weight = 10.0
    out = sequence_losses(logits, labels, lookup, location_weight=weight)
    expected = (sum(text) + weight * sum(loc)) / (len(text) + weight * len(loc))
    assert out.objective.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.loss_sum.item() == pytest.approx(float(sum(text) + sum(loc)), rel=1e-5)  # the log stays unweighted
    assert out.loc_sum.item() == pytest.approx(float(sum(loc)), rel=1e-5)
    assert (int(out.n), int(out.loc_n)) == (5, 2)
    # the weight moves only location-token gradients: text logits get the same gradient direction, scaled down
    plain = logits.clone().requires_grad_(True)
    sequence_losses(plain, labels, lookup, 1.0).objective.backward()
    heavy = logits.clone().requires_grad_(True)
    sequence_losses(heavy, labels, lookup, weight).objective.backward()
    ratio_text = heavy.grad[1, 0].norm() / plain.grad[1, 0].norm()
    ratio_loc = heavy.grad[0, 2].norm() / plain.grad[0, 2].norm()
    assert ratio_loc / ratio_text == pytest.approx(weight, rel=1e-4)
    assert torch.all(heavy.grad[1, 3:] == 0) and torch.all(heavy.grad[0, :1] == 0)  # masked positions


def test_checkpoint_is_atomic_and_latest_points_at_the_newest(tmp_path):
    class Saver:
        def save_pretrained(self, path):
            os.makedirs(path, exist_ok=True)
            open(os.path.join(path, "weights"), "w").write("w")

    root = tmp_path / "checkpoints"
    assert ckpt.latest_checkpoint(root) is None
    for step in (1, 2, 3):
        ckpt.save_checkpoint(root, step, Saver(), Saver(), {"step": step}, keep=2)
    assert ckpt.latest_checkpoint(root).name == "step_0000003"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_0000002", "step_0000003"]
    assert ckpt.load_state(ckpt.latest_checkpoint(root))["step"] == 3
    # an interrupted write leaves a temp dir that never becomes latest
    (root / "step_0000004.tmp-123").mkdir()
    assert ckpt.latest_checkpoint(root).name == "step_0000003"


def test_resume_reproduces_the_uninterrupted_loss_curve(shards, tmp_path):
    full = train(small_config(shards, tmp_path / "full"), log=lambda m: None)
    assert full["finished"] and full["skipped"] == {"grounded": {"decode_error": 1}}
    first = train(small_config(shards, tmp_path / "cut", stop_at_step=3), log=lambda m: None)
    assert first["step"] == 3 and not first["finished"]
    resumed = train(small_config(shards, tmp_path / "cut", resume="latest"), log=lambda m: None)
    assert resumed["finished"]
    keys = ("step", "loss", "loc_loss", "lr", "grad_norm")
    curve = [[e[k] for k in keys] for e in read_log(tmp_path / "full")]
    assert [[e[k] for k in keys] for e in read_log(tmp_path / "cut")] == curve
    assert [e[0] for e in curve] == [1, 2, 3, 4, 5, 6]
    assert all(e[2] is not None for e in curve)  # location-token loss is logged
    a = torch.load(tmp_path / "full/checkpoints/step_0000006/state.pt", weights_only=False)
    b = torch.load(tmp_path / "cut/checkpoints/step_0000006/state.pt", weights_only=False)
    assert a["sources"] == b["sources"] and a["sources"][0]["grounded"]["consumed"] == 6
    from kosmos.modeling import load_pretrained

    ma = load_pretrained(tmp_path / "full/checkpoints/step_0000006/model")
    mb = load_pretrained(tmp_path / "cut/checkpoints/step_0000006/model")
    assert all(torch.equal(p, q) for p, q in zip(ma.parameters(), mb.parameters()))


@pytest.mark.slow
def test_resume_is_exact_with_two_loader_workers_and_accumulation(shards, tmp_path):
    options = dict(loader_workers=2, grad_accum=3, steps=4, checkpoint_every=10)
    train(small_config(shards, tmp_path / "full", **options), log=lambda m: None)
    train(small_config(shards, tmp_path / "cut", stop_at_step=1, **options), log=lambda m: None)
    train(small_config(shards, tmp_path / "cut", resume="latest", **options), log=lambda m: None)
    keys = ("step", "loss", "loc_loss", "grad_norm")
    assert [[e[k] for k in keys] for e in read_log(tmp_path / "cut")] == \
        [[e[k] for k in keys] for e in read_log(tmp_path / "full")]


def test_training_lowers_the_loss_and_fine_tunes_from_init(shards, tmp_path):
    summary = train(small_config(shards, tmp_path / "run", steps=12, checkpoint_every=12), log=lambda m: None)
    log = read_log(tmp_path / "run")
    assert summary["finished"] and log[-1]["loss"] < log[0]["loss"] - 0.3
    model_dir = tmp_path / "run/checkpoints/step_0000012/model"
    # --init: a pretrained model + processor directory, loaded with from_pretrained
    tuned = train(small_config(shards, tmp_path / "tuned", init=str(model_dir), steps=2, checkpoint_every=2),
                  log=lambda m: None)
    assert tuned["finished"] and tuned["parameters"] == summary["parameters"]
    first = read_log(tmp_path / "tuned")[0]["loss"]
    assert first < log[0]["loss"] - 0.3  # starts from the trained weights, not from scratch


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(900)
def test_ray_train_two_cpu_workers(shards, tmp_path):
    import ray

    ray.shutdown()  # a Ray left running by another test may have too few CPUs for two workers
    for name in ("a", "b"):  # the mixture: GRIT plus a text corpus of two files, one per rank
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"text": f"a red square {name} {i}\nleft of a blue circle"}) + "\n" for i in range(8)))
    cfg = small_config(shards, tmp_path / "ray", steps=2, checkpoint_every=2, num_workers=2, threads=1,
                       mix=[f"text={tmp_path / 'a.jsonl'},{tmp_path / 'b.jsonl'}:2"])
    try:
        summary = train(cfg, log=lambda m: None)
    finally:
        ray.shutdown()
    assert summary["step"] == 2
    log = read_log(tmp_path / "ray")
    assert [e["step"] for e in log] == [1, 2]
    state = ckpt.load_state(ckpt.latest_checkpoint(tmp_path / "ray" / "checkpoints"))
    assert len(state["sources"]) == 2 and len(state["rng"]) == 2  # one entry per rank
    # each rank reads its own share of every source (2 shards / 2 files, 2 ranks: one each), two batches of each
    for rank in (0, 1):
        assert {k: v["consumed"] for k, v in state["sources"][rank].items()} == {"grounded": 2, "text": 2}
    assert [e["sources"]["text"]["samples"] for e in log] == [4, 4]  # 2 rows x 2 ranks per step


def test_resume_with_other_batch_settings_is_refused(shards, tmp_path):
    train(small_config(shards, tmp_path / "run", steps=2, checkpoint_every=2), log=lambda m: None)
    with pytest.raises(ValueError, match="batch-size"):
        train(small_config(shards, tmp_path / "run", steps=4, batch_size=2, resume="latest"), log=lambda m: None)


def test_soft_location_targets_share_the_loss_with_neighbouring_cells():
    from kosmos.tokenizer import build_processor, train_tokenizer
    from kosmos.train import location_soft_targets

    tok = build_processor(train_tokenizer(["a red square"] * 5, vocab_size=40), 64).tokenizer
    lookup = location_token_mask(tok)
    ids, kernel = location_soft_targets(tok, sigma=1.0)
    assert kernel.shape == (1024, 1024) and torch.allclose(kernel.sum(-1), torch.ones(1024))
    assert kernel[33, 33] > kernel[33, 34] == kernel[33, 1] > kernel[33, 35] > 0  # cell 33 = row 1, col 1
    target = int(ids[33])
    labels = torch.tensor([[-100, target]])
    sharp = torch.zeros(1, 2, len(tok))
    sharp[0, 0, target] = 8.0
    spread = sharp.clone()
    spread[0, 0, ids[[1, 32, 34, 65]]] = 7.0  # also likes the four neighbours
    hard = [sequence_losses(x, labels, lookup).objective.item() for x in (sharp, spread)]
    soft = [sequence_losses(x, labels, lookup, soft_targets=(ids, kernel)).objective.item() for x in (sharp, spread)]
    assert hard[0] < hard[1] and soft[1] < soft[0]  # the exact cell wins the hard loss, the neighbourhood the soft
    tiny_sigma = location_soft_targets(tok, sigma=0.05)
    assert sequence_losses(sharp, labels, lookup, soft_targets=tiny_sigma).objective.item() == pytest.approx(hard[0], rel=1e-4)
    # the logged location loss stays the exact-cell cross entropy
    assert sequence_losses(spread, labels, lookup, soft_targets=(ids, kernel)).loc_sum.item() == pytest.approx(hard[1], rel=1e-5)


def test_a_time_budget_without_steps_runs_until_the_budget_ends(shards, tmp_path):
    from kosmos.train.config import TIME_BUDGET_STEPS

    assert TrainConfig(output="x", data=["d"], max_minutes=10).resolved().steps == TIME_BUDGET_STEPS
    assert TrainConfig(output="x", data=["d"], max_minutes=10, steps=50).resolved().steps == 50
    lines = []
    # 6 s: more than one step even on a loaded machine (the first step also starts the loader process)
    summary = train(small_config(shards, tmp_path / "run", steps=None, max_minutes=0.1, log_every=1,
                                 checkpoint_every=10_000), log=lines.append)
    steps = [line for line in lines if line.startswith("step ")]
    assert summary["step"] > 1 and not summary["finished"]  # the budget ended it; --resume continues
    assert steps[0].startswith("step 1 (0.0/0.1 min) loss") and f"step {summary['step']} (" in steps[-1]
    log = read_log(tmp_path / "run")
    assert log[-1]["lr"] == 0.0 and log[-1]["step"] == summary["step"]  # the lr decay ended with the budget


def test_image_and_patch_size_shape_a_from_scratch_model(shards, tmp_path):
    """--image-size/--patch-size: the ViT, the connector's slots and the processor follow; with --init the
    model keeps its own, and a side that is not a multiple of the patch is refused."""
    from kosmos.modeling import load_pretrained
    from kosmos.tokenizer import load_processor

    train(small_config(shards, tmp_path / "run", steps=2, checkpoint_every=2, image_size=32, patch_size=8))
    model = load_pretrained(tmp_path / "run" / "checkpoints" / "step_0000002" / "model")
    assert (model.config.vision_config.image_size, model.config.vision_config.patch_size) == (32, 8)
    assert model.config.connector == "merged" and model.config.latent_query_num == (32 // 8 // 2) ** 2 + 1
    assert load_processor(tmp_path / "run" / "processor").image_processor.crop_size["height"] == 32
    assert TrainConfig(data=[shards], output="x", image_size=40, patch_size=16).number_problems() == [
        "--image-size 40 must be a multiple of --patch-size 16"]
    assert "more than the tiny preset's 256 positions" in " ".join(
        TrainConfig(data=[shards], output="x", image_size=128, patch_size=4).number_problems())
    assert any("--init" in p for p in TrainConfig(data=[shards], output="x", init="m", image_size=32).number_problems())


def test_tiny_preset_data_defaults_apply_from_scratch_under_given_options(shards):
    """Every grounded sample with its boxes and a random part of the image in view: the tiny preset's defaults
    when pretraining from scratch, each under the same option given; none when fine-tuning or for other presets."""
    from kosmos.presets import TINY_DATA_DEFAULTS, build_model, get_preset
    from kosmos.train.config import data_config

    zoom = TINY_DATA_DEFAULTS["zoom_min_scale"]
    assert 0 < zoom < 1 and TINY_DATA_DEFAULTS["grounding_prob"] == 1.0
    # the tiny preset's data defaults from scratch, under any data option given; none when fine-tuning
    assert TrainConfig(data=[shards], output="x").resolved().data_options == {"grounding_prob": 1.0,
                                                                               "zoom_min_scale": zoom}
    given = TrainConfig(data=[shards], output="x", data_options={"grounding_prob": 0.5}).resolved()
    assert given.data_options == {"grounding_prob": 0.5, "zoom_min_scale": zoom}
    assert given.resolved().data_options == given.data_options
    assert TrainConfig(data=[shards], output="x", init="m").resolved().data_options == {}
    assert TrainConfig(data=[shards], output="x", preset="paper").resolved().data_options == {}
    config = data_config(given.resolved(), build_model(get_preset("tiny"), 1200).config, get_preset("tiny"))
    assert (config.grounding_prob, config.zoom_min_scale, config.flip_prob) == (0.5, zoom, 0.0)


def test_source_weights_parse_and_refuse_in_one_line(shards):
    cfg = TrainConfig(data=[shards], output="x", mix=["text=a.jsonl", "interleaved=d.parquet"],
                      source_weights=["text=0.3", "interleaved=0"])
    assert cfg.source_weight_map() == {"text": 0.3, "interleaved": 0.0} and cfg.number_problems() == []
    # the small presets' defaults from scratch, overridden one kind at a time; none when fine-tuning
    mix = ["text=t.jsonl", "interleaved=docs.jsonl"]
    assert TrainConfig(data=[shards], output="x", mix=mix).source_loss_weights() == {"text": 0.25, "interleaved": 0.25}
    assert TrainConfig(data=[shards], output="x", mix=mix, source_weights=["text=1"]).source_loss_weights() == {
        "text": 1.0, "interleaved": 0.25}
    assert TrainConfig(data=[shards], output="x", mix=mix, init="m").source_loss_weights() == {}
    assert TrainConfig(data=[shards], output="x", mix=mix, preset="paper").source_loss_weights() == {}
    from kosmos.sources import SourceError
    from kosmos.train import make_plan

    with pytest.raises(SourceError, match=r"^--source-weights captions=\.\.\.: the mixture has no captions source$"):
        make_plan(TrainConfig(data=[shards], output="x", source_weights=["captions=2"]))
    for bad in ("text", "txt=1", "text=-1", "text=nan", "text=heavy"):
        problems = TrainConfig(data=[shards], output="x", source_weights=[bad]).number_problems()
        assert len(problems) == 1 and problems[0].startswith(f"--source-weights {bad!r}: write KIND=WEIGHT, KIND ")
        assert problems[0].endswith("WEIGHT a finite number >= 0")


def test_source_weights_reach_the_optimiser(shards, tmp_path):
    """One step of GRIT + a text corpus from the same start: weighting the text's targets moves the weights
    differently, and the tiny preset's default is text=0.25."""
    from kosmos.modeling import load_pretrained

    (tmp_path / "t.jsonl").write_text("".join(
        json.dumps({"text": f"a red square number {i} is left of a blue circle\nand a green star"}) + "\n"
        for i in range(8)))
    weights = {}
    for name, source_weights in (("default", None), ("quarter", ["text=0.25"]), ("one", ["text=1"])):
        train(small_config(shards, tmp_path / name, steps=1, checkpoint_every=1, source_weights=source_weights,
                           mix=[f"text={tmp_path / 't.jsonl'}:2"]), log=lambda m: None)
        model = load_pretrained(tmp_path / name / "checkpoints" / "step_0000001" / "model")
        weights[name] = model.text_model.model.embed_tokens.weight.detach().clone()
    assert torch.equal(weights["default"], weights["quarter"])
    assert not torch.allclose(weights["default"], weights["one"])


def test_vision_init_starts_the_vit_from_a_clip_tower(shards, tmp_path):
    """--vision-init: a from-scratch model's ViT starts as a CLIP vision tower (a full CLIPModel directory, as
    openai's are published), and --freeze-vision all-but-last keeps all of it but its last layer; a tower of other sizes, a missing folder and --init are refused in one line before
    anything is written."""
    from transformers import CLIPConfig, CLIPModel

    from kosmos.modeling import load_pretrained
    from kosmos.presets import get_preset

    sizes = {**get_preset("tiny").vision_sizes(), "image_size": 32, "patch_size": 16}
    torch.manual_seed(3)
    clip = CLIPModel(CLIPConfig(vision_config=sizes, text_config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=50)))
    clip.save_pretrained(tmp_path / "clip")
    train(small_config(shards, tmp_path / "run", steps=1, checkpoint_every=1, lr=1e-9, image_size=32, patch_size=16,
                       vision_init=str(tmp_path / "clip")))
    model = load_pretrained(tmp_path / "run" / "checkpoints" / "step_0000001" / "model")
    theirs = clip.vision_model.state_dict()
    ours = model.vision_model.model.state_dict()
    assert sorted(ours) == sorted(theirs)
    for name, value in theirs.items():
        assert torch.allclose(ours[name], value, atol=1e-5), name
    # --freeze-vision all-but-last (Kosmos-1's CLIP): at a real lr the embeddings and first layer stay CLIP's
    train(small_config(shards, tmp_path / "frozen", steps=2, checkpoint_every=2, lr=1e-2, image_size=32,
                       patch_size=16, vision_init=str(tmp_path / "clip"), freeze_vision="all-but-last"))
    frozen = load_pretrained(tmp_path / "frozen" / "checkpoints" / "step_0000002" / "model")
    ours = frozen.vision_model.model.state_dict()
    last = f"encoder.layers.{len(frozen.vision_model.model.encoder.layers) - 1}."
    for name, value in theirs.items():
        assert torch.equal(ours[name], value) != name.startswith((last, "post_layernorm")), name
    for overrides, message in (
            (dict(image_size=None, patch_size=None), "does not fit the model: image_size 32 (the model's 64), "
                                                     "patch_size 16 (the model's 8)"),
            (dict(vision_init=str(tmp_path / "empty")), "not a CLIP (model_type clip or clip_vision_model)"),
            (dict(vision_init=str(tmp_path / "nowhere")), "the local folder does not exist")):
        (tmp_path / "empty").mkdir(exist_ok=True)
        settings = dict(steps=1, image_size=32, patch_size=16, vision_init=str(tmp_path / "clip")) | overrides
        with pytest.raises((ValueError, FileNotFoundError), match="--vision-init") as raised:
            train(small_config(shards, tmp_path / "refused", **settings))
        assert message in str(raised.value) and "\n" not in str(raised.value)
        assert not (tmp_path / "refused").exists()
    assert any("--vision-init" in p for p in TrainConfig(data=[shards], output="x", init="m",
                                                         vision_init="c").number_problems())
    assert TrainConfig(data=[shards], output="x", freeze_vision="half").number_problems() == [
        "--freeze-vision must be one of none, all-but-last, got 'half'"]
    # a Kosmos-2 folder has a vision config too: refused, not read as a CLIP with its weights left random
    load_pretrained(tmp_path / "run" / "checkpoints" / "step_0000001" / "model").save_pretrained(tmp_path / "kosmos")
    with pytest.raises(ValueError, match="a kosmos-2 model, not a CLIP"):
        train(small_config(shards, tmp_path / "refused", steps=1, image_size=32, patch_size=16,
                           vision_init=str(tmp_path / "kosmos")))
    assert not (tmp_path / "refused").exists()


def test_cpu_threads_leave_a_cpu_to_each_loader_process(shards, tmp_path):
    from kosmos.train.launch import cpu_threads, usable_cpus

    cfg = small_config(shards, tmp_path / "run", device="cpu")
    assert cpu_threads(replace(cfg, loader_workers=1), cpus=2) == 1
    assert cpu_threads(replace(cfg, loader_workers=0), cpus=2) == 2
    assert cpu_threads(replace(cfg, loader_workers=4), cpus=2) == 1  # never none
    assert cpu_threads(replace(cfg, loader_workers=2), cpus=16) == 14
    assert cpu_threads(replace(cfg, loader_workers=1, threads=3), cpus=2) == 3  # --threads wins
    if not torch.cuda.is_available():
        assert cpu_threads(replace(cfg, device="auto"), cpus=8) == 8
    # a run without --threads sets and names what it chose; --threads is taken as given, silently
    before = torch.get_num_threads()
    try:
        lines = []
        train(small_config(shards, tmp_path / "run", steps=1, checkpoint_every=1, device="cpu"), log=lines.append)
        expected = cpu_threads(cfg)
        assert torch.get_num_threads() == expected
        assert [line for line in lines if line.startswith("torch threads")] == [
            f"torch threads: {expected} ({usable_cpus()} CPUs less 0 loader process(es); "
            "--threads sets it)"]
        lines = []
        train(small_config(shards, tmp_path / "run2", steps=1, checkpoint_every=1, threads=1), log=lines.append)
        assert torch.get_num_threads() == 1 and not any(line.startswith("torch threads") for line in lines)
    finally:
        torch.set_num_threads(before)
