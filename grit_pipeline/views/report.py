"""The dataset report: Table-1-style totals, distributions as PNG plots, rejects by stage and reason.

``write_report(DIR, OUT)`` writes ``OUT/report.html`` (plots embedded, opens from disk, no network),
``OUT/report.md`` and ``OUT/plots/*.png`` (matplotlib, Agg backend). Counting rules, the same as the
pipeline's shard stats and ``grit stats`` (docs/views.md): *images* = samples with status
``grounded``; *boxes* = stored (noun chunk, box) pairs; *text spans* = the linked spans of the training
text (``serialize.select_entities``: score > threshold, identical spans grouped, contained expressions
dropped); *expression length* = words (whitespace split) of those spans.
"""
from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grit_pipeline import status as st
from grit_pipeline.serialize import select_entities
from grit_pipeline.views.dataset import DEFAULT_THRESHOLD, Dataset
from grit_pipeline.views.html import data_uri, esc, fill_template, write_atomic

# Kosmos-2 paper, Table 1: the full GRIT.
PAPER_TOTALS = {"images": 90_614_680, "boxes": 137_349_210, "spans": 114_978_233, "expression_words": 4.7}
HISTOGRAM_BINS = 20
DEFAULT_REPORT_DIR = "_report"  # ("_": dataset readers of the build skip it)
TOP_REASONS = 5


@dataclass
class ReportData:
    root: str
    kind: str
    threshold: float
    threshold_source: str
    shards: int = 0
    unfinished: list[str] = field(default_factory=list)
    status_counts: Counter = field(default_factory=Counter)
    images: int = 0
    boxes: int = 0
    spans: int = 0
    dropped_boxes: int = 0
    phrase_mode: str = "expression"
    expression_words: list[int] = field(default_factory=list)
    boxes_per_image: list[int] = field(default_factory=list)
    spans_per_caption: list[int] = field(default_factory=list)
    histogram_edges: list[float] = field(default_factory=list)
    histogram_counts: list[int] = field(default_factory=list)
    histogram_source: str = ""
    drops: Counter = field(default_factory=Counter)        # (stage, status) -> n
    reasons: Counter = field(default_factory=Counter)      # (status, reason) -> n
    timings_s: Counter = field(default_factory=Counter)
    invalid_rows: int = 0
    stats_totals: dict[str, int] = field(default_factory=dict)   # what the shard stats files say
    truth: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)    # mixed parameters, keys in several shards, ...

    @property
    def inputs(self) -> int:
        return sum(self.status_counts.values())

    @property
    def mean_expression_words(self) -> float | None:
        return sum(self.expression_words) / len(self.expression_words) if self.expression_words else None


def collect(dataset: Dataset, progress: bool = False) -> ReportData:
    """One pass over a dataset directory: every number the report shows."""
    threshold = dataset.threshold()
    data = ReportData(
        root=str(dataset.root), kind=dataset.kind,
        threshold=threshold if threshold is not None else DEFAULT_THRESHOLD,
        threshold_source="_run.json" if threshold is not None else "default (not recorded in the directory)",
        shards=len(dataset.finished_shards), unfinished=[s.stem for s in dataset.unfinished_shards],
        phrase_mode=str(dataset.run_value("phrase_mode") or "expression"),
    )
    scores: list[float] = []
    for sample in dataset.iter_samples(rejects=True, progress=progress):
        data.status_counts[sample.status] += 1
        if sample.problems:
            data.invalid_rows += 1
        scores.extend(s[6] for s in sample.dropped_boxes)
        data.dropped_boxes += len(sample.dropped_boxes)
        if sample.is_rejected:
            data.drops[(sample.stage or "(unknown stage)", sample.status)] += 1
            data.reasons[(sample.status, (sample.reason or "(no reason given)").strip())] += 1
            continue
        if sample.status != st.GROUNDED:
            continue
        caption = sample.caption or ""
        data.images += 1
        data.boxes += len(sample.noun_chunks)
        data.boxes_per_image.append(len(sample.noun_chunks))
        entities = select_entities({"caption": caption, "noun_chunks": sample.noun_chunks,
                                    "ref_exps": sample.ref_exps}, min_score=data.threshold,
                                   phrase_mode=data.phrase_mode)
        data.spans += len(entities)
        data.spans_per_caption.append(len(entities))
        data.expression_words.extend(len(caption[e.start:e.end].split()) for e in entities)
        scores.extend(s[6] for s in sample.noun_chunks)
    stats = [s for s in dataset.shard_stats() if isinstance(s.get("score_histogram"), dict)]
    if stats and len(stats) == data.shards and _same_edges(stats):
        # the build's own histogram: every post-NMS score, kept or not, as the pipeline counted it
        data.histogram_edges = list(map(float, stats[0]["score_histogram"]["edges"]))
        data.histogram_counts = [sum(int(s["score_histogram"]["counts"][i]) for s in stats)
                                 for i in range(len(data.histogram_edges) - 1)]
        data.histogram_source = "shard stats (all post-NMS scores)"
    else:
        data.histogram_edges = [i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1)]
        counts = [0] * HISTOGRAM_BINS
        for score in scores:
            counts[min(max(int(score * HISTOGRAM_BINS), 0), HISTOGRAM_BINS - 1)] += 1
        data.histogram_counts = counts
        data.histogram_source = "stored boxes" + (" and dropped_boxes" if data.dropped_boxes else "")
    if dataset.kind == "pipeline":
        from grit_pipeline.pipeline.stats import build_warnings

        data.warnings = build_warnings(str(dataset.root))
    for shard_stats in dataset.shard_stats():
        for name in ("images", "boxes", "spans"):
            if isinstance(shard_stats.get(name), int):
                data.stats_totals[name] = data.stats_totals.get(name, 0) + shard_stats[name]
        for stage, seconds in (shard_stats.get("timings_s") or {}).items():
            if isinstance(seconds, (int, float)):
                data.timings_s[stage] += float(seconds)
    return data


def _same_edges(stats: list[dict]) -> bool:
    first = stats[0]["score_histogram"].get("edges")
    return all(s["score_histogram"].get("edges") == first and
               len(s["score_histogram"].get("counts", [])) == len(first) - 1 for s in stats)


def evaluate_truth(build_dir: str | Path, truth_dir: str | Path) -> dict[str, Any]:
    """Precision/recall of the build against synthetic or hand-labelled truth (``grit evaluate-grounding``)."""
    try:
        from grit_pipeline.evaluate import evaluate_grounding
    except ImportError as error:
        raise RuntimeError(f"--truth needs grit_pipeline.evaluate, which is not available: {error}") from error
    try:
        return evaluate_grounding(build_dir, truth_dir)
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"--truth {truth_dir}: {error}") from error


# ---- plots ------------------------------------------------------------------------------------
def _plots(data: ReportData, out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def save(fig, name: str) -> None:
        path = out_dir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path.with_name(path.name + ".tmp.png"), dpi=100)
        plt.close(fig)
        path.with_name(path.name + ".tmp.png").replace(path)
        written[name] = path

    # 1. box scores with the threshold
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    edges, counts = data.histogram_edges, data.histogram_counts
    widths = [b - a for a, b in zip(edges, edges[1:])]
    colours = ["#3c9d4e" if a >= data.threshold else "#b9b9b9" for a in edges[:-1]]
    ax.bar(edges[:-1], counts, width=widths, align="edge", color=colours, edgecolor="white")
    ax.axvline(data.threshold, color="#d62728", linestyle="--", linewidth=1.5)
    top = max(counts) if counts and max(counts) > 0 else 1
    ax.set_ylim(0, top * 1.08)
    if not any(counts):
        ax.text(0.3, 0.5, "no boxes scored", ha="center", va="center", transform=ax.transAxes)
    ax.text(data.threshold, top * 0.97, f" threshold {data.threshold:g} ", color="#d62728", va="top",
            ha="right" if data.threshold > 0.5 else "left", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0, 1)
    ax.set_xlabel("box score (kept: > threshold; grey: dropped)")
    ax.set_ylabel("boxes")
    ax.set_title(f"Box scores ({data.histogram_source})", fontsize=10)
    save(fig, "box_scores")

    def integer_histogram(values: list[int], name: str, title: str, xlabel: str, ylabel: str) -> None:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        if values:
            tally = Counter(values)
            xs = list(range(min(tally), max(tally) + 1))
            ax.bar(xs, [tally.get(x, 0) for x in xs], color="#4363d8", width=0.8)
            if len(xs) <= 30:
                ax.set_xticks(xs)
            mean = sum(values) / len(values)
            ax.axvline(mean, color="#f58231", linestyle="--", linewidth=1.2)
            ax.text(mean, ax.get_ylim()[1] * 0.97, f" mean {mean:.2f} ", color="#f58231", va="top",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax.text(0.5, 0.5, "no grounded samples", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        save(fig, name)

    integer_histogram(data.boxes_per_image, "boxes_per_image", "Boxes per image (grounded samples)",
                      "boxes", "images")
    integer_histogram(data.expression_words, "expression_words",
                      f"Referring expression length (paper: mean {PAPER_TOTALS['expression_words']} words)",
                      "words", "expressions")
    integer_histogram(data.spans_per_caption, "spans_per_caption", "Linked text spans per caption",
                      "spans (training-text entities)", "captions")

    # 5. rejects per stage, split by status
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    if data.drops:
        stages = sorted({stage for stage, _ in data.drops}, key=lambda s: -sum(
            n for (stage, _), n in data.drops.items() if stage == s))
        statuses = sorted({status for _, status in data.drops})
        left = [0] * len(stages)
        palette = ["#e6194b", "#f58231", "#911eb4", "#4363d8", "#9a6324", "#808000", "#000075", "#17becf"]
        for i, status in enumerate(statuses):
            values = [data.drops.get((stage, status), 0) for stage in stages]
            ax.barh(stages, values, left=left, color=palette[i % len(palette)], label=status)
            left = [a + b for a, b in zip(left, values)]
        ax.invert_yaxis()
        ax.legend(fontsize=8, loc="lower right")
        ax.set_xlabel("samples dropped")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.text(0.5, 0.5, "no rejected samples", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title("Drops per stage, by status", fontsize=10)
    save(fig, "drops_per_stage")
    return written


# ---- rendering --------------------------------------------------------------------------------
_PLOT_TITLES = {
    "box_scores": "Box score histogram (threshold marked)",
    "boxes_per_image": "Boxes per image",
    "expression_words": "Expression length in words",
    "spans_per_caption": "Spans per caption",
    "drops_per_stage": "Drop reasons per stage",
}


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def table1_rows(data: ReportData) -> list[tuple[str, str, str, str, str]]:
    """(what, this dataset, per image, paper GRIT, paper per image)."""
    paper = PAPER_TOTALS
    return [
        ("images", _fmt(data.images), "", _fmt(paper["images"]), ""),
        ("boxes", _fmt(data.boxes), _fmt(_ratio(data.boxes, data.images)), _fmt(paper["boxes"]),
         _fmt(paper["boxes"] / paper["images"])),
        ("text spans", _fmt(data.spans), _fmt(_ratio(data.spans, data.images)), _fmt(paper["spans"]),
         _fmt(paper["spans"] / paper["images"])),
        ("average expression length (words)", _fmt(data.mean_expression_words), "",
         _fmt(paper["expression_words"], 1), ""),
    ]


def status_rows(data: ReportData) -> list[tuple[str, str, str]]:
    total = data.inputs
    return [(name, _fmt(n), f"{100.0 * n / total:.1f}%" if total else "")
            for name, n in sorted(data.status_counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def reason_rows(data: ReportData) -> list[tuple[str, str, str]]:
    rows = []
    for status in sorted({s for s, _ in data.reasons}):
        top = sorted(((n, r) for (s, r), n in data.reasons.items() if s == status), key=lambda x: (-x[0], x[1]))
        for n, reason in top[:TOP_REASONS]:
            rows.append((status, reason if len(reason) <= 240 else reason[:237] + "...", _fmt(n)))
    return rows


TRUTH_HEADERS = ["level", "precision", "recall", "true positives", "predictions", "truth objects",
                 "false positives (wrong box / duplicate / absent phrase / unlabelled phrase / wrong span)",
                 "wrong spans (too short / too long / shifted)"]


def truth_rows(truth: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per span level of ``grit_pipeline.evaluate.evaluate_grounding``'s result."""
    rows = []
    for level in ("noun_chunks", "ref_exps"):
        result = truth.get(level)
        if not isinstance(result, dict):
            continue
        fps = result.get("false_positives") or {}
        rows.append((level, _fmt(result.get("precision"), 4), _fmt(result.get("recall"), 4),
                     _fmt(result.get("true_positives")), _fmt(result.get("predictions")),
                     _fmt(result.get("truth_objects")),
                     " / ".join(_fmt(fps.get(k, 0)) for k in ("wrong_box", "duplicate", "absent_phrase",
                                                                 "unlabelled_phrase", "wrong_span")),
                     " / ".join(_fmt((result.get("wrong_span_kinds") or {}).get(k, 0))
                                for k in ("too_short", "too_long", "shifted")) if level == "ref_exps" else ""))
    return rows


def truth_image_rows(truth: dict[str, Any]) -> list[tuple[str, str]]:
    images = truth.get("images") or {}
    rows = [(str(k), _fmt(v)) for k, v in images.items() if isinstance(v, int) and not isinstance(v, bool)]
    rows += [(f"dropped: {k}", _fmt(v)) for k, v in (images.get("dropped_by_status") or {}).items()]
    rows += [(name, _fmt(truth[name])) for name in ("iou_threshold", "ref_char_iou") if name in truth]
    return rows


def _facts(data: ReportData) -> list[str]:
    facts = [f"source: {data.root} ({data.kind} layout, {data.shards} shard(s) read)",
             f"box threshold: {data.threshold:g} ({data.threshold_source})",
             f"samples: {data.inputs:,}; dropped boxes recorded: {data.dropped_boxes:,}"]
    if data.unfinished:
        facts.append(f"skipped {len(data.unfinished)} shard(s) without a .done marker: "
                     + ", ".join(data.unfinished[:10]) + (" ..." if len(data.unfinished) > 10 else ""))
    facts.append("text spans = the linked spans of the training text (score > threshold, identical spans "
                 "grouped, contained expressions dropped); expression length = their words")
    for name, value in data.stats_totals.items():
        if value != getattr(data, name):
            facts.append(f"warning: the shard stats files count {value:,} {name}, the rows give {getattr(data, name):,}")
    facts.extend(f"warning: {line}" for line in data.warnings)
    if data.invalid_rows:
        facts.append(f"{data.invalid_rows:,} row(s) had invalid spans, left out of the counts")
    return facts


def _html_table(headers: list[str], rows: list[tuple], cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _md_cell(value: Any) -> str:
    """Markdown table cell: HTML escaped (a renderer passes raw HTML through) and Markdown syntax neutralised."""
    text = "" if value is None else str(value)
    text = text.replace("\\", "\\\\")
    text = html.escape(text, quote=False).replace("\n", " ").replace("\r", " ")
    for ch in "|`*_[]~":
        text = text.replace(ch, "\\" + ch)
    return text


def _md_table(headers: list[str], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


TABLE1_HEADERS = ["", "this dataset", "per image", "paper GRIT (Table 1)", "paper per image"]


def render_markdown(data: ReportData, plots: dict[str, Path], plot_dir_name: str) -> str:
    parts = ["# GRIT dataset report", ""]
    parts += [f"- {_md_cell(f)}" for f in _facts(data)] + [""]
    parts += ["## Totals (Table 1 style)", "", _md_table(TABLE1_HEADERS, table1_rows(data)), ""]
    parts += ["## Samples by status", "", _md_table(["status", "samples", "share"], status_rows(data)), ""]
    if data.truth is not None:
        parts += ["## Against the truth (grit evaluate-grounding)", "", _md_table(TRUTH_HEADERS, truth_rows(data.truth)),
                  "", _md_table(["truth images", "n"], truth_image_rows(data.truth)), ""]
    parts += ["## Plots", ""]
    for name, path in plots.items():
        parts += [f"### {_PLOT_TITLES.get(name, name)}", "", f"![{_PLOT_TITLES.get(name, name)}]({plot_dir_name}/{path.name})", ""]
    if data.reasons:
        parts += ["## Most frequent reject reasons", "",
                  _md_table(["status", "reason", "samples"], reason_rows(data)), ""]
    if data.timings_s:
        parts += ["## Time per stage (summed over shards)", "",
                  _md_table(["stage", "seconds"], [(k, f"{v:.2f}") for k, v in data.timings_s.most_common()]), ""]
    return "\n".join(parts)


def render_html(data: ReportData, plots: dict[str, Path]) -> str:
    sections = [f"<ul class='facts'>{''.join(f'<li>{esc(f)}</li>' for f in _facts(data))}</ul>",
                "<h2>Totals (Table 1 style)</h2>", _html_table(TABLE1_HEADERS, table1_rows(data), "totals"),
                "<h2>Samples by status</h2>", _html_table(["status", "samples", "share"], status_rows(data), "status")]
    if data.truth is not None:
        sections += ["<h2>Against the truth (grit evaluate-grounding)</h2>",
                     _html_table(TRUTH_HEADERS, truth_rows(data.truth), "truth"),
                     _html_table(["truth images", "n"], truth_image_rows(data.truth), "truth-images")]
    sections.append("<h2>Plots</h2><div class='plots'>")
    for name, path in plots.items():
        title = _PLOT_TITLES.get(name, name)
        sections.append(f"<figure id='plot-{esc(name)}'><img src='{data_uri(path.read_bytes(), 'image/png')}' "
                        f"alt='{esc(title)}'><figcaption>{esc(title)}</figcaption></figure>")
    sections.append("</div>")
    if data.reasons:
        sections += ["<h2>Most frequent reject reasons</h2>",
                     _html_table(["status", "reason", "samples"], reason_rows(data), "reasons")]
    if data.timings_s:
        sections += ["<h2>Time per stage (summed over shards)</h2>",
                     _html_table(["stage", "seconds"], [(k, f"{v:.2f}") for k, v in data.timings_s.most_common()])]
    return fill_template(_PAGE, title=esc(f"GRIT report: {Path(data.root).name or data.root}"), css=_CSS,
                         body="\n".join(sections))


def write_report(dir: str | Path, out: str | Path | None = None, *, truth: str | Path | None = None,
                 progress: bool = False) -> Path:
    """Write ``OUT/report.html``, ``OUT/report.md`` and ``OUT/plots/*.png`` (default OUT = DIR/report);
    return the path of report.html."""
    dataset = Dataset.open(dir)
    data = collect(dataset, progress=progress)
    if truth is not None:
        data.truth = evaluate_truth(dir, truth)
    out = Path(out) if out is not None else Path(dir) / DEFAULT_REPORT_DIR
    plots = _plots(data, out / "plots")
    write_atomic(out / "report.md", render_markdown(data, plots, "plots"))
    return write_atomic(out / "report.html", render_html(data, plots))


# ---- calibration report (grit calibrate) -------------------------------------------------------------
CALIBRATION_HEADERS = ["NMS IoU", "threshold", "precision (noun chunks)", "recall (noun chunks)",
                       "precision (expressions)", "recall (expressions)", "boxes", "grounded images",
                       "boxes per grounded image"]


def calibration_rows(result: dict[str, Any], every: float = 0.05) -> list[tuple[str, ...]]:
    """Rows of a ``grit_pipeline.calibrate.sweep`` table: thresholds on multiples of ``every`` and the
    recommended one."""
    rec = result.get("recommendation") or {}
    rows = []
    for row in result.get("table", []):
        steps = row["threshold"] / every
        if abs(steps - round(steps)) > 1e-6 and row["threshold"] != rec.get("threshold"):
            continue
        nc, re_ = row["noun_chunks"], row["ref_exps"]
        rows.append((_fmt(row["nms_iou"]), f"{row['threshold']:.2f}", _fmt(nc["precision"], 4), _fmt(nc["recall"], 4),
                     _fmt(re_["precision"], 4), _fmt(re_["recall"], 4), _fmt(row["boxes"]), _fmt(row["grounded_images"]),
                     _fmt(row["boxes_per_image"])))
    return rows


def _calibration_facts(result: dict[str, Any]) -> list[str]:
    facts = [f"detector: {result.get('detector')}" + (f" (model {result['model']})" if result.get("model") else ""),
             f"input: {result.get('input') or result.get('scores_from')}; truth: {result.get('truth')}",
             f"samples scored: {result.get('samples', 0):,}; truth images: {result.get('truth_images', 0):,}; "
             f"by status: {result.get('samples_by_status')}",
             "one grounding pass with NMS off and no threshold; every threshold and NMS IoU replayed offline; "
             f"a match is box IoU >= {result.get('iou_threshold')} (expressions also character IoU >= "
             f"{result.get('ref_char_iou')} with the truth expression)"]
    rec = result.get("recommendation")
    if rec and rec.get("threshold") is not None:
        facts.append(f"recommended ({rec['by']} {rec['target']:g}, {rec['level']}): --box-threshold {rec['threshold']:g} "
                     f"--nms-iou {rec['nms_iou']:g}: precision {rec['precision']}, recall {rec['recall']}, "
                     f"{rec['boxes_per_image']} boxes per grounded image")
    elif rec:
        facts.append(f"recommendation: {rec.get('note')}")
    return facts


def write_calibration_report(result: dict[str, Any], out: str | Path, plot: str | Path | None = None) -> Path:
    """``OUT/report.html`` (plot embedded) and ``OUT/report.md`` of a calibration; the plot is
    ``OUT/pr_curve.png`` unless given. Returns the path of report.html."""
    out = Path(out)
    plot = Path(plot) if plot is not None else out / "pr_curve.png"
    title = "GRIT detector calibration"
    md = [f"# {title}", ""] + [f"- {_md_cell(f)}" for f in _calibration_facts(result)] + [""]
    if plot.is_file():
        md += [f"![precision / recall]({plot.name})", ""]
    md += ["## Precision, recall and boxes per threshold", "", _md_table(CALIBRATION_HEADERS, calibration_rows(result)), ""]
    write_atomic(out / "report.md", "\n".join(md))
    sections = [f"<ul class='facts'>{''.join(f'<li>{esc(f)}</li>' for f in _calibration_facts(result))}</ul>"]
    if plot.is_file():
        sections.append(f"<figure id='plot-pr-curve'><img src='{data_uri(plot.read_bytes(), 'image/png')}' "
                        f"alt='precision / recall'><figcaption>precision / recall over the box threshold"
                        f"</figcaption></figure>")
    sections += ["<h2>Precision, recall and boxes per threshold</h2>",
                 _html_table(CALIBRATION_HEADERS, calibration_rows(result), "calibration")]
    return write_atomic(out / "report.html", fill_template(_PAGE, title=esc(title), css=_CSS, body="\n".join(sections)))


_CSS = """
:root{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;background:#fff}
body{margin:0 auto;padding:16px 24px;max-width:1400px}
h1{font-size:22px} h2{font-size:17px;margin-top:22px;border-bottom:1px solid #ddd}
.facts{color:#444;font-size:14px}
table{border-collapse:collapse;font-size:14px;margin:6px 0}
td,th{border:1px solid #ccc;padding:3px 10px;text-align:right;vertical-align:top}
td:first-child,th:first-child{text-align:left}
table.reasons td:nth-child(2){text-align:left;max-width:700px;word-break:break-word}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px}
figure{margin:0;border:1px solid #eee;padding:6px}
figure img{width:100%;height:auto;display:block}
figcaption{font-size:13px;color:#555;text-align:center}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{title}</title>
<style>{css}</style></head>
<body>
<h1>{title}</h1>
{body}
</body></html>
"""
