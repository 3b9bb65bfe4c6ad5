"""`grit ground`: ground your own pictures + captions with a detector, GRIT records out (no cluster needed).

Input: JSON lines ``{"key": ..., "image": "path/to.jpg", "caption": ...}`` (``--input FILE``, or stdin), or a
folder of images with a same-name ``.txt`` caption each (``--images DIR``, img2dataset's layout; a same-name
``.json`` with img2dataset metadata is used for the letterbox check). Output: one JSON line per input, in
input order: the GRIT record (GrIT-20M columns) plus ``status``, and ``reason`` for rejects.
"""
from __future__ import annotations

import inspect
import json
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HELP = "ground captions' noun chunks in your images with a detector; JSON lines in, GRIT records out"

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
_META_KEYS = ("width", "height", "original_width", "original_height", "resize_mode")


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", "-i", default=None,
                        help="JSON lines file with key/image/caption per line ('-' or absent: stdin). Relative "
                             "image paths are tried from the current folder, then from the file's folder")
    source.add_argument("--images", default=None, metavar="DIR",
                        help="folder of images, each with a same-name .txt caption (and optional .json metadata)")
    parser.add_argument("--output", "-o", default="-", help="output JSON lines file (default: stdout)")
    from grit_pipeline.config_flags import add_config_arguments
    from grit_pipeline.pipeline.config import PipelineConfig

    # the settings grit ground shares with grit run: the same flags, help texts and defaults
    add_config_arguments(parser, PipelineConfig, only=("detector", "model", "dtype", "device", "box_threshold",
                                                       "nms_iou", "spacy_model", "max_pixels"))
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
    from grit_pipeline.grounding import DEFAULT_BOX_THRESHOLD, DEFAULT_NMS_IOU, check_thresholds
    from grit_pipeline.images import DEFAULT_MAX_PIXELS

    box_threshold = DEFAULT_BOX_THRESHOLD if args.box_threshold is None else args.box_threshold
    nms_iou = DEFAULT_NMS_IOU if args.nms_iou is None else args.nms_iou
    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    try:
        check_thresholds(box_threshold, nms_iou)
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.min_score is not None and args.min_score > box_threshold:
            raise ValueError(f"--min-score {args.min_score} above --box-threshold {box_threshold} would hide boxes "
                             "that pass the threshold")
        samples = _read_samples(args)
    except (ValueError, OSError) as error:
        print(f"grit ground: {error}", file=sys.stderr)
        return 2

    from grit_pipeline.text import load_nlp

    try:
        detector = _load_detector(args)
        nlp = load_nlp(args.spacy_model)
    except Exception as error:  # unknown backend, missing model, bad device: a message, not a traceback
        print(f"grit ground: cannot load the detector or spaCy pipeline: {type(error).__name__}: {error}",
              file=sys.stderr)
        return 2
    described = repr(detector) if type(detector).__repr__ is not object.__repr__ else (
        args.detector + (f" (model {args.model})" if args.model else ""))
    print(f"[ground] detector {described}; box_threshold={box_threshold} nms_iou={nms_iou}", file=sys.stderr)

    out = sys.stdout if args.output in (None, "-") else open(args.output, "w", encoding="utf-8")
    counts: Counter = Counter()
    started = time.perf_counter()
    try:
        for rows in _ground_stream(samples, detector, nlp, args, box_threshold, nms_iou, max_pixels):
            for row in rows:
                counts[row["status"]] += 1
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            done = sum(counts.values())
            rate = done / max(time.perf_counter() - started, 1e-9)
            summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            print(f"[ground] {done} samples ({rate:.1f}/s): {summary}", file=sys.stderr, flush=True)
    finally:
        if out is not sys.stdout:
            out.close()
    print(json.dumps({"samples": sum(counts.values()), "counts": dict(sorted(counts.items())),
                      "seconds": round(time.perf_counter() - started, 2)}), file=sys.stderr)
    return 0


# --- input ----------------------------------------------------------------------------------------------

def _read_samples(args):
    """Samples as dicts (key, image path, caption, meta, url, id) or rejects (with status/reason) in order."""
    limit = args.limit
    if args.images:
        folder = Path(args.images)
        if not folder.is_dir():
            raise ValueError(f"--images {folder} is not a folder")
        iterator = _folder_samples(folder)
    else:
        if args.input in (None, "-"):
            iterator = _jsonl_samples(sys.stdin, None)
        else:
            path = Path(args.input)
            if not path.is_file():
                raise ValueError(f"--input {path} does not exist")
            iterator = _jsonl_samples(open(path, encoding="utf-8"), path.parent)
    if limit is None:
        return iterator
    return (sample for n, sample in enumerate(iterator) if n < limit)


def _jsonl_samples(lines, base: Path | None):
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


def _folder_samples(folder: Path):
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


# --- detector -------------------------------------------------------------------------------------------

def _load_detector(args):
    from grit_pipeline.detectors.base import _REGISTRY, available_detectors, get_detector

    available_detectors()  # imports the built-in backends
    options = {"model": args.model, "device": args.device, "dtype": args.dtype, "batch_size": args.batch_size}
    if args.min_score is not None:
        options["min_score"] = args.min_score
    if args.image_batching is not None:
        options["image_batching"] = args.image_batching
    factory = _REGISTRY.get(args.detector)
    if factory is not None:
        options = _accepted_options(factory, options)
    return get_detector(args.detector, **options)


def _accepted_options(factory, options: dict) -> dict:
    """Only the options the backend's constructor takes; a flag the backend ignores is reported, not fatal."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return options
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return options
    accepted = {k: v for k, v in options.items() if k in parameters}
    ignored = [k for k, v in options.items() if k not in parameters and v not in (None, "auto")]
    if ignored:
        print(f"[ground] note: detector {getattr(factory, 'name', factory)!r} ignores {', '.join(ignored)}",
              file=sys.stderr)
    return accepted


# --- grounding ------------------------------------------------------------------------------------------

def _load_image(sample, max_pixels):
    """Read + decode in a worker thread: a PIL image, or the reason it is unusable."""
    from grit_pipeline.images import ImageDecodeError, decode_image

    path = sample.get("image")
    if path is None:
        return "no image path in the input line"
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return f"cannot read image file {path}: {error.strerror or error}"
    try:
        return decode_image(data, max_pixels=max_pixels)
    except ImageDecodeError as error:
        return str(error)


def _chunks(iterable, size):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _ground_stream(samples, detector, nlp, args, box_threshold, nms_iou, max_pixels):
    """Yield output rows chunk by chunk; images of the next chunk are read and decoded while this one runs."""
    chunk_size = max(4 * args.batch_size, 32)
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        pending = None
        for chunk in _chunks(samples, chunk_size):
            loads = [pool.submit(_load_image, s, max_pixels) if "status" not in s else None for s in chunk]
            if pending is not None:
                yield _ground_chunk(*pending, detector, nlp, box_threshold, nms_iou, args.dropped)
            pending = (chunk, loads)
        if pending is not None:
            yield _ground_chunk(*pending, detector, nlp, box_threshold, nms_iou, args.dropped)


def _ground_chunk(chunk, loads, detector, nlp, box_threshold, nms_iou, with_dropped):
    from grit_pipeline import status
    from grit_pipeline.assemble import assemble_record
    from grit_pipeline.grounding import ground_batch
    from grit_pipeline.images import letterbox_reason
    from grit_pipeline.text import caption_spans

    rows: list[dict | None] = [None] * len(chunk)
    live = [i for i, s in enumerate(chunk) if "status" not in s]
    for i, s in enumerate(chunk):
        if "status" in s:  # unreadable input line
            rows[i] = _reject(s, s["status"], s["reason"])
    spans_list = caption_spans([chunk[i]["caption"] for i in live], nlp=nlp)
    spans_of = dict(zip(live, spans_list))
    to_ground = []
    for i in live:
        sample, spans = chunk[i], spans_of[i]
        if spans.error:
            rows[i] = _reject(sample, status.BAD_CAPTION, spans.error)
            loads[i].cancel()
            continue
        reason = letterbox_reason(sample.get("meta"))
        if reason:
            rows[i] = _reject(sample, status.LETTERBOXED, reason)
            loads[i].cancel()
            continue
        if not spans.noun_chunks:
            rows[i] = _reject(sample, status.NO_NOUN_CHUNKS, "caption has no concrete noun chunk")
            loads[i].cancel()
            continue
        image = loads[i].result()
        if isinstance(image, str):
            rows[i] = _reject(sample, status.DECODE_ERROR, image)
            continue
        to_ground.append((i, image))

    images = [image for _, image in to_ground]
    phrases = [[chunk[i]["caption"][s:e] for s, e in spans_of[i].noun_chunks] for i, _ in to_ground]
    results = ground_batch(images, phrases, detector, box_threshold=box_threshold, nms_iou=nms_iou)
    for (i, _), result in zip(to_ground, results):
        sample, spans = chunk[i], spans_of[i]
        dropped = [[*spans.noun_chunks[d.phrase_index], *d.box, d.score] for d in result.dropped]
        if result.status == status.GROUNDED:
            record = assemble_record(sample["key"], sample["caption"], result.width, result.height, spans,
                                     result.kept, id=sample.get("id"), url=sample.get("url"))
            row = {**record.to_dict(), "status": result.status}
        else:
            row = _reject(sample, result.status, result.reason, result.width, result.height)
        if with_dropped:
            row["dropped_boxes"] = [[float(v) for v in item] for item in dropped]
        rows[i] = row
    if with_dropped:
        for row in rows:
            row.setdefault("dropped_boxes", [])
    return rows


def _reject(sample, status_value, reason, width=None, height=None) -> dict:
    return {"key": sample["key"], "caption": sample.get("caption"), "url": sample.get("url"), "id": sample.get("id"),
            "width": width, "height": height, "noun_chunks": [], "ref_exps": [], "status": status_value,
            "reason": reason}
