"""kosmos plot: the curves of a run the real trainer wrote, one line per logged series."""
import json
import math

import pytest
import torch

from kosmos.plot import PlotError, curve_series, curves_figure, read_run
from kosmos.toydata import write_toy_refcoco, write_toy_shards
from kosmos.train import TrainConfig, read_log, train

torch.set_num_threads(1)
PER_SOURCE = ("loss", "text_loss", "loc_loss", "loc_acc", "tokens", "samples")
TOP_LEVEL = ("loss", "text_loss", "loc_loss", "loc_acc", "lr", "grad_norm", "tokens_per_s", "samples_per_s")


@pytest.fixture(scope="module")
def mixture_run(tmp_path_factory):
    """A 4-step tiny run of GRIT plus a text corpus, evaluated on held-out REC every 2 steps."""
    root = tmp_path_factory.mktemp("plot_run")
    write_toy_shards(root / "shards", num_shards=1, per_shard=8)
    (root / "text.jsonl").write_text("".join(json.dumps({"text": f"a red square {i} left of a blue circle"}) + "\n"
                                             for i in range(8)))
    write_toy_refcoco(root / "val", "finetune_refcoco_val.json", 2)
    train(TrainConfig(data=[str(root / "shards")], output=str(root / "run"), steps=4, batch_size=2, log_every=1,
                      checkpoint_every=4, loader_workers=0, eval_every=2, eval_data=str(root / "val"),
                      mix=[f"text={root / 'text.jsonl'}:2"], data_options={"shuffle_buffer": 0}), log=lambda m: None)
    return root / "run"


def logged_series(log: list[dict], evals: list[dict]) -> int:
    """How many series the logs hold: every top-level number and skip reason that is ever logged, each source's
    numbers when the run mixes sources (with one source they are the totals), and held-out REC."""
    def ever(values):
        return any(isinstance(v, (int, float)) and math.isfinite(v) for v in values)

    count = sum(ever(e.get(name) for e in log) for name in TOP_LEVEL)
    count += len({reason for e in log for reason in e["skipped"]})
    sources = log[0]["sources"]
    if len(sources) > 1:
        count += sum(ever(e["sources"][s][name] for e in log) for s in sources for name in PER_SOURCE)
    return count + ever(e["eval_rec"] for e in evals)


def lines_by_panel(figure) -> dict[str, dict[str, list[float]]]:
    return {ax.get_title(): {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
            for ax in figure.axes if ax.get_visible()}


def test_the_figure_has_one_line_per_logged_series(mixture_run):
    log, evals = read_log(mixture_run), read_log(mixture_run, "eval_log.jsonl")
    assert [e["step"] for e in log] == [1, 2, 3, 4] and [e["step"] for e in evals] == [2, 4]
    assert set(log[0]["sources"]) == {"grounded", "text"}
    entries, eval_entries, broken = read_run(mixture_run)
    figure = curves_figure(curve_series(entries, eval_entries))
    lines = [line for ax in figure.axes for line in ax.get_lines()]
    assert len(lines) == logged_series(log, evals) > 10
    panels = lines_by_panel(figure)
    for panel in panels.values():  # every line is told apart in its legend
        assert len(panel) == len({label for label in panel})
    # the lines carry the logged numbers
    assert panels["loss"]["all sources"] == pytest.approx([e["loss"] for e in log])
    assert panels["loss"]["text"] == pytest.approx([e["sources"]["text"]["loss"] for e in log])
    assert panels["location accuracy"]["grounded"] == pytest.approx([e["sources"]["grounded"]["loc_acc"] for e in log])
    assert "text" not in panels["location accuracy"]  # a text corpus has no location tokens: no line
    assert panels["learning rate"]["lr"] == pytest.approx([e["lr"] for e in log])
    assert panels["held-out REC (%)"]["held-out REC"] == pytest.approx([e["eval_rec"] for e in evals])
    # a source's rate is its share of the window's rate: the sources add up to the total
    rates = panels["tokens per second"]
    assert [a + b for a, b in zip(rates["grounded: tokens/s"], rates["text: tokens/s"])] == pytest.approx(
        rates["tokens/s"])


def test_kosmos_plot_writes_the_png(mixture_run, tmp_path, capsys):
    from PIL import Image

    from kosmos.cli import main

    assert main(["plot", str(mixture_run), "--output", str(tmp_path / "out" / "curves.png")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["log_entries"] == 4 and summary["eval_entries"] == 2
    assert summary["series"] == logged_series(read_log(mixture_run), read_log(mixture_run, "eval_log.jsonl"))
    with Image.open(tmp_path / "out" / "curves.png") as png:
        assert png.format == "PNG" and png.width > 600 and png.height > 600
    assert main(["plot", str(mixture_run)]) == 0  # default: RUN/curves.png
    assert (mixture_run / "curves.png").is_file()


def test_a_single_source_run_draws_totals_only(tmp_path):
    log = [{"step": s, "loss": 3.0 / s, "text_loss": 2.0 / s, "loc_loss": 5.0 / s, "loc_acc": 0.1 * s, "lr": 1e-3,
            "grad_norm": None, "tokens_per_s": 100.0, "samples_per_s": 4.0, "skipped": {"bad_image": s},
            "sources": {"grounded": {"loss": 3.0 / s, "text_loss": 2.0 / s, "loc_loss": 5.0 / s,
                                     "loc_acc": 0.1 * s, "tokens": 10, "samples": 2, "skipped": {}}},
            "new_metric": 7.0} for s in (1, 2, 3)]
    panels = curve_series(log)
    assert {title: sorted(series) for title, series in panels.items()} == {
        "loss": ["all sources"], "loss by token kind": ["all: location tokens", "all: text tokens"],
        "location accuracy": ["all sources"], "learning rate": ["lr"], "tokens per second": ["tokens/s"],
        "samples per second": ["samples/s"], "skipped samples": ["bad_image"], "other": ["new_metric"]}
    assert "gradient norm" not in panels  # never logged (no clipping): no empty panel
    assert len([line for ax in curves_figure(panels).axes for line in ax.get_lines()]) == 9 == logged_series(log, []) + 1


def test_plot_refuses_a_folder_without_a_log_in_one_line(tmp_path, capsys):
    from kosmos.cli import main

    with pytest.raises(PlotError, match="has no train_log.jsonl"):
        read_run(tmp_path)
    with pytest.raises(PlotError, match="is not a folder"):
        read_run(tmp_path / "missing")
    (tmp_path / "train_log.jsonl").write_text("")
    with pytest.raises(PlotError, match="is empty: no step logged yet"):
        read_run(tmp_path)
    (tmp_path / "train_log.jsonl").write_text("not json\n[1, 2]\n")
    with pytest.raises(PlotError, match="has 2 lines but no log entry"):
        read_run(tmp_path)
    assert main(["plot", str(tmp_path / "missing")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("kosmos plot: ") and error.count("\n") == 1


def test_a_line_cut_short_by_a_running_trainer_is_passed_over(tmp_path):
    whole = json.dumps({"step": 10, "loss": 2.5, "lr": 1e-3, "sources": {}, "skipped": {}})
    (tmp_path / "train_log.jsonl").write_text(whole + "\n" + whole.replace("10", "20")[:25])
    entries, evals, broken = read_run(tmp_path)
    assert [e["step"] for e in entries] == [10] and evals == [] and broken == 1


def test_hostile_log_lines_are_counted_not_fatal(tmp_path):
    lines = ['{"step": 1, "loss": NaN, "lr": Infinity}', '{"step": "three", "loss": 1}', "[1, 2]",
             '{"step": 4, "deep": ' + "[" * 5000 + "]" * 5000 + "}", '{"step": 5, "loss": 2.0, "lr": 0.001}']
    (tmp_path / "train_log.jsonl").write_text("\n".join(lines) + "\n")
    entries, evals, broken = read_run(tmp_path)
    assert [e["step"] for e in entries] == [1, 5] and broken == 3
    series = curve_series(entries)
    drawn = {label: values for panel in series.values() for label, (_, values) in panel.items()}
    assert all(v == v and abs(v) != float("inf") for values in drawn.values() for v in values)  # no NaN/inf drawn
