"""A build's dataset card: ``.huggingface.yaml`` (what ``datasets.load_dataset(BUILD)`` reads) and ``_README.md``.

``.huggingface.yaml`` holds the card's YAML: two configs (``default``: the grounded pairs ``*.parquet``;
``rejects``: ``_rejects/*.parquet``), their features (from the files' own schemas), licence, tags. ``_README.md``
is the whole card, the same YAML as front matter plus what a reader needs: sizes, layout, how to load, the
run's parameters, the source data and its licence, the citation. Neither name is read by pandas or pyarrow
(they skip ``.`` and ``_``), so ``pd.read_parquet(BUILD)`` still gives exactly the pairs. To publish a build on
the Hugging Face Hub, upload ``_README.md`` as the repository's ``README.md``.

Written by ``grit run`` at the end of every run and by ``grit card DIR`` for any build.
"""
from __future__ import annotations

import json
from typing import Any

from . import layout
from .storage import Folder

CARD_YAML = ".huggingface.yaml"
CARD_README = "_README.md"
DEFAULT_LICENSE = "other"
DEFAULT_LICENSE_NOTE = ("The rows are derived from the input dataset's captions and images; they keep that "
                        "dataset's terms. LAION-2B and COYO-700M publish their metadata under CC-BY 4.0; the "
                        "images belong to their owners and are not licensed by the metadata's licence.")
KOSMOS2_CITATION = """@article{peng2023kosmos2,
  title   = {Kosmos-2: Grounding Multimodal Large Language Models to the World},
  author  = {Peng, Zhiliang and Wang, Wenhui and Dong, Li and Hao, Yaru and Huang, Shaohan and Ma, Shuming
             and Wei, Furu},
  journal = {arXiv preprint arXiv:2306.14824},
  year    = {2023}
}"""

_ARROW_TO_HF = {"string": "string", "large_string": "large_string", "double": "float64", "float": "float32",
                "halffloat": "float16", "int64": "int64", "int32": "int32", "int16": "int16", "int8": "int8",
                "uint64": "uint64", "uint32": "uint32", "uint16": "uint16", "uint8": "uint8", "bool": "bool",
                "binary": "binary", "large_binary": "large_binary", "null": "null"}


def hf_type(arrow_type) -> Any:
    """An arrow type in the card's YAML form of a HF ``datasets`` feature: "float64", {"list": ...},
    {"struct": [...]}."""
    import pyarrow as pa

    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return {"list": hf_type(arrow_type.value_type)}
    if pa.types.is_struct(arrow_type):
        return {"struct": [_feature(arrow_type.field(i)) for i in range(arrow_type.num_fields)]}
    name = str(arrow_type)
    if name not in _ARROW_TO_HF:
        raise ValueError(f"no dataset-card type for the arrow type {name}")
    return _ARROW_TO_HF[name]


def _feature(field) -> dict[str, Any]:
    kind = hf_type(field.type)
    return {"name": field.name, **({"dtype": kind} if isinstance(kind, str) else kind)}


def features(schema) -> list[dict[str, Any]]:
    """The card's ``features`` list of an arrow schema."""
    return [_feature(schema.field(i)) for i in range(len(schema))]


def card_data(url: str, license: str = DEFAULT_LICENSE, source_datasets: list[str] | None = None,
              totals: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card's YAML of the build in ``url``: configs, features of the first pairs and rejects files, sizes
    (``totals``: the build's ``_stats.json``, read here when not given)."""
    import pyarrow.parquet as pq

    folder = Folder(url)
    pairs = sorted(n for n in folder.names() if n.endswith(".parquet"))
    rejects = sorted(f"{layout.REJECTS_DIR}/{n}" for n in Folder(folder.uri(layout.REJECTS_DIR)).names()
                     if n.endswith(".parquet"))
    if not pairs:
        raise FileNotFoundError(f"{url}: no NNNNN.parquet to describe (is it a grit build?)")

    def schema_of(name: str):
        with folder.open(name) as f:
            return pq.ParquetFile(f).schema_arrow

    totals = totals if totals is not None else _json_object(folder, "_stats.json")
    pair_count = totals["counts"].get("grounded") if isinstance(totals.get("counts"), dict) else None
    configs = [{"config_name": "default", "default": True,
                "data_files": [{"split": "train", "path": "*.parquet"}]}]
    infos = [{"config_name": "default", "features": features(schema_of(pairs[0]))}]
    if rejects:
        configs.append({"config_name": "rejects", "data_files": [{"split": "train",
                                                                  "path": f"{layout.REJECTS_DIR}/*.parquet"}]})
        infos.append({"config_name": "rejects", "features": features(schema_of(rejects[0]))})
    data: dict[str, Any] = {
        "pretty_name": "GRIT grounded image-text pairs (grit build)",
        "license": license,
        "language": ["en"],
        "task_categories": ["image-to-text", "object-detection"],
        "tags": ["grit", "kosmos-2", "grounding", "phrase-grounding", "referring-expressions"],
        "configs": configs,
        "dataset_info": infos,
    }
    if isinstance(pair_count, int):
        data["size_categories"] = [_size_category(pair_count)]
    if source_datasets:
        data["source_datasets"] = list(source_datasets)
    return data


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"),
                         (1_000_000_000, "100M<n<1B")):
        if n < limit:
            return label
    return "n>1B"


def _json_object(folder: Folder, name: str) -> dict[str, Any]:
    """A JSON object file of the build; {} when it is missing, unreadable or not an object."""
    try:
        value = json.loads(folder.read_bytes(name))
    except (OSError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def card_markdown(data: dict[str, Any], run: dict[str, Any], totals: dict[str, Any],
                  license_note: str = DEFAULT_LICENSE_NOTE) -> str:
    """The whole card: ``data`` as YAML front matter, then the build's sizes (``totals``), layout, loading,
    parameters (``run``: its ``_run.json``), sources, licence and citation."""
    import yaml

    params = run.get("params") if isinstance(run.get("params"), dict) else {}
    counts = totals.get("counts") if isinstance(totals.get("counts"), dict) else {}
    kept = counts.get("grounded", "not recorded")
    rejected = sum(n for s, n in counts.items() if s != "grounded" and isinstance(n, int)) if counts else "not recorded"
    lines = ["---", yaml.safe_dump(data, sort_keys=False).rstrip(), "---", "",
             "# GRIT grounded image-text pairs", "",
             "Built with grit from image-caption shards by the GRIT construction pipeline of",
             "Kosmos-2: spaCy noun chunks, phrase grounding with a detector, class-agnostic NMS and a confidence",
             "threshold, referring-expression expansion on the dependency tree. Rows have GrIT-20M's columns.", "",
             "## Size", "",
             f"| shards | samples read | grounded pairs | rejected | boxes | text spans |",
             "|---|---|---|---|---|---|",
             f"| {totals.get('shards', 'not recorded')} | {totals.get('samples', 'not recorded')} | {kept} | "
             f"{rejected} | {totals.get('boxes', 'not recorded')} | {totals.get('spans', 'not recorded')} |", "",
             "## Files", "",
             "| path | what |", "|---|---|",
             "| `NNNNN.parquet` | the grounded pairs (config `default`) |",
             f"| `{layout.TARS_DIR}/NNNNN.tar` | the same pairs with their images (webdataset: KEY.jpg, KEY.json, KEY.txt) |",
             f"| `{layout.REJECTS_DIR}/NNNNN.parquet` | every sample that did not become a pair: key, status, reason (config `rejects`) |",
             f"| `{layout.STATS_DIR}/NNNNN.json`, `_stats.json` | per-shard and total counts |",
             f"| `{layout.DONE_DIR}/NNNNN.done` | a shard's commit marker |",
             "| `_run.json` | the run's parameters and versions |", "",
             "## Load", "",
             "```python",
             "import pandas as pd; pairs = pd.read_parquet(BUILD)",
             "import datasets; pairs = datasets.load_dataset(BUILD, split=\"train\")",
             "rejects = datasets.load_dataset(BUILD, \"rejects\", split=\"train\")",
             f"import webdataset as wds; images = wds.WebDataset(BUILD + \"/{layout.TARS_DIR}/{{00000..00009}}.tar\")",
             "```", "",
             "## Parameters", "",
             "| parameter | value |", "|---|---|",
             *[f"| `{name}` | `{json.dumps(value)}` |" for name, value in sorted(params.items())], "",
             "## Source data and licence", "",
             f"Input: `{params.get('input', 'not recorded')}`.", "",
             license_note, "",
             "## Citation", "",
             "```bibtex", KOSMOS2_CITATION, "```", ""]
    return "\n".join(lines)


def write_card(url: str, license: str = DEFAULT_LICENSE, source_datasets: list[str] | None = None,
               license_note: str = DEFAULT_LICENSE_NOTE) -> list[str]:
    """Write ``.huggingface.yaml`` and ``_README.md`` into the build (atomically, only where they change);
    returns their names."""
    import yaml

    folder = Folder(url)
    run, totals = _json_object(folder, "_run.json"), _json_object(folder, "_stats.json")
    data = card_data(url, license=license, source_datasets=source_datasets, totals=totals)
    for name, content in ((CARD_YAML, yaml.safe_dump(data, sort_keys=False).encode("utf-8")),
                          (CARD_README, card_markdown(data, run, totals, license_note).encode("utf-8"))):
        try:
            unchanged = folder.read_bytes(name) == content
        except FileNotFoundError:
            unchanged = False
        if not unchanged:   # (a resume that changed nothing leaves the card's files as they were)
            folder.write_bytes(name, content)
    return [CARD_YAML, CARD_README]
