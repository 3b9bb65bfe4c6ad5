"""``kosmos plot RUN``: a run's curves over steps as one PNG, read from ``RUN/train_log.jsonl`` (and the held-out
REC of ``RUN/eval_log.jsonl`` when the run evaluated).

Every numeric series of the log is one line, in panels by what it measures: loss (all sources, then each source),
loss by token kind (text vs location tokens), location accuracy (the fraction of location tokens predicted
right), learning rate, gradient norm, tokens and samples per second, skipped samples, held-out REC; a numeric field no panel knows goes to "other", so nothing logged is left out. A series
that is never logged (``loc_acc`` of a text-only source) draws no line.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

TRAIN_LOG, EVAL_LOG, DEFAULT_PNG = "train_log.jsonl", "eval_log.jsonl", "curves.png"
# top-level fields of a log line that are not series, or are drawn by the panels below
NOT_SERIES = {"step", "sources", "skipped"}
KNOWN = {"loss", "text_loss", "loc_loss", "loc_acc", "lr", "grad_norm", "tokens_per_s", "samples_per_s"}
# the per-source fields, drawn in the loss, token-kind and accuracy panels
SOURCE_FIELDS = ("loss", "text_loss", "loc_loss", "loc_acc", "tokens", "samples")
KIND_NAMES = {"text_loss": "text tokens", "loc_loss": "location tokens"}


class PlotError(ValueError):
    """A run folder without a readable log (one-line message)."""


def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """(the entries with a numeric ``step``, how many lines were not such an entry): a line cut short by a run
    that is writing its log, or any other broken line, is passed over, not fatal."""
    entries, bad = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):  # (a crafted line nested past Python's limit is one more broken line)
            bad += 1
            continue
        if isinstance(entry, dict) and _number(entry.get("step")) is not None:
            entries.append(entry)
        else:
            bad += 1
    return entries, bad


def read_run(run: str | Path) -> tuple[list[dict], list[dict], int]:
    """(train log entries, eval log entries, broken lines) of a run folder; ``PlotError`` when there is nothing
    to draw."""
    run = Path(run)
    if not run.is_dir():
        raise PlotError(f"{run} is not a folder (give the --output folder of kosmos train)")
    if not (run / TRAIN_LOG).is_file():
        raise PlotError(f"{run} has no {TRAIN_LOG} (kosmos train writes it there every --log-every steps)")
    entries, bad = read_jsonl(run / TRAIN_LOG)
    if not entries:
        what = f"has {bad} lines but no log entry" if bad else "is empty: no step logged yet"
        raise PlotError(f"{run / TRAIN_LOG} {what}")
    evals, eval_bad = read_jsonl(run / EVAL_LOG) if (run / EVAL_LOG).is_file() else ([], 0)
    return entries, evals, bad + eval_bad


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def curve_series(entries: list[dict], evals: list[dict] = ()) -> dict[str, dict[str, tuple[list, list]]]:
    """Panel title -> series label -> (steps, values): every numeric series of the logs, in the panels drawn.
    Per-source series appear when the run mixes several sources (with one, they equal the totals)."""
    panels: dict[str, dict[str, tuple[list, list]]] = {}

    def add(panel: str, label: str, step, value) -> None:
        number = _number(value)
        if number is None:
            return
        steps, values = panels.setdefault(panel, {}).setdefault(label, ([], []))
        steps.append(float(step))
        values.append(number)

    sources = sorted({name for e in entries if isinstance(e.get("sources"), dict) for name in e["sources"]})
    mixed = len(sources) > 1
    for entry in entries:
        step = entry["step"]
        add("loss", "all sources", step, entry.get("loss"))
        for field, kind in KIND_NAMES.items():
            add("loss by token kind", f"all: {kind}", step, entry.get(field))
        add("location accuracy", "all sources", step, entry.get("loc_acc"))
        add("learning rate", "lr", step, entry.get("lr"))
        add("gradient norm", "grad norm", step, entry.get("grad_norm"))
        add("tokens per second", "tokens/s", step, entry.get("tokens_per_s"))
        add("samples per second", "samples/s", step, entry.get("samples_per_s"))
        skipped = entry.get("skipped") if isinstance(entry.get("skipped"), dict) else {}
        for reason, count in skipped.items():
            add("skipped samples", str(reason), step, count)
        for name, value in entry.items():
            if name not in NOT_SERIES and name not in KNOWN:
                add("other", name, step, value)
        per_source = entry.get("sources") if isinstance(entry.get("sources"), dict) else {}
        for source, stats in per_source.items():
            if not mixed or not isinstance(stats, dict):
                continue
            add("loss", source, step, stats.get("loss"))
            for field, kind in KIND_NAMES.items():
                add("loss by token kind", f"{source}: {kind}", step, stats.get(field))
            add("location accuracy", source, step, stats.get("loc_acc"))
            # a source's tokens and samples of the log window, as its share of the window's rates
            for field, rate, unit in (("tokens", "tokens_per_s", "tokens"), ("samples", "samples_per_s", "samples")):
                total = sum(_number(s.get(field)) or 0.0 for s in per_source.values() if isinstance(s, dict))
                share, speed = _number(stats.get(field)), _number(entry.get(rate))
                if share is not None and speed is not None and total > 0:
                    add(f"{unit} per second", f"{source}: {unit}/s", step, speed * share / total)
            for name, value in stats.items():
                if name not in SOURCE_FIELDS and name != "skipped":
                    add("other", f"{source}: {name}", step, value)
    for entry in evals:
        add("held-out REC (%)", "held-out REC", entry["step"], entry.get("eval_rec"))
    return panels


PANEL_ORDER = ("loss", "loss by token kind", "location accuracy", "held-out REC (%)", "learning rate",
               "gradient norm", "tokens per second", "samples per second", "skipped samples", "other")


def curves_figure(panels: dict[str, dict[str, tuple[list, list]]], title: str = ""):
    """A matplotlib ``Figure`` (no pyplot state) with one subplot per panel and one labelled line per series."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    names = [p for p in PANEL_ORDER if panels.get(p)] + sorted(p for p in panels if p not in PANEL_ORDER and panels[p])
    columns = 2 if len(names) > 1 else 1
    rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(6.0 * columns, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, name in enumerate(names):
        ax = axes[index // columns][index % columns]
        for label, (steps, values) in panels[name].items():
            ax.plot(steps, values, label=label, marker="." if len(steps) < 30 else None, linewidth=1.2)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        ax.set_xlabel("step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    for index in range(len(names), rows * columns):  # an odd panel count leaves one cell empty
        axes[index // columns][index % columns].set_visible(False)
    if title:
        figure.suptitle(title, fontsize=11)
    return figure


def plot_run(run: str | Path, output: str | Path | None = None) -> dict:
    """Draw the run's curves into ``output`` (default ``RUN/curves.png``); returns what was drawn."""
    run = Path(run)
    entries, evals, bad = read_run(run)
    panels = curve_series(entries, evals)
    figure = curves_figure(panels, title=f"{run.resolve().name}: steps {entries[0]['step']}-{entries[-1]['step']}")
    output = Path(output) if output else run / DEFAULT_PNG
    if output.suffix.lower() != ".png":
        raise PlotError(f"--output {output}: give a .png file name")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp.png")
    figure.savefig(tmp, dpi=110)
    tmp.replace(output)  # a reader never sees half a PNG
    return {"output": str(output), "log_entries": len(entries), "eval_entries": len(evals),
            "series": sum(len(series) for series in panels.values()), "panels": list(panels),
            **({"broken_lines": bad} if bad else {})}


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw a run's curves (loss, location accuracy, lr, held-out REC) as a PNG",
                       description="Draw every series of RUN/train_log.jsonl (and RUN/eval_log.jsonl's held-out "
                                   "REC) over steps into one PNG.")
    p.add_argument("run", metavar="RUN", help="the --output folder of kosmos train")
    p.add_argument("--output", help=f"PNG file to write (default RUN/{DEFAULT_PNG})")
    p.set_defaults(_run=run)


def run(args) -> int:
    try:
        summary = plot_run(args.run, args.output)
    except (PlotError, OSError) as error:
        print(f"kosmos plot: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0
