"""The gallery: one static HTML page of sampled images with their boxes drawn over them.

Everything is inside the one file (images as JPEG data URIs, CSS and a little JavaScript inline), so it
opens from disk with no server and asks nothing of the network. Boxes are absolutely positioned divs whose
left/top/width/height are the record's normalised coordinates as percentages of the image, so they stay on
the right place at any zoom. Each noun chunk gets a colour; its boxes and its caption span share it, the
referring expression is underlined in it, and a box's title (hover) gives chunk, expression and score.
Rejected samples show their status, stage and reason, with the image when the input shard is on disk.

Besides a dataset directory it reads what ``grit ground`` writes (``GroundOutput``: a JSON lines file, one row per
input picture with its ``status`` and the ``image`` path), so your own pictures show the same way.
"""
from __future__ import annotations

import random
import sys
from collections import Counter
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from grit_pipeline import status as st
from grit_pipeline.tar_reader import DEFAULT_MAX_MEMBER_BYTES
from grit_pipeline.views.dataset import (
    UNGROUNDED, Dataset, DatasetError, ViewSample, clean_spans, read_images,
)
from grit_pipeline.views.html import (
    PALETTE, ImageUnavailable, data_uri, esc, fill_template, json_for_script, safe_link, thumbnail, write_atomic,
)

DEFAULT_SAMPLE = 100
DEFAULT_PER_PAGE = 20
DEFAULT_THUMB_SIZE = 512
DEFAULT_GALLERY_NAME = "_gallery.html"  # ("_": dataset readers of the build skip it)
DISPLAY_HEIGHT = 320  # CSS pixels
REJECTED = "rejected"  # --status alias: every status that is not kept
STATUS_CHOICES = (*st.ALL, UNGROUNDED, REJECTED)


@dataclass
class DrawnBox:
    index: int                      # position in noun_chunks (kept) or dropped_boxes (dropped)
    kept: bool
    chunk: tuple[int, int]
    expression: tuple[int, int] | None
    box: tuple[float, float, float, float]
    score: float
    colour: str


@dataclass
class PictureSample(ViewSample):
    """A ``grit ground`` row: a view sample whose image is a file of its own."""

    image_path: str | None = None


# a line longer than this is not one grit ground wrote
MAX_GROUND_LINE_BYTES = 16 * 1024 * 1024


class GroundOutput:
    """``grit ground``'s output file read as the gallery reads a dataset: every row a sample (its own status and
    reason; a grounded row's spans validated as a build's are), its picture the file named by ``image`` (an
    absolute path; a relative one is tried from the current folder, then from the output file's folder).
    Unreadable lines are counted in ``notes``, never a stop."""

    kind = "grit ground"
    unfinished_shards: list = []

    def __init__(self, path: Path):
        self.root = path
        self.notes: list[str] = []

    @classmethod
    def open(cls, path: str | Path) -> "GroundOutput":
        path = Path(path)
        try:
            with open(path, "rb") as handle:
                start = handle.read(1).lstrip()
        except OSError as error:
            raise DatasetError(f"{path}: cannot read ({error.strerror or error})") from None
        if start and start != b"{":
            raise DatasetError(f"{path}: not a dataset directory nor grit ground output (JSON lines)")
        return cls(path)

    def threshold(self) -> float | None:
        return None  # grit ground writes no run file; its stderr names the threshold

    def iter_samples(self, rejects: bool = True, progress: bool = False):
        bad = 0
        with open(self.root, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    if len(line) > MAX_GROUND_LINE_BYTES:
                        raise ValueError(f"longer than {MAX_GROUND_LINE_BYTES} bytes")
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError("not a JSON object")
                except (ValueError, RecursionError):
                    bad += 1
                    continue
                sample = self._sample(row, number)
                if rejects or not sample.is_rejected:
                    yield sample
        if bad:
            self.notes.append(f"{bad} line(s) of {self.root.name} are not JSON objects; left out")
            print(f"warning: {self.root}: {bad} line(s) are not JSON objects; left out", file=sys.stderr)

    def _sample(self, row: dict, number: int) -> PictureSample:
        key = str(row.get("key") if row.get("key") is not None else f"line-{number}")
        caption = row.get("caption")
        problems: list[str] = []
        if caption is not None and not isinstance(caption, str):
            problems.append(f"caption is not text ({type(caption).__name__})")
            caption = str(caption)
        spans = {name: clean_spans(key, name, row.get(name), caption, problems)
                 for name in ("noun_chunks", "ref_exps", "dropped_boxes")}
        status = row.get("status") if isinstance(row.get("status"), str) else (
            st.GROUNDED if spans["noun_chunks"] else st.NO_BOX)
        size = {name: row[name] if isinstance(row.get(name), int) and not isinstance(row.get(name), bool) else None
                for name in ("width", "height")}
        return PictureSample(
            key=key, status=status, caption=caption, url=_str(row.get("url")), **size, **spans,
            reason=_str(row.get("reason")), stage=_str(row.get("stage")), shard=self.root.name,
            problems=problems, image_path=self._image_path(row.get("image")),
        )

    def _image_path(self, value) -> str | None:
        if not isinstance(value, str) or not value:
            return None
        path = Path(value)
        if not path.is_absolute() and not path.exists():
            path = self.root.parent / path
        return str(path)


def _str(value) -> str | None:
    return None if value is None else str(value)


def open_source(path: str | Path):
    """A dataset directory (``Dataset``) or a ``grit ground`` output file (``GroundOutput``)."""
    return GroundOutput.open(path) if Path(path).is_file() else Dataset.open(path)


def default_gallery_path(path: str | Path) -> Path:
    """Where the gallery of ``path`` goes without ``--out``: DIR/_gallery.html, or FILE_gallery.html beside FILE."""
    path = Path(path)
    if path.is_file():
        return path.with_name(f"{path.stem}_gallery.html")
    return path / DEFAULT_GALLERY_NAME


def expand_statuses(statuses: Iterable[str] | None) -> set[str] | None:
    """``--status`` values (repeatable, comma separated) -> a set; ``rejected`` means every non-kept one."""
    if not statuses:
        return None
    out: set[str] = set()
    for value in statuses:
        for name in str(value).split(","):
            name = name.strip()
            if not name:
                continue
            if name == REJECTED:
                out.update(s for s in st.ALL if s not in st.KEPT)
            elif name in STATUS_CHOICES:
                out.add(name)
            else:
                raise ValueError(f"unknown status {name!r}; choose from {', '.join(STATUS_CHOICES)}")
    return out or None


def sample_dataset(dataset: Dataset, sample: int = DEFAULT_SAMPLE, statuses: set[str] | None = None,
                   seed: int = 0, progress: bool = False) -> tuple[list[ViewSample], Counter, Counter]:
    """A uniform random sample (reservoir, deterministic for a seed) of the samples whose status is in
    ``statuses``, in random order. Returns (chosen, counts of all statuses, counts of matching ones)."""
    rng = random.Random(seed)
    chosen: list[ViewSample] = []
    all_counts: Counter = Counter()
    matching: Counter = Counter()
    seen = 0
    for item in dataset.iter_samples(rejects=True, progress=progress):
        all_counts[item.status] += 1
        if statuses is not None and item.status not in statuses:
            continue
        matching[item.status] += 1
        seen += 1
        if len(chosen) < sample:
            chosen.append(item)
        else:
            slot = rng.randrange(seen)
            if slot < sample:
                chosen[slot] = item
    rng.shuffle(chosen)
    return chosen, all_counts, matching


def boxes_to_draw(sample: ViewSample, min_score: float | None = None) -> list[DrawnBox]:
    """Kept boxes (score >= min_score when given), then dropped ones (below the build's threshold or
    below min_score); colours by noun chunk, in the order chunks first appear in the caption."""
    entries = []
    for j, span in enumerate(sample.noun_chunks):
        ref = sample.ref_exps[j] if j < len(sample.ref_exps) else None
        kept = min_score is None or span[6] >= min_score
        entries.append((j, kept, span, ref))
    for j, span in enumerate(sample.dropped_boxes):
        entries.append((j, False, span, None))
    chunks = sorted({(int(s[0]), int(s[1])) for _, kept, s, _ in entries if kept})
    chunks += sorted({(int(s[0]), int(s[1])) for _, kept, s, _ in entries if not kept} - set(chunks))
    colour = {chunk: PALETTE[i % len(PALETTE)] for i, chunk in enumerate(chunks)}
    out = []
    for j, kept, span, ref in entries:
        chunk = (int(span[0]), int(span[1]))
        out.append(DrawnBox(
            index=j, kept=kept, chunk=chunk,
            expression=(int(ref[0]), int(ref[1])) if ref is not None else None,
            box=(span[2], span[3], span[4], span[5]), score=float(span[6]), colour=colour[chunk],
        ))
    return out


def highlight_caption(caption: str, boxes: Sequence[DrawnBox]) -> str:
    """The caption as escaped HTML with each noun chunk on its colour's background (dashed outline for a
    chunk with only dropped boxes) and each referring expression underlined in its chunk's colour."""
    kept_chunks: dict[tuple[int, int], DrawnBox] = {}
    dropped_chunks: dict[tuple[int, int], DrawnBox] = {}
    expressions: dict[tuple[int, int], DrawnBox] = {}
    for box in boxes:
        (kept_chunks if box.kept else dropped_chunks).setdefault(box.chunk, box)
        if box.kept and box.expression:
            expressions.setdefault(box.expression, box)
    for chunk in kept_chunks:
        dropped_chunks.pop(chunk, None)
    cuts = {0, len(caption)}
    for spans in (kept_chunks, dropped_chunks, expressions):
        for start, end in spans:
            cuts.update((start, end))
    cuts = sorted(c for c in cuts if 0 <= c <= len(caption))
    parts = []
    for a, b in zip(cuts, cuts[1:]):
        text = esc(caption[a:b])

        def innermost(spans):
            covering = [s for s in spans if s[0] <= a and b <= s[1]]
            return min(covering, key=lambda s: s[1] - s[0]) if covering else None

        chunk = innermost(kept_chunks)
        dropped = innermost(dropped_chunks) if chunk is None else None
        expression = innermost(expressions)
        if chunk is None and dropped is None and expression is None:
            parts.append(text)
            continue
        classes, style, attrs = ["seg"], [], []
        if chunk is not None:
            classes.append("nc")
            style.append(f"--c:{kept_chunks[chunk].colour}")
            attrs.append(f'data-chunk="{chunk[0]}:{chunk[1]}"')
        elif dropped is not None:
            classes.append("nc-dropped")
            style.append(f"--c:{dropped_chunks[dropped].colour}")
            attrs.append(f'data-chunk="{dropped[0]}:{dropped[1]}"')
        if expression is not None:
            classes.append("re")
            style.append(f"--u:{expressions[expression].colour}")
        parts.append(f'<span class="{" ".join(classes)}" style="{";".join(style)}" {" ".join(attrs)}>{text}</span>')
    return "".join(parts)


def _box_title(caption: str, box: DrawnBox) -> str:
    chunk = caption[box.chunk[0]:box.chunk[1]]
    title = f"{chunk}"
    if box.expression and box.expression != box.chunk:
        title += f" \u2192 {caption[box.expression[0]:box.expression[1]]}"
    title += f" \u00b7 score {box.score:.3f}"
    if not box.kept:
        title += " (dropped)"
    return title


def _pct(value: float) -> str:
    return f"{100.0 * value:.4f}%"


def render_card(sample: ViewSample, image: tuple[str, int, int] | None, image_note: str | None,
                min_score: float | None) -> str:
    """One sample as an HTML card: image (or placeholder) with boxes, caption, box list, status."""
    caption = sample.caption if sample.caption is not None else ""
    boxes = boxes_to_draw(sample, min_score) if sample.caption is not None else []
    box_html = []
    for box in boxes:
        x1, y1, x2, y2 = box.box
        kind = "kept" if box.kept else "dropped"
        box_html.append(
            f'<div class="box {kind}" data-kind="{kind}" data-index="{box.index}" '
            f'data-chunk="{box.chunk[0]}:{box.chunk[1]}" '
            f'style="left:{_pct(x1)};top:{_pct(y1)};width:{_pct(x2 - x1)};height:{_pct(y2 - y1)};--c:{box.colour}" '
            f'title="{esc(_box_title(caption, box))}"><span class="tag">{box.score:.2f}</span></div>'
        )
    if image is not None:
        uri, width, height = image
        # every image DISPLAY_HEIGHT px high (scaled up or down) unless the card is too narrow for it
        frame = (f'<div class="media"><div class="frame" style="width:{DISPLAY_HEIGHT * width / height:.1f}px">'
                 f'<img src="{uri}" width="{width}" height="{height}" '
                 f'alt="{esc(sample.key)}">{"".join(box_html)}</div></div>')
    else:
        w, h = (sample.width, sample.height) if sample.width and sample.height else (4, 3)
        frame = (f'<div class="frame placeholder" style="aspect-ratio:{w}/{h}">'
                 f'<p class="noimage">{esc(image_note or "image not available")}</p>{"".join(box_html)}</div>')

    # one legend line per (chunk, expression, kept/dropped), with the scores of its boxes
    groups: dict[tuple, list[DrawnBox]] = {}
    for box in boxes:
        groups.setdefault((box.kept, box.chunk, box.expression), []).append(box)
    legend = []
    for (kept, chunk, expression), members in sorted(groups.items(), key=lambda g: (not g[0][0], g[0][1])):
        expr = ""
        if expression and expression != chunk:
            expr = f' \u2192 <q>{esc(caption[expression[0]:expression[1]])}</q>'
        scores = ", ".join(f"{b.score:.3f}" for b in members)
        legend.append(
            f'<li class="{"kept" if kept else "dropped"}" data-chunk="{chunk[0]}:{chunk[1]}" '
            f'style="--c:{members[0].colour}"><i class="sw"></i><q>{esc(caption[chunk[0]:chunk[1]])}</q>{expr} '
            f'<span class="score">{scores}</span>{"" if kept else " <em>dropped</em>"}</li>'
        )
    rejected = sample.is_rejected
    status_class = "ok" if not rejected else "rej"
    head = (f'<div class="head"><span class="status {status_class}">{esc(sample.status)}</span>'
            f'<span class="key" title="shard {esc(sample.shard)}">{esc(sample.key)}</span></div>')
    caption_html = (highlight_caption(caption, boxes) if sample.caption is not None
                    else '<em class="missing">no caption</em>')
    body = [head, f'<p class="caption">{caption_html}</p>']
    if rejected or sample.reason:
        stage = f" at stage <b>{esc(sample.stage)}</b>" if sample.stage else ""
        body.append(f'<p class="reason"><b>{esc(sample.status)}</b>{stage}: '
                    f'<span class="reason-text">{esc(sample.reason or "(no reason given)")}</span></p>')
    if legend:
        body.append(f'<ol class="legend">{"".join(legend)}</ol>')
    if sample.problems:
        body.append('<p class="problems">not drawn: ' + "; ".join(esc(p) for p in sample.problems[:5])
                    + (" ..." if len(sample.problems) > 5 else "") + "</p>")
    if sample.url:
        body.append(f'<p class="url">{safe_link(sample.url)}</p>')
    n_kept = sum(b.kept for b in boxes)
    return (f'<article class="card {status_class}" data-key="{esc(sample.key)}" data-status="{esc(sample.status)}" '
            f'data-shard="{esc(sample.shard)}" data-boxes="{n_kept}">{frame}<div class="text">{"".join(body)}</div>'
            f'</article>')


def _read_picture(path: str) -> tuple[bytes | None, str | None]:
    """A ``grit ground`` row's image file: (bytes, None) or (None, why not)."""
    try:
        size = Path(path).stat().st_size
        if size > DEFAULT_MAX_MEMBER_BYTES:
            return None, f"image not shown: {Path(path).name} is {size} bytes, over {DEFAULT_MAX_MEMBER_BYTES}"
        return Path(path).read_bytes(), None
    except OSError as error:
        return None, f"image not available: {path}: {error.strerror or error}"


def _embed_images(samples: Sequence[ViewSample], thumb_size: int) -> dict[int, tuple[tuple[str, int, int] | None, str | None]]:
    raw = read_images(samples)
    out = {}
    for i, sample in enumerate(samples):
        data = raw.get((sample.image_tar, sample.key))
        if isinstance(sample, PictureSample):
            if sample.image_path is None:
                out[i] = (None, "image not available: the row names no image file")
                continue
            data, note = _read_picture(sample.image_path)
            if data is None:
                out[i] = (None, note)
                continue
        if data is None:
            if sample.status == st.DOWNLOAD_ERROR:
                note = "not downloaded"
            elif sample.image_tar is None:
                note = "image not available: the input shard was not found on disk"
            else:
                note = f"image not available: {sample.key} is not in {Path(sample.image_tar).name}"
            out[i] = (None, note)
            continue
        try:
            jpeg, width, height = thumbnail(data, thumb_size)
            out[i] = ((data_uri(jpeg, "image/jpeg"), width, height), None)
        except ImageUnavailable as error:
            out[i] = (None, f"image cannot be decoded ({error})")
    return out


def render_gallery(dataset: Dataset, samples: Sequence[ViewSample], *, all_counts: Counter, matching: Counter,
                   per_page: int = DEFAULT_PER_PAGE, min_score: float | None = None,
                   thumb_size: int = DEFAULT_THUMB_SIZE, seed: int = 0, statuses: set[str] | None = None,
                   title: str | None = None) -> str:
    images = _embed_images(samples, thumb_size)
    cards = [render_card(s, *images[i], min_score=min_score) for i, s in enumerate(samples)]
    threshold = dataset.threshold()
    title = title or f"GRIT gallery: {dataset.root.name or dataset.root}"
    total = sum(all_counts.values())
    count_rows = "".join(
        f'<tr><td>{esc(name)}</td><td>{all_counts[name]}</td><td>{sum(1 for s in samples if s.status == name)}</td></tr>'
        for name in sorted(all_counts, key=lambda n: (-all_counts[n], n))
    )
    notes = []
    notes.extend(getattr(dataset, "notes", []))
    if dataset.unfinished_shards:
        notes.append(f"{len(dataset.unfinished_shards)} shard(s) without a .done marker were skipped "
                     f"(still being written or failed).")
    config = {"perPage": max(1, int(per_page)), "count": len(samples)}
    facts = [
        f"source <code>{esc(dataset.root)}</code> ({esc(dataset.kind)} layout)",
        f"{len(samples)} of {sum(matching.values())} matching samples, seed {seed}",
        "statuses: " + (esc(", ".join(sorted(statuses))) if statuses else "all"),
    ]
    if threshold is not None:
        facts.append(f"build box threshold {threshold:g}")
    if min_score is not None:
        facts.append(f"boxes scoring below {min_score:g} are drawn as dropped")
    return fill_template(_PAGE,
        title=esc(title),
        css=_CSS,
        facts=" \u00b7 ".join(facts),
        total=total,
        count_rows=count_rows,
        notes="".join(f"<p class='note'>{esc(n)}</p>" for n in notes),
        cards="\n".join(cards) if cards else "<p class='empty'>No samples match.</p>",
        config=json_for_script(config),
        js=_JS,
    )


def write_gallery(dir: str | Path, out: str | Path | None = None, *, sample: int = DEFAULT_SAMPLE,
                  statuses: Iterable[str] | None = None, min_score: float | None = None, seed: int = 0,
                  per_page: int = DEFAULT_PER_PAGE, thumb_size: int = DEFAULT_THUMB_SIZE,
                  title: str | None = None, progress: bool = False) -> Path:
    """Write the gallery of a dataset directory or a ``grit ground`` output file to ``out`` (default
    ``DIR/_gallery.html``, ``FILE_gallery.html`` beside a file); return its path."""
    if sample < 0:
        raise ValueError("sample must be >= 0")
    if per_page < 1:
        raise ValueError("per_page must be >= 1")
    if min_score is not None and not 0.0 <= min_score <= 1.0:
        raise ValueError("min_score must be in [0, 1]")
    dataset = open_source(dir)
    wanted = expand_statuses(statuses)
    samples, all_counts, matching = sample_dataset(dataset, sample, wanted, seed, progress=progress)
    page = render_gallery(dataset, samples, all_counts=all_counts, matching=matching, per_page=per_page,
                          min_score=min_score, thumb_size=thumb_size, seed=seed, statuses=wanted, title=title)
    out = Path(out) if out is not None else default_gallery_path(dir)
    if progress:
        print(f"gallery: {len(samples)} samples, {len(page) / 1e6:.1f} MB", file=sys.stderr)
    return write_atomic(out, page)


_CSS = """
:root{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;background:#f4f4f6}
body{margin:0;padding:16px 24px}
h1{font-size:20px;margin:0 0 6px}
.facts{color:#555;font-size:13px;margin:0 0 10px}
table.counts{border-collapse:collapse;font-size:13px;margin:6px 0}
table.counts td,table.counts th{border:1px solid #ccc;padding:2px 8px;text-align:right}
table.counts td:first-child,table.counts th:first-child{text-align:left}
.bar{display:flex;gap:12px;align-items:center;flex-wrap:wrap;margin:10px 0;font-size:14px}
.bar button{padding:3px 10px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;overflow:hidden;display:flex;flex-direction:column}
.card[hidden]{display:none}
.card.rej{border-color:#e0a0a0}
.grid{align-items:start}
.media{background:#e9e9ec;line-height:0}
.frame{position:relative;line-height:0;max-width:100%;margin:0 auto}
.frame img{display:block;width:100%;height:auto}
.frame.placeholder{width:100%;background:repeating-linear-gradient(45deg,#eee,#eee 8px,#e2e2e2 8px,#e2e2e2 16px);min-height:60px}
.noimage{position:absolute;inset:0;margin:0;display:flex;align-items:center;justify-content:center;
 line-height:1.3;font-size:13px;color:#666;padding:8px;text-align:center}
.box{position:absolute;box-sizing:border-box;border:2px solid var(--c);line-height:1}
.box .tag{position:absolute;left:-2px;top:-2px;background:var(--c);color:#fff;font-size:10px;padding:1px 3px;
 pointer-events:none;opacity:.9}
.box.dropped{border-style:dashed;border-width:2px;display:none}
body.show-dropped .box.dropped,.card.rej .box.dropped{display:block}
.box.hl{border-width:4px;z-index:2}
.text{padding:8px 10px;font-size:14px;line-height:1.45}
.head{display:flex;justify-content:space-between;gap:8px;font-size:12px;color:#666}
.status{font-weight:600;padding:0 6px;border-radius:3px}
.status.ok{background:#dff2df;color:#1b6b1b}
.status.rej{background:#f8dcdc;color:#8b1a1a}
.caption{margin:6px 0;white-space:pre-wrap;word-break:break-word}
.seg.nc{background:color-mix(in srgb,var(--c) 28%,transparent);border-radius:2px}
.seg.nc-dropped{outline:1px dashed var(--c)}
.seg.re{text-decoration:underline;text-decoration-color:var(--u);text-decoration-thickness:2px;text-underline-offset:3px}
.seg.hl{outline:2px solid var(--c)}
.legend{margin:4px 0;padding-left:20px;font-size:12px;color:#444}
.legend li.dropped{display:none;color:#888}
body.show-dropped .legend li.dropped,.card.rej .legend li.dropped{display:list-item}
.sw{display:inline-block;width:10px;height:10px;background:var(--c);margin-right:5px;border-radius:2px}
.score{color:#666;font-variant-numeric:tabular-nums}
.reason{margin:4px 0;font-size:13px;color:#8b1a1a;word-break:break-word}
.problems{font-size:12px;color:#a05a00}
.url{font-size:11px;color:#888;word-break:break-all;margin:4px 0 0}
.note{color:#a05a00;font-size:13px}
"""

_JS = """
(function () {
  var cfg = JSON.parse(document.getElementById('grit-config').textContent);
  var cards = Array.prototype.slice.call(document.querySelectorAll('.card'));
  var pages = Math.max(1, Math.ceil(cards.length / cfg.perPage));
  var current = 0;
  function show(p) {
    current = Math.min(Math.max(p, 0), pages - 1);
    cards.forEach(function (card, i) { card.hidden = Math.floor(i / cfg.perPage) !== current; });
    document.querySelectorAll('.pageinfo').forEach(function (el) {
      el.textContent = 'page ' + (current + 1) + ' of ' + pages;
    });
    document.querySelectorAll('.prev').forEach(function (b) { b.disabled = current === 0; });
    document.querySelectorAll('.next').forEach(function (b) { b.disabled = current === pages - 1; });
    document.querySelectorAll('.jump').forEach(function (s) { s.value = String(current); });
    try { history.replaceState(null, '', '#page=' + (current + 1)); } catch (e) {}
  }
  document.querySelectorAll('.jump').forEach(function (s) {
    for (var i = 0; i < pages; i++) {
      var o = document.createElement('option'); o.value = String(i); o.textContent = String(i + 1); s.appendChild(o);
    }
    s.addEventListener('change', function () { show(parseInt(s.value, 10)); window.scrollTo(0, 0); });
  });
  document.querySelectorAll('.prev').forEach(function (b) { b.addEventListener('click', function () { show(current - 1); }); });
  document.querySelectorAll('.next').forEach(function (b) { b.addEventListener('click', function () { show(current + 1); }); });
  var toggle = document.getElementById('show-dropped');
  if (toggle) toggle.addEventListener('change', function () { document.body.classList.toggle('show-dropped', toggle.checked); });
  function mark(target, on) {
    var el = target.closest ? target.closest('[data-chunk]') : null;
    if (!el) return;
    var card = el.closest('.card');
    var chunk = el.getAttribute('data-chunk');
    card.querySelectorAll('[data-chunk]').forEach(function (x) {
      if (x.getAttribute('data-chunk') === chunk) x.classList.toggle('hl', on);
    });
  }
  document.addEventListener('mouseover', function (e) { mark(e.target, true); });
  document.addEventListener('mouseout', function (e) { mark(e.target, false); });
  var m = /page=(\\d+)/.exec(location.hash);
  show(m ? parseInt(m[1], 10) - 1 : 0);
  window.gritGallery = {show: show, pages: pages};
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title>
<style>{css}</style></head>
<body>
<h1>{title}</h1>
<p class="facts">{facts}</p>
<details><summary>{total} samples in the source, by status</summary>
<table class="counts"><tr><th>status</th><th>in the source</th><th>shown</th></tr>{count_rows}</table></details>
{notes}
<div class="bar"><button class="prev" type="button">&larr; prev</button><span class="pageinfo"></span>
<button class="next" type="button">next &rarr;</button><label>go to page <select class="jump"></select></label>
<label><input type="checkbox" id="show-dropped"> show dropped boxes on grounded samples (below threshold, dashed; always shown on rejects)</label></div>
<main class="grid">
{cards}
</main>
<div class="bar"><button class="prev" type="button">&larr; prev</button><span class="pageinfo"></span>
<button class="next" type="button">next &rarr;</button></div>
<script type="application/json" id="grit-config">{config}</script>
<script>{js}</script>
</body></html>
"""
