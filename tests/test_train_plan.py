"""The plan of a `kosmos train` run: every setting resolved once (flag > recipe > preset > paper > default) with
where it came from; --mix read by one function; plan.json written, compared on --resume (a run folder from
before plans resumes on its checkpoint's record); --report-to tensorboard/wandb."""
import json
import os
import sys

import pytest
import torch

from kosmos import checkpoint as ckpt
from kosmos.mix import parse_mix
from kosmos.sources import SourceError
from kosmos.toydata import write_toy_refcoco, write_toy_shards
from kosmos.train import PlanChangedError, TrainConfig, TrainPlan, make_plan, read_log, train
from kosmos.train.plan import plan_lines

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan_shards")
    write_toy_shards(root, num_shards=2, per_shard=8)
    return str(root)


def tiny_run(shards, output, **overrides):
    values = dict(data=[shards], output=str(output), preset="tiny", steps=2, batch_size=2, log_every=1,
                  checkpoint_every=2, loader_workers=0, data_options={"shuffle_buffer": 4})
    values.update(overrides)
    return TrainConfig(**values)


def quiet(message):
    pass


def test_plan_of_an_instruct_run_records_where_each_setting_comes_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(output="run", recipe="instruct", init="model", preset="paper", batch_size=702,
                      data=["grit/"], mix=["llava=l.json", "unnatural=u.jsonl:40", "text=t.jsonl", "captions=c/"],
                      source_weights=["llava=2"], warmup_steps=10, data_options={"flip_prob": 0.5})
    plan = make_plan(cfg)
    config, origin = plan.config, plan.origin
    assert (config.steps, origin["steps"]) == (10_000, "recipe")  # Table 8's schedule
    assert (config.lr, origin["lr"]) == (1e-5, "recipe")
    assert (config.warmup_steps, origin["warmup_steps"]) == (10, "flag")  # the flag over the recipe's 375
    assert (config.batch_size, origin["batch_size"]) == (702, "flag")
    assert (config.location_loss_weight, origin["location_loss_weight"]) == (1.0, "recipe")  # fine-tuning's
    assert (config.grad_accum, origin["grad_accum"]) == (1, "default")
    assert config.data_options == {"flip_prob": 0.5} and origin["data.flip_prob"] == "flag"
    assert config.output == str(tmp_path / "run")
    sources = {s.kind: s for s in plan.sources}
    assert {k: (s.batch_size, s.origin["batch_size"]) for k, s in sources.items()} == {
        "grounded": (702, "flag"), "llava": (351, "recipe"), "unnatural": (40, "flag"), "text": (30, "recipe"),
        "captions": (702, "paper")}  # captions: not in Table 8, Table 7's share (as many as GRIT)
    assert {k: (s.loss_weight, s.origin["loss_weight"]) for k, s in sources.items()} == {
        "grounded": (1.0, "paper"), "llava": (2.0, "flag"), "unnatural": (1.0, "paper"), "text": (1.0, "paper"),
        "captions": (1.0, "paper")}
    assert sources["llava"].paths == (str(tmp_path / "l.json"),)  # absolute: Ray workers run elsewhere
    assert plan.model["init"] == "model" and "connector" not in plan.model  # an --init model keeps its own
    with pytest.raises(AttributeError):  # frozen
        plan.sources = ()
    assert TrainPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan  # as plan.json and Ray workers read it


def test_plan_of_a_tiny_pretraining_run_takes_the_presets_shares_weights_and_data_defaults(tmp_path):
    plan = make_plan(TrainConfig(output=str(tmp_path / "run"), data=["g"], mix=["captions=c", "text=t.jsonl"],
                                 lr=3e-3, connector="linear"))
    origin = plan.origin
    assert (plan.config.lr, origin["lr"]) == (3e-3, "flag")
    assert (plan.config.steps, origin["steps"]) == (400, "preset")
    assert (plan.config.location_loss_weight, origin["location_loss_weight"]) == (10.0, "default")
    assert origin["data.grounding_prob"] == origin["data.zoom_min_scale"] == "preset"
    assert (plan.model["connector"], origin["model.connector"]) == ("linear", "flag")
    assert (plan.model["image_size"], origin["model.image_size"]) == (64, "preset")
    sizes = {s.kind: (s.batch_size, s.origin["batch_size"], s.loss_weight, s.origin["loss_weight"])
             for s in plan.sources}
    assert sizes == {"grounded": (16, "preset", 1.0, "paper"), "captions": (4, "preset", 1.0, "paper"),
                     "text": (1, "preset", 0.25, "preset")}
    paper = make_plan(TrainConfig(output="o", preset="paper", mix=["grounded=g", "text=t"]))
    assert [(s.batch_size, s.origin["batch_size"]) for s in paper.sources] == [(64, "paper"), (5, "paper")]
    lines = plan_lines(plan)
    assert lines[0].startswith("plan (flag > recipe > preset > paper > default")
    assert any(line.startswith("  source text: 1 rows/step (preset), loss weight 0.25 (preset)") for line in lines)
    assert any("lr 0.003 (flag)" in line for line in lines)


def test_mix_is_read_by_one_function_and_its_errors_are_one_line(monkeypatch):
    import kosmos.mix

    calls = []
    real = kosmos.mix.parse_mix
    monkeypatch.setattr(kosmos.mix, "parse_mix", lambda entries: calls.append(entries) or real(entries))
    cfg = TrainConfig(output="o", data=["g"], mix=["text=a.jsonl,b.jsonl:3"])
    assert cfg.number_problems() == []
    plan = make_plan(cfg)
    assert calls == [["text=a.jsonl,b.jsonl:3"]]  # parsed once, by parse_mix
    assert [(s.kind, len(s.paths), s.batch_size) for s in plan.sources] == [("grounded", 1, 16), ("text", 2, 3)]
    assert parse_mix(["text=C:/corpus:2"])[0].paths == ["C:/corpus"]  # the last :DIGITS is the batch size
    assert parse_mix(["text=data:v2"])[0].paths == ["data:v2"]  # ...only digits
    for entries, message in (
            (["pictures=x"], "--mix 'pictures=x': unknown source kind 'pictures'; choose from "),
            (["grounded"], "--mix 'grounded': write KIND=PATHS[:BATCH], KIND one of "),
            (["text=a:0"], "--mix 'text=a:0': the batch size must be at least 1, got 0"),
            (["text=a", "text=b"], "--mix: text is given twice; list several paths of one source with commas"),
            (["text=:5"], "--mix 'text=:5': no path given; write KIND=PATHS[:BATCH]"),
            ([], "--mix: no source given")):
        with pytest.raises(SourceError) as raised:
            real(entries)
        assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    with pytest.raises(SourceError, match="grounded data is given twice"):
        make_plan(TrainConfig(output="o", data=["g"], mix=["grounded=h"]))
    with pytest.raises(SourceError, match="no training data"):
        make_plan(TrainConfig(output="o"))
    with pytest.raises(SourceError, match=r"--source-weights captions=\.\.\.: the mixture has no captions source"):
        make_plan(TrainConfig(output="o", data=["g"], source_weights=["captions=2"]))


def test_plan_json_is_written_and_resume_refuses_a_changed_setting_in_one_line(shards, tmp_path):
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": f"a red square {i} left of a circle"}) + "\n"
                                              for i in range(8)))
    mix = [f"text={tmp_path / 't.jsonl'}:2"]
    lines = []
    train(tiny_run(shards, tmp_path / "run", mix=mix, stop_at_step=1, checkpoint_every=1, steps=3), log=lines.append)
    assert lines[0].startswith("plan (flag > recipe > preset > paper > default; written to ")
    saved = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert saved["settings"]["batch_size"] == 2 and saved["from"]["batch_size"] == "flag"
    assert saved["from"]["lr"] == "preset" and saved["settings"]["lr"] == 1e-3
    assert [(s["kind"], s["batch_size"], s["from"]["batch_size"]) for s in saved["sources"]] == [
        ("grounded", 2, "flag"), ("text", 2, "flag")]
    for changed, named in ((dict(lr=5e-4), "cannot resume with --lr 0.0005: the run was planned with 0.001"),
                           (dict(mix=[f"text={tmp_path / 't.jsonl'}:3"]),
                            "cannot resume with the text source's batch size 3: the run was planned with 2"),
                           (dict(mix=None), "cannot resume with the sources grounded: the run was planned with "
                                            "grounded, text"),
                           (dict(data_options={"shuffle_buffer": 4, "flip_prob": 0.5}),
                            "cannot resume with --flip-prob 0.5: the run was planned with None")):
        with pytest.raises(PlanChangedError) as raised:
            train(tiny_run(shards, tmp_path / "run", resume="latest", steps=3, **{"mix": mix, **changed}), log=quiet)
        assert str(raised.value).startswith(named) and "\n" not in str(raised.value)
    # the budget and the step limits may change: the run goes on
    summary = train(tiny_run(shards, tmp_path / "run", mix=mix, resume="latest", steps=3, log_every=2), log=quiet)
    assert summary["step"] == 3 and summary["finished"]


def test_a_run_folder_from_before_plans_resumes_or_is_refused_in_one_line(shards, tmp_path):
    """A folder as kosmos train wrote it before plans: no plan.json, the settings recorded only in each
    checkpoint's state.pt ("config": the resolved TrainConfig, relative output, no report_to)."""
    run = tmp_path / "run"
    train(tiny_run(shards, run, steps=3, stop_at_step=1, checkpoint_every=1), log=quiet)
    (run / "plan.json").unlink()
    state_path = ckpt.latest_checkpoint(run / "checkpoints") / "state.pt"
    state = torch.load(state_path, weights_only=False)
    state["config"].pop("report_to")
    state["config"]["output"] = os.path.relpath(run)
    torch.save(state, state_path)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "processor", "train_log.jsonl"]
    with pytest.raises(PlanChangedError) as raised:
        train(tiny_run(shards, run, steps=3, batch_size=3, resume="latest"), log=quiet)
    assert str(raised.value).startswith("cannot resume exactly with --batch-size 3: the checkpoint ")
    assert str(raised.value).endswith("was written with 2") and not (run / "plan.json").exists()
    summary = train(tiny_run(shards, run, steps=3, resume="latest"), log=quiet)
    assert summary["step"] == 3 and [e["step"] for e in read_log(run)] == [1, 2, 3]
    assert (run / "plan.json").exists()  # from now on the folder has its plan
    (run / "plan.json").write_text("{not json")
    with pytest.raises(PlanChangedError, match=r"plan.json cannot be read \(") as raised:
        train(tiny_run(shards, run, steps=4, resume="latest"), log=quiet)
    assert "\n" not in str(raised.value)


def test_report_to_tensorboard_logs_the_train_log_series(shards, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_toy_refcoco(tmp_path / "val", "finetune_refcoco_val.json", 3)
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": f"a blue circle {i} and a star"}) + "\n"
                                              for i in range(8)))
    run = tmp_path / "run"
    train(tiny_run(shards, run, steps=3, checkpoint_every=3, report_to="tensorboard", eval_every=3,
                   eval_data=str(tmp_path / "val"), mix=[f"text={tmp_path / 't.jsonl'}:1"]), log=quiet)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    per_line = {"train/loss", "train/text_loss", "train/loc_loss", "train/loc_acc", "train/lr", "train/grad_norm",
                "train/tokens_per_s", "train/samples_per_s", "source/grounded/loss", "source/grounded/loc_acc",
                "source/grounded/tokens", "source/grounded/samples", "source/text/loss", "source/text/text_loss"}
    assert per_line | {"eval/rec"} <= tags
    assert "source/text/loc_loss" not in tags  # a text corpus has no location targets (null in the log)
    log = read_log(run)
    for tag in per_line:
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3], tag
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([e["lr"] for e in log])
    assert [e.value for e in events.Scalars("source/grounded/loss")] == pytest.approx(
        [e["sources"]["grounded"]["loss"] for e in log])
    assert [(e.step, e.value) for e in events.Scalars("eval/rec")] == [
        (3, pytest.approx(read_log(run, "eval_log.jsonl")[0]["eval_rec"]))]


def test_report_to_needs_its_library_and_says_so_in_one_line(shards, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    monkeypatch.setitem(sys.modules, "wandb", None)
    for kind, message in (("tensorboard", "--report-to tensorboard needs tensorboard: pip install tensorboard"),
                          ("wandb", "--report-to wandb needs wandb: pip install wandb")):
        with pytest.raises(ValueError) as raised:
            train(tiny_run(shards, tmp_path / "run", report_to=kind), log=quiet)
        assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_report_to_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from kosmos.train.report import Reporter

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    reporter = Reporter("wandb", tmp_path, {"settings": {"lr": 1e-3}})
    reporter.log({"step": 1, "loss": 2.5, "lr": 1e-3, "sources": {"grounded": {"loss": 2.5, "loc_acc": None}}})
    reporter.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_kosmos_train_cli_takes_report_to():
    from kosmos.cli import build_parser

    args = build_parser().parse_args(["train", "--data", "g", "--output", "o", "--report-to", "tensorboard"])
    assert args.report_to == "tensorboard"
    assert build_parser().parse_args(["train", "--data", "g", "--output", "o"]).report_to == "none"
