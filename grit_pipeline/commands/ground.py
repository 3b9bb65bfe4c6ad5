"""`grit ground`: ground your own pictures + captions with a detector, GRIT records out (no cluster needed).

Input: JSON lines ``{"key": ..., "image": "path/to.jpg", "caption": ...}`` (``--input FILE``, or stdin), or a
folder of images with a same-name ``.txt`` caption each (``--images DIR``, img2dataset's layout; a same-name
``.json`` with img2dataset metadata is used for the letterbox check). Output: one JSON line per input, in
input order: the GRIT record (GrIT-20M columns) plus ``status``, ``reason`` for rejects and ``image`` (the
absolute path of the input image, so ``grit gallery OUTPUT`` can show it). ``--draw DIR`` also writes each grounded
image with its boxes and phrases drawn (``grit_pipeline.views.draw``: one colour per noun chunk).

A JSON-lines / folder source and a JSON-lines sink around the pipeline's own stages on the local engine
(``pipeline.stages.FUSED``, ``pipeline.engine_local.run_local``): ``grit ground`` and ``grit run`` ground,
threshold and reject by the same code.
"""
from __future__ import annotations

import itertools
import json
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

HELP = "ground captions' noun chunks in your images with a detector; JSON lines in, GRIT records out"

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
_META_KEYS = ("width", "height", "original_width", "original_height", "resize_mode")
# PipelineConfig fields that are grit ground flags too (its --input/--output are JSON lines, not shards)
SHARED_SETTINGS = ("detector", "model", "dtype", "device", "box_threshold", "nms_iou", "spacy_model", "max_pixels")
INGEST = "ingest"  # the stage name of rejects found while reading the input, as the pipeline's ingest


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", "-i", default=None,
                        help="JSON lines file with key/image/caption per line ('-' or absent: stdin). Relative "
                             "image paths are tried from the current folder, then from the file's folder")
    source.add_argument("--images", default=None, metavar="DIR",
                        help="folder of images, each with a same-name .txt caption (and optional .json metadata)")
    parser.add_argument("--output", "-o", default="-", help="output JSON lines file (default: stdout)")
    parser.add_argument("--draw", default=None, metavar="DIR",
                        help="also write each grounded image into DIR with its boxes and phrases drawn (one colour "
                             "per noun chunk; KEY.jpg for JPEG inputs, KEY.png for the others)")
    from grit_pipeline.config_flags import add_config_arguments
    from grit_pipeline.pipeline.config import PipelineConfig

    # the settings grit ground shares with grit run: the same flags, help texts and defaults
    add_config_arguments(parser, PipelineConfig, only=SHARED_SETTINGS)
    parser.add_argument("--batch-size", type=int, default=PipelineConfig.ground_batch_size,
                        help="images (x prompts) per detector forward pass (grit run: --ground-batch-size)")
    parser.add_argument("--min-score", type=float, default=None,
                        help="hf: raw boxes below this score are not reported at all (default 0.05)")
    parser.add_argument("--image-batching", choices=("exact", "pad"), default=None,
                        help="hf: exact (default: a batch holds images of one preprocessed size, results equal "
                             "one-at-a-time) or pad (full batches padded to the largest image; faster for "
                             "Grounding DINO on mixed aspect ratios, boxes may shift slightly)")
    parser.add_argument("--dropped", action="store_true",
                        help="also write dropped_boxes: boxes that survived NMS but scored <= the threshold")
    parser.add_argument("--workers", type=int, default=2, help="threads reading and decoding images ahead")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many input samples")


def run(args) -> int:
    from grit_pipeline.config_flags import config_from_args
    from grit_pipeline.grounding import check_thresholds
    from grit_pipeline.pipeline.config import PipelineConfig
    from grit_pipeline.pipeline.preflight import check_detector, check_spacy_model

    options = {name: value for name, value in (("min_score", args.min_score), ("image_batching", args.image_batching))
               if value is not None}
    config = config_from_args(PipelineConfig, args, only=SHARED_SETTINGS, ground_batch_size=args.batch_size,
                              engine="local", progress=False)
    try:
        check_thresholds(config.box_threshold, config.nms_iou)
        problems = config.number_problems()
        if problems:
            raise ValueError(problems[0].replace("ground_batch_size", "--batch-size"))
        if args.min_score is not None and args.min_score > config.box_threshold:
            raise ValueError(f"--min-score {args.min_score} above --box-threshold {config.box_threshold} would "
                             "hide boxes that pass the threshold")
        config = config.replace(model=config.model or None,
                                detector_options=_supported_options(config.detector, options))
        # the checks grit run makes before starting: detector and model, spaCy pipeline (one line each)
        check_detector(config)
        check_spacy_model(config.spacy_model)
        entries = _read_entries(args)
        drawer = _Drawer(Path(args.draw)) if args.draw else None
    except (ValueError, OSError) as error:
        print(f"grit ground: {error}", file=sys.stderr)
        return 2
    print(f"[ground] detector {config.detector}" + (f" (model {config.model})" if config.model else "") +
          f"; box_threshold={config.box_threshold} nms_iou={config.nms_iou}", file=sys.stderr)
    out = sys.stdout if args.output in (None, "-") else open(args.output, "w", encoding="utf-8")
    source = _ImageSource(entries, chunk_size=max(4 * config.ground_batch_size, 32), workers=args.workers)
    sink = _JsonLinesSink(out, with_dropped=args.dropped, image_paths=source.paths, drawer=drawer)
    try:
        _ground(config, source, sink)
    except Exception as error:  # noqa: BLE001 - a model that does not load, a lost device: one line, no traceback
        what = "cannot load the detector or spaCy pipeline" if not sink.counts else "stopped"
        print(f"grit ground: {what}: {type(error).__name__}: {error}", file=sys.stderr)
        return 2 if not sink.counts else 1
    finally:
        source.close()
        if out is not sys.stdout:
            out.close()
    summary = {"samples": sum(sink.counts.values()), "counts": dict(sorted(sink.counts.items())),
               "seconds": round(time.perf_counter() - sink.started, 2)}
    if drawer is not None:
        summary["drawn"] = {"folder": str(drawer.folder), "images": drawer.drawn, "not_drawn": drawer.not_drawn}
    print(json.dumps(summary), file=sys.stderr)
    return 0


def _ground(config, source, sink) -> None:
    """The pipeline's own stages (noun chunks, grounding, expansion) on the local engine, chunk by chunk."""
    from grit_pipeline.pipeline.engine_local import run_local
    from grit_pipeline.pipeline.progress import Progress
    from grit_pipeline.pipeline.stages import FUSED

    job = SimpleNamespace(source=source, progress=Progress("ground", 0, enabled=False), write=sink.write)
    run_local(config, job, FUSED, source.chunks())


def _supported_options(detector: str, options: dict) -> dict:
    """The backend-specific flags the backend takes; one it does not take is reported, not fatal."""
    from grit_pipeline.detectors.base import detector_parameters

    accepted = detector_parameters(detector)
    if accepted is None:
        return options
    ignored = sorted(set(options) - accepted)
    if ignored:
        print(f"[ground] note: detector {detector!r} ignores {', '.join(ignored)}", file=sys.stderr)
    return {k: v for k, v in options.items() if k in accepted}


# --- input ----------------------------------------------------------------------------------------------

def _read_entries(args):
    """Input entries (key, image path, caption, meta, url, id), or unreadable lines (status/reason), in order."""
    limit = args.limit
    if args.images:
        folder = Path(args.images)
        if not folder.is_dir():
            raise ValueError(f"--images {folder} is not a folder")
        iterator = _folder_entries(folder)
    else:
        if args.input in (None, "-"):
            iterator = _jsonl_entries(sys.stdin, None)
        else:
            path = Path(args.input)
            if not path.is_file():
                raise ValueError(f"--input {path} does not exist")
            iterator = _jsonl_entries(open(path, encoding="utf-8"), path.parent)
    return iterator if limit is None else itertools.islice(iterator, limit)


def _jsonl_entries(lines, base: Path | None):
    from grit_pipeline import status

    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
        except (ValueError, RecursionError) as error:  # RecursionError: JSON nested too deeply
            yield {"key": f"line-{number}", "status": status.SHARD_ERROR,
                   "reason": f"input line {number} is not a JSON object: {error}"}
            continue
        key = row.get("key", row.get("id", f"line-{number}"))
        image = row.get("image")
        path = None
        if isinstance(image, str) and image:
            path = Path(image)
            if not path.is_absolute() and not path.exists() and base is not None:
                path = base / path
        meta = row.get("meta") if isinstance(row.get("meta"), dict) else {k: row[k] for k in _META_KEYS if k in row}
        yield {"key": str(key), "image": path, "caption": row.get("caption"), "meta": meta,
               "url": row.get("url"), "id": row.get("id")}


def _folder_entries(folder: Path):
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        meta, caption = {}, None
        json_path, txt_path = path.with_suffix(".json"), path.with_suffix(".txt")
        if json_path.is_file():
            try:
                meta = json.loads(json_path.read_text(encoding="utf-8"))
            except (ValueError, OSError, RecursionError):
                meta = {}
            caption = meta.get("caption") if isinstance(meta, dict) else None
        if txt_path.is_file():
            caption = txt_path.read_text(encoding="utf-8").strip()
        key = str(path.relative_to(folder).with_suffix(""))
        meta = meta if isinstance(meta, dict) else {}
        yield {"key": key, "image": path, "caption": caption, "meta": meta, "url": meta.get("url"),
               "id": meta.get("id") if isinstance(meta.get("id"), int) else None}


def _entry_sample(entry) -> dict:
    """One input entry -> a pipeline sample, as ingest makes one from a shard: finished (with its status)
    when the line is unreadable, the image letterboxed or its file unreadable; else with the image bytes."""
    from grit_pipeline import status
    from grit_pipeline.images import letterbox_reason
    from grit_pipeline.pipeline.sample import finish, new_sample

    sample = new_sample(key=entry["key"], caption=entry.get("caption"), url=entry.get("url"), id=entry.get("id"))
    if "status" in entry:
        return finish(sample, entry["status"], entry["reason"], INGEST)
    reason = letterbox_reason(entry.get("meta"))
    if reason:
        return finish(sample, status.LETTERBOXED, reason, INGEST)
    path = entry.get("image")
    if path is None:
        return finish(sample, status.DECODE_ERROR, "no image path in the input line", INGEST)
    try:
        sample["image_bytes"] = Path(path).read_bytes()
    except OSError as error:
        return finish(sample, status.DECODE_ERROR, f"cannot read image file {path}: {error.strerror or error}",
                      INGEST)
    sample["image_ext"] = Path(path).suffix.lstrip(".").lower()
    return sample


class _ImageSource:
    """Input entries in chunks of samples for the local engine; the next chunk's image files are read in
    worker threads while the current one is grounded."""

    def __init__(self, entries, chunk_size: int, workers: int):
        self._entries = iter(entries)
        self.paths: dict[str, list[str | None]] = {}  # key -> the image paths of its entries not yet written
        self._chunk_size = chunk_size
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers))
        self._next = self._read_ahead()

    def _read_ahead(self):
        entries = list(itertools.islice(self._entries, self._chunk_size))
        for entry in entries:
            path = entry.get("image")
            self.paths.setdefault(entry["key"], []).append(str(Path(path).absolute()) if path is not None else None)
        return [self._pool.submit(_entry_sample, entry) for entry in entries] if entries else None

    def chunks(self):
        """Chunk names, as long as input remains."""
        number = 0
        while self._next is not None:
            yield f"chunk-{number}"
            number += 1

    def read(self, chunk: str) -> list[dict]:
        futures, self._next = self._next, None
        samples = [future.result() for future in futures]
        self._next = self._read_ahead()
        return samples

    def read_chunks(self, chunk: str, size: int):
        """``read``, at most ``size`` samples at a time (``pipeline.contracts.SampleSource``)."""
        samples = self.read(chunk)
        return (samples[start:start + size] for start in range(0, len(samples), size))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# --- output ---------------------------------------------------------------------------------------------

class _JsonLinesSink:
    """Finished samples -> one JSON line each, in input order: the GRIT record plus ``status`` for grounded
    samples, the key, caption, url, id, size, ``status`` and ``reason`` for the others."""

    def __init__(self, out, with_dropped: bool, image_paths: dict | None = None, drawer=None):
        self.out = out
        self.with_dropped = with_dropped
        self.image_paths = image_paths if image_paths is not None else {}
        self.drawer = drawer
        self.counts: Counter = Counter()
        self.started = time.perf_counter()

    def write(self, chunk: str, samples: list[dict]) -> None:
        for sample in samples:
            row = _row(sample)
            paths = self.image_paths.get(sample["key"])
            row["image"] = paths.pop(0) if paths else None
            if paths == []:
                del self.image_paths[sample["key"]]
            if self.drawer is not None:
                self.drawer.draw(sample, row)
            if self.with_dropped:
                row["dropped_boxes"] = [[float(v) for v in item] for item in sample.get("dropped_boxes") or []]
            self.counts[row["status"]] += 1
            self.out.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.out.flush()
        done = sum(self.counts.values())
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        summary = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        print(f"[ground] {done} samples ({rate:.1f}/s): {summary}", file=sys.stderr, flush=True)


def _row(sample: dict) -> dict:
    from grit_pipeline import status
    from grit_pipeline.record import GritRecord

    if sample["status"] == status.GROUNDED:
        record = GritRecord(key=sample["key"], caption=sample["caption"], width=sample["width"],
                            height=sample["height"], noun_chunks=sample["noun_chunks"], ref_exps=sample["ref_exps"],
                            id=sample["id"], url=sample["url"])
        return {**record.to_dict(), "status": sample["status"]}
    return {"key": sample["key"], "caption": sample["caption"], "url": sample["url"], "id": sample["id"],
            "width": sample["width"], "height": sample["height"], "noun_chunks": [], "ref_exps": [],
            "status": sample["status"], "reason": sample["reason"]}


class _Drawer:
    """``--draw DIR``: each grounded sample's image with its boxes and noun chunks drawn, one file per sample
    (KEY made safe as a file name; a second sample of the same name gets ``_2``). A sample that is not drawn is
    counted by status and named on stderr, never a stop."""

    def __init__(self, folder: Path):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--draw {folder} is not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.drawn = 0
        self.not_drawn: Counter = Counter()
        self._names: set[str] = set()

    def draw(self, sample: dict, row: dict) -> Path | None:
        from grit_pipeline import status

        if sample["status"] != status.GROUNDED or not sample.get("image_bytes"):
            self.not_drawn[sample["status"]] += 1
            return None
        try:
            path = self._write(sample, row)
        except Exception as error:  # noqa: BLE001 - PIL raises many types for a bad picture; one line, go on
            self.not_drawn["draw_error"] += 1
            print(f"[ground] --draw: {sample['key']} not drawn: {type(error).__name__}: {error}", file=sys.stderr)
            return None
        self.drawn += 1
        return path

    def _write(self, sample: dict, row: dict) -> Path:
        from grit_pipeline.images import decode_image
        from grit_pipeline.views.draw import draw_entities

        # boxes are normalised to the decoded image (EXIF orientation applied): decode as the pipeline did
        image = decode_image(sample["image_bytes"])
        caption = row["caption"]
        chunks: dict[tuple[int, int], list] = {}
        for start, end, *box, _score in row["noun_chunks"]:
            chunks.setdefault((int(start), int(end)), []).append(box)
        entities = [(caption[start:end], boxes) for (start, end), boxes in sorted(chunks.items())]
        jpeg = (sample.get("image_ext") or "").lower() in ("jpg", "jpeg")
        path = self.folder / self._name(sample["key"], ".jpg" if jpeg else ".png")
        drawn = draw_entities(image, entities)
        tmp = path.with_name(path.name + ".tmp")
        drawn.save(tmp, format="JPEG" if jpeg else "PNG", **({"quality": 95} if jpeg else {}))
        tmp.replace(path)
        return path

    def _name(self, key: str, suffix: str) -> str:
        import re

        base = re.sub(r"[^\w.-]+", "_", key).strip("._")[:150] or "image"
        name, n = base + suffix, 1
        while name in self._names:
            n += 1
            name = f"{base}_{n}{suffix}"
        self._names.add(name)
        return name
