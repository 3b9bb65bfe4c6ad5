"""The capacity model's measured parts: CPU seconds per image of each stage, bytes and storage requests.

Everything runs in this one process (no Ray) as ``--engine local`` runs it: the input shard read
``--chunk-rows`` samples at a time (``InputSource.read_chunks``),
every stage over each chunk, the shard written once all are done. The figures are what docs/cluster.md
("Capacity model") multiplies up to a cluster.

Input: one img2dataset shard written by this bench: synthetic captions of ``grit synth``'s world (seed
SEED, level 3, the same caption generator) with photo-like JPEGs, each a ``grit synth`` scene scaled to
IMAGE_SIDE px on its long side with film grain (GRAIN) at quality 85: about 30-65 KB each, like a
512 px img2dataset download; POOL distinct images are cycled (encoding them all would cost more than
the measurement), each copy made unique by a JPEG comment segment naming its sample. The same shard is built at each of SIZES samples.

Per stage, for each size (after a warm-up shard that pays the imports and the model loads):

* ``read``: ``InputSource.read_chunks`` (``ingest``: parquet + tar from local disk, i.e. the page cache);
* ``text``: ``NounChunkStage`` (spaCy noun chunks and referring-expression spans) in its batches;
* ``decode``: ``images.decode_image`` of every image that reaches grounding;
* ``ground``: ``GroundStage`` with the ``noop`` detector on the already decoded images (the pipeline's own
  grounding overhead and the class-agnostic NMS; no model, no decode);
* ``expand``: ``ExpandStage`` (threshold, ``assemble_record`` and the grounded text);
* ``serialize``: ``serialize.grounded_text`` alone, called again on the grounded samples (a part of
  ``expand``; ``expand_without_serialize`` is the difference);
* ``write``: ``BuildSink.write`` of the shard to local disk (parquet, tar, rejects, stats, the marker; each
  file fsynced).

``cpu_s`` is ``time.process_time()`` (all threads of this process), ``wall_s`` ``time.perf_counter()``.
``slope_ms_per_image``: (big - small) / (big - small samples) per stage, which cancels what a shard costs
whatever its size. ``bytes_per_image``: the input's tar + parquet, and each output file, over the samples;
``output_bytes_by_status``: the tar and GRIT parquet per grounded sample, the rejects parquet per reject
(the ``noop`` detector with hashed scores grounds about 80% of these samples at the 0.65 threshold; the
rest are ``no_box`` rejects).

``storage_requests``: ``grit run --engine local`` (in-process) on an input and an output under a counting
fsspec filesystem (the local disk, but with a protocol that the pipeline treats as an object store, so it
writes each file as one upload as it does on ``s3://``). Only the pipeline's own calls are counted (not those
fsspec makes inside them), by kind: LIST (``ls``), HEAD (``info``/``exists``/``size``), GET (an ``open`` for
reading), PUT (an upload), DELETE (``rm``), MKDIR (no request on object stores). Runs on 1 and 2 shards
give ``per_shard`` (the difference) and ``per_run`` (the rest); ``finished_run_again``: the same two runs
made again, every shard done (what planning a resumed run costs per finished shard). ``ray_engine_extra`` is what the Ray
engine's data path adds: each batch of ``--chunk-rows`` samples is staged as a part, and the commit reads and
deletes the parts; measured by replaying a worker's calls (``parts.write_parts`` for 1 and for 3 parts,
``parts.commit_shard``) against the local engine's (``sink.clear`` + ``sink.write``) on the smaller
measured shard, with the bytes a part takes per sample (``part_bytes_per_sample``, from the 3 parts).

``GRIT_BENCH_CAPACITY_SIZES=1000,4000`` (default) sets the two shard sizes; ``GRIT_BENCH_CAPACITY_REPEATS``
(default 2) measures each size that many times (alternating) and keeps each stage's lowest CPU time;
``GRIT_BENCH_CAPACITY_SIDE=512`` (default) the images' long side in pixels (decode and bytes grow with it).
"""
from __future__ import annotations

import io
import json
import math
import os
import platform
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from grit_pipeline.pipeline import layout

SIZES = tuple(int(n) for n in os.environ.get("GRIT_BENCH_CAPACITY_SIZES", "1000,4000").split(","))
REPEATS = int(os.environ.get("GRIT_BENCH_CAPACITY_REPEATS", "2"))
SEED = 7
IMAGE_SIDE = int(os.environ.get("GRIT_BENCH_CAPACITY_SIDE", "512"))  # long side of the JPEGs, px
GRAIN = 6.0      # standard deviation of the grain, in 8-bit levels
POOL = 32        # distinct JPEGs, cycled over the samples
WARMUP_SAMPLES = 64
SHARD = "00000"
STAGES = ("read", "text", "decode", "ground", "expand", "serialize", "write")
PROTOCOL = "gritcount"
IMG2DATASET_SHARD_SIZE = 10_000  # img2dataset's default samples per shard (the per-10k figures below)
# noop with hashed scores: a fixed pseudo-random score per phrase, so at the 0.65 threshold some images keep
# boxes and others become rejects (no box above the threshold), and both writers have rows to write.
DETECTOR_OPTIONS = {"score": "hash"}


# --------------------------------------------------------------------------- input


def _pool_images() -> list[tuple[bytes, int, int]]:
    """POOL photo-like JPEGs: (bytes, width, height)."""
    import numpy as np
    from PIL import Image

    from grit_pipeline.synth.scene import random_scene, render_scene
    from grit_pipeline.synth.writer import scene_rng

    images = []
    for index in range(POOL):
        image = render_scene(random_scene(scene_rng(SEED + 1000, index), 3))
        scale = IMAGE_SIDE / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
        pixels = np.asarray(image).astype(np.float32)
        grain = np.random.default_rng(index).normal(0, GRAIN, pixels.shape[:2] + (1,)).astype(np.float32)
        out = io.BytesIO()
        Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=85)
        images.append((out.getvalue(), image.width, image.height))
    return images


def _unique(jpeg: bytes, index: int) -> bytes:
    """The JPEG with a comment segment naming ``index`` after its start marker: every sample's bytes
    differ (as real images do; parquet would otherwise store a cycled image once, in its dictionary),
    the pixels do not."""
    comment = f"grit-bench-capacity {index}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def write_input(folder: Path, samples: int, pool: list[tuple[bytes, int, int]], shards: int = 1) -> int:
    """``shards`` img2dataset shards of ``samples`` samples each; returns the bytes of their tar + parquet."""
    import hashlib

    from grit_pipeline.synth.captions import make_caption
    from grit_pipeline.synth.scene import random_scene
    from grit_pipeline.synth.writer import scene_rng, write_img2dataset_shard

    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for shard in range(shards):
        name = f"{shard:05d}"
        rows = []
        for k in range(samples):
            index = shard * samples + k
            rng = scene_rng(SEED, index)  # the caption grit synth gives image `index` of world SEED
            caption = make_caption(rng, random_scene(rng, 3), 3).text
            jpeg, width, height = pool[index % len(pool)]
            jpeg = _unique(jpeg, index)
            rows.append({"jpeg": jpeg, "meta": {
                "url": f"synth://{index}", "caption": caption, "key": f"{name}{k:05d}", "status": "success",
                "error_message": None, "width": width, "height": height, "original_width": width,
                "original_height": height, "exif": "{}", "sha256": hashlib.sha256(jpeg).hexdigest()}})
        write_img2dataset_shard(folder, name, rows, [])
        total += (folder / f"{name}.tar").stat().st_size + (folder / f"{name}.parquet").stat().st_size
    return total


# --------------------------------------------------------------------------- stage costs


class Clock:
    """CPU (process) and wall seconds, accumulated per stage."""

    def __init__(self):
        self.cpu: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.wall: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    def timed(self, stage: str, fn, *args, **kwargs):
        cpu, wall = time.process_time(), time.perf_counter()
        result = fn(*args, **kwargs)
        self.cpu[stage] += time.process_time() - cpu
        self.wall[stage] += time.perf_counter() - wall
        return result


def _batches(stage, samples):
    size = stage.batch_size()
    for start in range(0, len(samples), size):
        stage(samples[start:start + size])


def _chunks(source, shard: str):
    """The shard as the engines read it: ``--chunk-rows`` samples at a time (``InputSource.read_chunks``)."""
    from grit_pipeline.pipeline import PipelineConfig

    return iter(source.read_chunks(shard, PipelineConfig.chunk_rows))


def measure_shard(config, stages, input_dir: Path, output_dir: Path) -> dict[str, Any]:
    """Every stage over the one shard of ``input_dir``, a chunk at a time as the local engine runs them,
    each stage timed apart; the build goes to ``output_dir``."""
    from grit_pipeline.images import decode_image
    from grit_pipeline.pipeline.sample import pending
    from grit_pipeline.pipeline.shards import BuildSink, InputSource
    from grit_pipeline.serialize import grounded_text

    config = config.replace(input=str(input_dir), output=str(output_dir))
    text, ground, expand = stages
    clock = Clock()
    source = InputSource(config)
    source.shards()
    chunks = clock.timed("read", _chunks, source, SHARD)
    samples: list[dict[str, Any]] = []
    while True:
        chunk = clock.timed("read", next, chunks, None)
        if chunk is None:
            break
        clock.timed("text", _batches, text, chunk)
        # Decode apart from grounding: the grounding stage accepts decoded images (on a GPU node the
        # grounding actor decodes them, before the detector).
        todo = [s for s in chunk if pending(s)]
        raw = [s["image_bytes"] for s in todo]
        decoded = clock.timed("decode", lambda: [decode_image(b) for b in raw])
        for sample, image in zip(todo, decoded):
            sample["image_bytes"] = image
        clock.timed("ground", _batches, ground, todo)
        for sample, data in zip(todo, raw):
            sample["image_bytes"] = data
        del decoded
        clock.timed("expand", _batches, expand, chunk)
        grounded = [s for s in chunk if s.get("grounded_text")]
        clock.timed("serialize", lambda: [grounded_text(s, fmt=config.text_format, min_score=config.box_threshold,
                                                        phrase_mode=config.phrase_mode, grid=config.grid,
                                                        cell_rule=config.cell_rule) for s in grounded])
        samples.extend(chunk)
    sink = BuildSink(config)
    clock.timed("write", sink.write, SHARD, samples, config.params_through("write"), source.describe(SHARD))
    statuses = Counter(s["status"] for s in samples)
    files = {name: (output_dir / name).stat().st_size for name in [*sink.files(SHARD), layout.done_name(SHARD)]}
    return {"samples": len(samples), "statuses": dict(sorted(statuses.items())),
            "cpu_s": {k: round(v, 4) for k, v in clock.cpu.items()},
            "wall_s": {k: round(v, 4) for k, v in clock.wall.items()},
            "output_bytes": files}


def _per_image(values: dict[str, float], samples: int, scale: float = 1000.0) -> dict[str, float]:
    return {k: round(scale * v / samples, 4) for k, v in values.items()}


def _with_derived(per_stage: dict[str, float]) -> dict[str, float]:
    out = dict(per_stage)
    out["expand_without_serialize"] = round(per_stage["expand"] - per_stage["serialize"], 4)
    # serialize is a part of expand: the sum counts each second once
    out["total"] = round(sum(v for k, v in per_stage.items() if k != "serialize"), 4)
    return out


# --------------------------------------------------------------------------- storage requests

KINDS = {"ls": "LIST", "glob": "LIST", "find": "LIST", "walk": "LIST",
         "info": "HEAD", "exists": "HEAD", "size": "HEAD", "isfile": "HEAD", "isdir": "HEAD",
         "cat_file": "GET", "get_file": "GET",
         "put_file": "PUT", "pipe_file": "PUT", "cp_file": "PUT",
         "rm": "DELETE", "rm_file": "DELETE",
         "makedirs": "MKDIR", "mkdir": "MKDIR"}


class _Calls(threading.local):
    depth = 0


_calls = _Calls()
CALL_LOG: list[tuple[str, str, str]] = []   # (kind, method, path)


class CountingFileSystem(LocalFileSystem):
    """The local disk under the protocol ``gritcount://``, logging each call the pipeline makes.

    The pipeline's ``Folder`` treats any protocol but file/local as an object store (one upload per file,
    no rename), so this runs the object-store code path. Calls fsspec makes inside a call are not counted.
    """

    protocol = PROTOCOL
    root_marker = "/"

    def _log(self, method: str, kind: str, path) -> None:
        if _calls.depth == 0:
            CALL_LOG.append((kind, method, str(path)))

    def open(self, path, mode="rb", *args, **kwargs):
        self._log("open", "GET" if "r" in mode else "PUT", path)
        _calls.depth += 1
        try:
            return super().open(path, mode, *args, **kwargs)
        finally:
            _calls.depth -= 1


def _counted(method: str, kind: str):
    def call(self, *args, **kwargs):
        self._log(method, kind, args[0] if args else kwargs.get("path", kwargs.get("lpath", "")))
        _calls.depth += 1
        try:
            return getattr(LocalFileSystem, method)(self, *args, **kwargs)
        finally:
            _calls.depth -= 1
    call.__name__ = method
    return call


for _method, _kind in KINDS.items():
    setattr(CountingFileSystem, _method, _counted(_method, _kind))
# put_file's first argument is the local staging file: log the destination instead
def _put_file(self, lpath, rpath, *args, **kwargs):  # noqa: E302
    self._log("put_file", "PUT", rpath)
    _calls.depth += 1
    try:
        return LocalFileSystem.put_file(self, lpath, rpath, *args, **kwargs)
    finally:
        _calls.depth -= 1


CountingFileSystem.put_file = _put_file
fsspec.register_implementation(PROTOCOL, CountingFileSystem, clobber=True)


def _kinds(log) -> dict[str, int]:
    counts = Counter(kind for kind, _, _ in log)
    return {kind: counts.get(kind, 0) for kind in ("LIST", "HEAD", "GET", "PUT", "DELETE", "MKDIR")}


def _diff(a: dict[str, int], b: dict[str, int]) -> dict[str, float]:
    return {k: a[k] - b[k] for k in a}


def _requests(counts: dict[str, float]) -> float:
    """Object-store requests (MKDIR makes none)."""
    return sum(v for k, v in counts.items() if k != "MKDIR")


def count_requests(work: Path, pool, replay_input: Path) -> dict[str, Any]:
    from grit_pipeline.pipeline import PipelineConfig, run_pipeline
    from grit_pipeline.pipeline.engine_local import run_stages
    from grit_pipeline.pipeline.parts import commit_shard, write_parts
    from grit_pipeline.pipeline.shards import BuildSink, InputSource
    from grit_pipeline.pipeline.stages import FUSED

    def url(path: Path) -> str:
        return f"{PROTOCOL}://{path}"

    small = 8
    runs, reruns = {}, {}
    for shards in (1, 2):
        input_dir = work / f"requests_in_{shards}"
        write_input(input_dir, small, pool, shards=shards)
        config = PipelineConfig(input=url(input_dir), output=url(work / f"requests_out_{shards}"), detector="noop",
                                detector_options=dict(DETECTOR_OPTIONS), engine="local", progress=False)
        CALL_LOG.clear()
        run_pipeline(config)
        runs[shards] = list(CALL_LOG)
        CALL_LOG.clear()
        run_pipeline(config)  # again: every shard is done, the run only checks (a resumed run's planning)
        reruns[shards] = list(CALL_LOG)
    one, two = _kinds(runs[1]), _kinds(runs[2])
    per_shard = _diff(two, one)
    per_run = _diff(one, per_shard)
    rerun_per_shard = _diff(_kinds(reruns[2]), _kinds(reruns[1]))
    rerun_per_run = _diff(_kinds(reruns[1]), rerun_per_shard)
    shard_calls = [f"{kind} {method} {Path(path).name.replace('00001', 'NNNNN')}"
                   for kind, method, path in runs[2] if "00001" in Path(path).name]

    # The Ray engine's worker path on one shard (``replay_input``), against the local engine's, in this process.
    config = PipelineConfig(input=url(replay_input), output=url(work / "requests_ray"), detector="noop",
                            detector_options=dict(DETECTOR_OPTIONS), progress=False)
    source = InputSource(config)
    source.shards()
    stages = [cls(config) for cls in FUSED]
    params = config.params_through("write")

    def local_path():
        samples = [s for chunk in _chunks(source, SHARD) for s in run_stages(stages, chunk)]
        sink = BuildSink(config)
        sink.clear(SHARD)
        sink.write(SHARD, samples, params, source.describe(SHARD))

    part_bytes = {}

    def ray_path(parts: int):
        samples = [s for chunk in _chunks(source, SHARD) for s in run_stages(stages, chunk)]
        size = math.ceil(len(samples) / parts)
        names = [info["part"] for start in range(0, len(samples), size)
                 for info in write_parts(config.output, samples[start:start + size])]
        staged = sum(f.stat().st_size for f in (work / "requests_ray" / "_parts" / SHARD).iterdir())
        part_bytes[parts] = round(staged / len(samples), 1)
        part_bytes["samples"] = len(samples)
        commit_shard(BuildSink(config), source, SHARD, names, params, source.describe(SHARD))

    replay = {}
    for name, fn in (("local", local_path), ("ray_1_part", lambda: ray_path(1)), ("ray_3_parts", lambda: ray_path(3))):
        shutil.rmtree(work / "requests_ray", ignore_errors=True)
        CALL_LOG.clear()
        fn()
        replay[name] = _kinds(CALL_LOG)
    per_part = {k: (replay["ray_3_parts"][k] - replay["ray_1_part"][k]) / 2 for k in replay["local"]}
    per_commit = {k: replay["ray_1_part"][k] - per_part[k] - replay["local"][k] for k in replay["local"]}
    parts_10k = math.ceil(IMG2DATASET_SHARD_SIZE / PipelineConfig.chunk_rows)
    ray_per_shard_10k = {k: per_shard[k] + per_commit[k] + parts_10k * per_part[k] for k in per_shard}
    return {
        "kinds": "LIST ls, HEAD info/exists/size, GET open for reading, PUT one upload, DELETE rm, MKDIR (no request)",
        "local_engine": {"per_run": per_run, "per_shard": per_shard,
                         "requests_per_shard": _requests(per_shard), "requests_per_run": _requests(per_run),
                         "shard_calls": shard_calls,
                         "finished_run_again": {"per_run": rerun_per_run, "per_done_shard": rerun_per_shard}},
        "ray_engine_extra": {"per_part": per_part, "per_shard": per_commit, "chunk_rows": PipelineConfig.chunk_rows,
                             "replayed": replay, "replayed_samples": part_bytes["samples"],
                             # staged once, read back once by the commit, then deleted
                             "part_bytes_per_sample": part_bytes[3]},
        "ray_engine_per_shard_of_10000": {"parts": parts_10k, "by_kind": ray_per_shard_10k,
                                          "requests": _requests(ray_per_shard_10k)},
    }


# --------------------------------------------------------------------------- run


def run() -> dict:
    from grit_pipeline.pipeline import PipelineConfig
    from grit_pipeline.pipeline.engine_local import one_torch_thread
    from grit_pipeline.pipeline.stages import FUSED

    load_start = os.getloadavg()
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="grit-bench-capacity-"))
    try:
        pool = _pool_images()
        inputs = {}
        for samples in (WARMUP_SAMPLES, *SIZES):
            folder = work / f"in_{samples}"
            inputs[samples] = (folder, write_input(folder, samples, pool))
        config = PipelineConfig(detector="noop", detector_options=dict(DETECTOR_OPTIONS), progress=False)
        stages = [cls(config) for cls in FUSED]
        results: dict[int, dict] = {}
        with one_torch_thread(FUSED):
            for stage in stages:
                stage.ensure_setup()
            measure_shard(config, stages, inputs[WARMUP_SAMPLES][0], work / "out_warmup")
            for repeat in range(REPEATS):
                for samples in SIZES:
                    out = work / f"out_{samples}_{repeat}"
                    measured = measure_shard(config, stages, inputs[samples][0], out)
                    shutil.rmtree(out, ignore_errors=True)
                    best = results.get(samples)
                    if best is None:
                        results[samples] = measured
                    else:  # each stage's fastest repeat
                        for stage in STAGES:
                            if measured["cpu_s"][stage] < best["cpu_s"][stage]:
                                best["cpu_s"][stage] = measured["cpu_s"][stage]
                                best["wall_s"][stage] = measured["wall_s"][stage]
        small, big = min(SIZES), max(SIZES)
        extra = results[big]["samples"] - results[small]["samples"]
        measurements = {}
        for samples in SIZES:
            r = results[samples]
            n = r["samples"]
            measurements[str(samples)] = {
                **r,
                "cpu_ms_per_image": _with_derived(_per_image(r["cpu_s"], n)),
                "wall_ms_per_image": _with_derived(_per_image(r["wall_s"], n)),
                "input_bytes_per_image": round(inputs[samples][1] / n),
                "output_bytes_per_image": {k: round(v / n, 1) for k, v in r["output_bytes"].items()},
            }
        slope_cpu = _with_derived({s: round(1000 * (results[big]["cpu_s"][s] - results[small]["cpu_s"][s]) / extra, 4)
                                   for s in STAGES})
        slope_wall = _with_derived({s: round(1000 * (results[big]["wall_s"][s] - results[small]["wall_s"][s]) / extra, 4)
                                    for s in STAGES})
        out_small, out_big = results[small]["output_bytes"], results[big]["output_bytes"]
        slope_bytes_out = {k: round((out_big[k] - out_small[k]) / extra, 1) for k in out_big}
        slope_bytes_in = round((inputs[big][1] - inputs[small][1]) / extra, 1)
        # The tar and the GRIT parquet hold the grounded samples only, the rejects parquet the others.
        grounded = {n: results[n]["statuses"].get("grounded", 0) for n in SIZES}
        rejected = {n: results[n]["samples"] - grounded[n] for n in SIZES}
        extra_grounded, extra_rejected = grounded[big] - grounded[small], rejected[big] - rejected[small]
        by_kind = {
            "grounded_share": {str(n): round(grounded[n] / results[n]["samples"], 4) for n in SIZES},
            "tar_bytes_per_grounded": round((out_big[layout.tar_name(SHARD)] - out_small[layout.tar_name(SHARD)])
                                            / extra_grounded, 1),
            "parquet_bytes_per_grounded": round(
                (out_big[f"{SHARD}.parquet"] - out_small[f"{SHARD}.parquet"]) / extra_grounded, 1),
            "rejects_bytes_per_reject": round(
                (out_big[layout.rejects_name(SHARD)] - out_small[layout.rejects_name(SHARD)]) / extra_rejected, 1)
            if extra_rejected else None,
            "per_shard_files_bytes": {k: out_big[k] for k in (layout.stats_name(SHARD), layout.done_name(SHARD))},
        }
        requests = count_requests(work, pool, inputs[small][0])
        return {
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                        "python": platform.python_version(),
                        "load_avg_at_start": [round(x, 2) for x in load_start],
                        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
            "input": {"image_side_px": IMAGE_SIDE, "distinct_images": POOL, "jpeg_quality": 85,
                      "mean_jpeg_bytes": round(sum(len(j) for j, _, _ in pool) / len(pool)),
                      "captions": f"grit synth world seed {SEED}, level 3", "detector": "noop",
                      "sizes": list(SIZES), "repeats": REPEATS},
            "measurements": measurements,
            "slope": {"cpu_ms_per_image": slope_cpu, "wall_ms_per_image": slope_wall,
                      "input_bytes_per_image": slope_bytes_in, "output_bytes_per_image": slope_bytes_out,
                      "output_bytes_per_image_total": round(sum(slope_bytes_out.values()), 1),
                      "output_bytes_by_status": by_kind},
            "storage_requests": requests,
            "wall_s": round(time.perf_counter() - started, 1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
