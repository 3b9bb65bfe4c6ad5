"""`grit instruct`: a GRIT build in, grounded instruction data out, shard by shard, on the pipeline's machinery.

The same shard job as `grit run` (``pipeline.api``): the input shards are read by the pipeline's ingest
(``read_input_shard``: bad keys, duplicates, broken tars, oversize members and failed downloads become
rejects), one stage (``InstructStage``, the plain function ``instruct.make_conversation`` per record) runs on
the local engine or in the Ray engine's actors, and a ``BuildSink`` with the writers below commits each shard
atomically, ``_done/NNNNN.done`` last; a rerun skips finished shards and redoes the rest. Every input record
ends in exactly one of ``_webdataset/NNNNN.tar`` (its conversation) or ``_rejects/NNNNN.parquet`` (status and
reason).

Input: a GRIT build of `grit run` (``NNNNN.parquet`` + ``_webdataset/NNNNN.tar``; its ``_rejects/`` are not
records) or GrIT-20M as img2dataset downloads it (the spans in each ``KEY.json``, the parquet listing failed
downloads too). The record's caption, spans and size come from the parquet row or, where it lacks them, from
``KEY.json`` (a build's ``KEY.txt`` is grounded text, never the caption).

Output layout::

    OUTPUT/_run.json                 parameters, input, versions
    OUTPUT/_webdataset/NNNNN.tar     KEY.<ext> (image bytes as they came), KEY.json: {"key", "image", "caption",
                                     "width", "height", "source_shard", "format", "conversations": [{"from":
                                     "human"|"gpt", "value"}], "samples": [one per question/answer pair]}
    OUTPUT/NNNNN.parquet             the index: one row per question/answer pair (INDEX_SCHEMA)
    OUTPUT/_rejects/NNNNN.parquet    the pipeline's rejects file (key, status, reason, stage, ...)
    OUTPUT/_stats/NNNNN.json         the pipeline's shard stats + "instruct": turns per task and template
    OUTPUT/_done/NNNNN.done          written last

Between the stage and the writers a sample carries its conversation as JSON in the pipeline sample's
``grounded_text`` column (the fixed sample schema is what the Ray engine's parts hold).
"""
from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from grit_pipeline import status as S
from grit_pipeline.config_flags import comma_list
from grit_pipeline.instruct import TEMPLATE_NAMES, InstructParams, InstructReject, make_conversation
from grit_pipeline.pipeline import layout
from grit_pipeline.pipeline.config import PipelineConfig
from grit_pipeline.pipeline.ingest import InputShard, iter_input_shard, list_input_shards
from grit_pipeline.pipeline.sample import finish
from grit_pipeline.pipeline.shards import BuildSink, InputSource
from grit_pipeline.pipeline.stages import Stage
from grit_pipeline.pipeline.storage import Folder
from grit_pipeline.pipeline.writers import rejects as rejects_writer
from grit_pipeline.pipeline.writers import stats as stats_writer

INSTRUCT = "instruct and output"
VERSION = 1  # of the samples' layout; recorded in every .done marker (a change rebuilds)


@dataclass
class InstructConfig(PipelineConfig):
    """`grit instruct`'s settings: the pipeline's (input, output, engine, limits, spelling, threshold, cell
    rule) plus how samples are made. Only the fields in ``FLAGS`` are command-line flags of `grit instruct`."""

    input: str = field(default="", metadata={"group": INSTRUCT, "help": "GRIT build (`grit run` output) or GrIT-20M "
                       "as img2dataset downloads it: local path or fsspec URL"})
    output: str = field(default="", metadata={"group": INSTRUCT, "help": "instruction data folder (local path or URL)"})
    text_format: str = field(default="hf", metadata={
        "group": INSTRUCT, "choices": ("hf", "paper"),
        "help": "spelling of the markup: hf (the release's <phrase>/<object>/<patch_index_NNNN>) or paper "
                "(<p>/<box>/<loc_N>)"})
    phrase_mode: str = field(default="expression", metadata={
        "group": INSTRUCT, "choices": ("expression", "phrase"),
        "help": "spans to ask about: referring expressions (ref_exps) or bare noun chunks"})
    seed: int = field(default=0, metadata={"group": INSTRUCT, "help": "seed of the per-record choices (with the key)"})
    expression_to_box: int = field(default=1, metadata={
        "group": INSTRUCT, "help": "expression -> box turns per record ('<phrase>expression</phrase>' -> its boxes)"})
    box_to_expression: int = field(default=1, metadata={
        "group": INSTRUCT, "help": "box -> expression turns per record (a Table 9 template around one box)"})
    templates: tuple[str, ...] = field(default=TEMPLATE_NAMES, metadata={
        "group": INSTRUCT, "parse": comma_list, "help": "comma-separated Table 9 templates to draw from"})
    # Not flags of `grit instruct`: a record costs about what a noop detection does (engine choice), no GPU.
    detector: str = field(default="noop", metadata={"cli": False})
    device: str = field(default="cpu", metadata={"cli": False})

    def instruct_params(self) -> InstructParams:
        return InstructParams(seed=self.seed, expression_to_box=self.expression_to_box,
                              box_to_expression=self.box_to_expression, templates=tuple(self.templates),
                              fmt=self.text_format, min_score=self.box_threshold, phrase_mode=self.phrase_mode,
                              grid=self.grid, cell_rule=self.cell_rule, max_caption_chars=self.max_caption_chars)

    def output_params(self) -> dict[str, Any]:
        """What the output depends on: recorded in ``_run.json`` and every ``.done`` marker."""
        from dataclasses import asdict

        params = asdict(self.instruct_params())
        params["templates"] = list(params["templates"])
        return {"input": self.input, "instruct_version": VERSION, "check_letterbox": self.check_letterbox,
                "max_member_bytes": self.max_member_bytes, **params}


FLAGS = ("input", "output", "overwrite", "shards", "progress", "engine", "ray_address", "num_cpus",
         "node_resource", "text_batch_size", "box_threshold", "text_format", "phrase_mode", "grid", "cell_rule",
         "max_member_bytes", "max_caption_chars", "check_letterbox", "seed", "expression_to_box",
         "box_to_expression", "templates")


# --- reading a GRIT build ----------------------------------------------------------------------------------

RECORD_FIELDS = ("caption", "noun_chunks", "ref_exps", "width", "height")


class InstructSource(InputSource):
    """The shards of a GRIT build (or a GrIT-20M download), as pipeline samples with their record's fields."""

    def shards(self) -> list[str]:
        # (a build of grit's previous layout kept NNNNN_rejects.parquet beside its rows: not records)
        shards = [s for s in list_input_shards(self.url) if not s.name.endswith("_rejects")]
        self._shards = {s.name: s for s in shards}
        return sorted(self._shards)

    def read(self, shard: str) -> list[dict[str, Any]]:
        return [sample for chunk in self.read_chunks(shard, 1 << 30) for sample in chunk]

    def read_chunks(self, shard: str, size: int) -> Iterator[list[dict[str, Any]]]:
        """The shard's samples with their record's fields, ``size`` at a time (the tar streamed)."""
        if shard not in self._shards:
            self.shards()
        info = self._shards[shard]
        records = _parquet_records(info)
        tar_read = False
        for samples in iter_input_shard(info, chunk_size=size, check_letterbox=self.check_letterbox,
                                        max_member_bytes=self.max_member_bytes, max_caption_chars=None):
            pending = [s for s in samples if s["status"] is None]
            if not tar_read and any(not _has_spans(records.get(s["key"])) for s in pending):
                tar_read = True  # (records without spans in the parquet: a GrIT-20M download's tar json has them)
                for key, record in _tar_records(info, self.max_member_bytes).items():
                    records[key] = {**record, **{k: v for k, v in records.get(key, {}).items() if v is not None}}
            for sample in pending:
                record = records.get(sample["key"]) or {}
                # The caption of the record (ingest took KEY.txt, which in a build is grounded text).
                sample["caption"] = record.get("caption")
                sample["noun_chunks"], sample["ref_exps"] = record.get("noun_chunks"), record.get("ref_exps")
                for name in ("width", "height"):
                    value = record.get(name)
                    sample[name] = value if isinstance(value, int) and not isinstance(value, bool) else None
            yield samples


def _has_spans(record: dict | None) -> bool:
    return bool(record) and (record.get("ref_exps") is not None or record.get("noun_chunks") is not None)


def _parquet_records(shard: InputShard) -> dict[str, dict[str, Any]]:
    """key -> the record fields the shard's parquet has (no image bytes read); {} without a usable parquet."""
    if not shard.has_parquet:
        return {}
    try:
        with Folder(shard.folder).open(f"{shard.name}.parquet") as f:
            parquet = pq.ParquetFile(f)
            columns = [c for c in ("key", *RECORD_FIELDS) if c in parquet.schema_arrow.names]
            if "key" not in columns:
                return {}
            rows = parquet.read(columns=columns).to_pylist()
    except Exception:  # noqa: BLE001 - ingest reports an unreadable parquet; the tar's json is the fallback
        return {}
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("key") is not None:
            out.setdefault(str(row["key"]), row)
    return out


def _tar_records(shard: InputShard, max_member_bytes: int | None) -> dict[str, dict[str, Any]]:
    """key -> the record fields of each ``KEY.json`` (a second pass over the tar: only when the parquet lacks
    the spans, as in a GrIT-20M download). Ingest already rejected unusable json members."""
    from grit_pipeline.tar_reader import TarReader

    if not shard.has_tar:
        return {}
    out: dict[str, dict[str, Any]] = {}
    try:
        for tar_sample in TarReader(Folder(shard.folder).open(shard.tar_name), max_member_bytes=max_member_bytes):
            raw = dict(tar_sample.files).get("json")
            if raw is None:
                continue
            try:
                data = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            if isinstance(data, dict):
                out.setdefault(tar_sample.key, {k: data.get(k) for k in RECORD_FIELDS})
    except OSError:
        pass
    return out


# --- the stage -------------------------------------------------------------------------------------------------

class InstructStage(Stage):
    """One record -> its conversation (``make_conversation``), or a reject with the reason."""

    name = "instruct"

    def setup(self) -> None:
        self.params = self.config.instruct_params()

    def process(self, samples):
        for sample in samples:
            record = {"key": sample["key"], **{name: sample.get(name) for name in RECORD_FIELDS}}
            try:
                conversation = make_conversation(record, self.params)
            except InstructReject as reject:
                # Spans that failed validation are not kept (the shard stats read kept samples' spans).
                sample["noun_chunks"] = sample["ref_exps"] = None
                finish(sample, reject.status, reject.reason, self.name)
                continue
            sample["grounded_text"] = json.dumps({**conversation.to_dict(), "format": self.params.fmt},
                                                 ensure_ascii=False, sort_keys=True)
            finish(sample, S.GROUNDED, None, self.name)


STAGES = (InstructStage,)


# --- the writers -----------------------------------------------------------------------------------------------

def conversation_of(sample: dict[str, Any]) -> dict[str, Any]:
    return json.loads(sample["grounded_text"])


INDEX_SCHEMA = pa.schema([
    pa.field("key", pa.string()),
    pa.field("turn", pa.int64()),                # question/answer pair index within the conversation
    pa.field("task", pa.string()),               # expression_to_box | box_to_expression
    pa.field("template", pa.string()),           # a Table 9 template name, or "phrase"
    pa.field("expression", pa.string()),
    pa.field("span", pa.list_(pa.int64())),      # [start, end) in the caption
    pa.field("boxes", pa.list_(pa.list_(pa.float64()))),  # normalised xyxy, the record's own numbers
    pa.field("instruction", pa.string()),
    pa.field("answer", pa.string()),
    pa.field("source_shard", pa.string()),
])


class TarWriter:
    """``_webdataset/NNNNN.tar``: the image and the conversation of every record that gave samples."""

    NEEDS_IMAGE_BYTES = True  # the Ray engine's commit streams the samples to it with their bytes

    @staticmethod
    def filename(shard: str) -> str:
        return layout.tar_name(shard)

    @staticmethod
    def write(samples, file, context) -> None:
        import tarfile

        from grit_pipeline.pipeline.writers.webdataset_tar import _member

        with tarfile.open(fileobj=file, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for s in samples:
                if s["status"] not in S.KEPT:
                    continue
                key, ext = s["key"], s.get("image_ext") or "jpg"
                entry = {"key": key, "image": f"{key}.{ext}", "caption": s["caption"], "width": s.get("width"),
                         "height": s.get("height"), "source_shard": s["source_shard"], **conversation_of(s)}
                _member(tar, f"{key}.{ext}", s["image_bytes"] or b"")
                _member(tar, f"{key}.json", json.dumps(entry, ensure_ascii=False, sort_keys=True).encode("utf-8"))


class IndexWriter:
    """``NNNNN.parquet``: one row per question/answer pair."""

    @staticmethod
    def filename(shard: str) -> str:
        return f"{shard}.parquet"

    @staticmethod
    def write(samples, file, context) -> None:
        rows = []
        for s in samples:
            if s["status"] not in S.KEPT:
                continue
            for turn, item in enumerate(conversation_of(s)["samples"]):
                rows.append({"key": s["key"], "turn": turn, "source_shard": s["source_shard"],
                             **{name: item[name] for name in ("task", "template", "expression", "span", "boxes",
                                                              "instruction", "answer")}})
        pq.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), file, compression="zstd")


class StatsWriter:
    """``_stats/NNNNN.json``: the pipeline's shard stats plus the turns made, per task and per template."""

    @staticmethod
    def filename(shard: str) -> str:
        return layout.stats_name(shard)

    @staticmethod
    def write(samples, file, context) -> None:
        stats = stats_writer.shard_stats(samples, context)
        tasks: dict[str, int] = {}
        templates: dict[str, int] = {}
        for s in samples:
            if s["status"] in S.KEPT:
                for item in conversation_of(s)["samples"]:
                    tasks[item["task"]] = tasks.get(item["task"], 0) + 1
                    templates[item["template"]] = templates.get(item["template"], 0) + 1
        stats["instruct"] = {"turns": sum(tasks.values()), "tasks": dict(sorted(tasks.items())),
                             "templates": dict(sorted(templates.items()))}
        file.write(json.dumps(stats, indent=1, sort_keys=True).encode("utf-8"))


WRITERS = (IndexWriter, TarWriter, rejects_writer, StatsWriter)


class InstructSink(BuildSink):
    """The instruction build: the writers above per shard, then the marker (atomic, like a GRIT build)."""

    def __init__(self, config: InstructConfig):
        super().__init__(config, writers=WRITERS)


# --- running ---------------------------------------------------------------------------------------------------

def run_instruct(config: InstructConfig):
    """Build instruction data from ``config.input`` into ``config.output``; returns the pipeline's
    ``RunSummary``. Resumable: finished shards (same parameters, intact files) are skipped."""
    from grit_pipeline.pipeline.api import _check, build_output

    problems = config.instruct_params().problems()
    if problems:
        raise ValueError("; ".join(problems))
    _check(config, need_input=True)
    return build_output(config, "instruct", InstructSource(config), STAGES, InstructSink, config.output_params(),
                        lambda summary: _write_run_file(config, summary))


def _write_run_file(config: InstructConfig, summary) -> None:
    from grit_pipeline.pipeline.api import _versions

    folder = Folder(config.output)
    folder.makedirs()
    info = {"mode": "instruct", "params": config.output_params(), "engine": config.engine,
            "finished": summary is not None, "versions": _versions(), "command": sys.argv,
            "last_run": None if summary is None else {
                "shards_written": len(summary.shards_written), "shards_skipped": len(summary.shards_skipped),
                "samples": summary.samples, "counts": summary.counts, "seconds": summary.seconds,
                "engine": summary.engine}}
    folder.write_bytes("_run.json", json.dumps(info, indent=1, sort_keys=True, default=str).encode("utf-8"))


def read_instruct_shard(path: str) -> list[dict[str, Any]]:
    """The entries (``KEY.json`` dicts, with ``image_bytes``) of one `grit instruct` tar, in order."""
    from grit_pipeline.tar_reader import IMAGE_EXTENSIONS, TarReader

    out = []
    with open(path, "rb") as f:
        for tar_sample in TarReader(io.BytesIO(f.read())):
            files = dict(tar_sample.files)
            entry = json.loads(files["json"])
            entry["image_bytes"] = next((files[e] for e in IMAGE_EXTENSIONS if e in files), None)
            out.append(entry)
    return out
