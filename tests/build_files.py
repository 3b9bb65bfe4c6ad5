"""A build's (or stage folder's) files by their names relative to it, the layout's sub-folders included."""
from __future__ import annotations

from pathlib import Path

from grit_pipeline.pipeline import layout


def build_files(folder) -> dict[str, Path]:
    """Relative name (``00000.parquet``, ``_done/00000.done``) -> path of every file at the top of ``folder``
    and in its layout sub-folders (``_done``, ``_webdataset``, ``_rejects``, ``_stats``), sorted by name;
    other folders (``_parts``, ``_logs``, ``_stages``) are left out."""
    folder = Path(folder)
    files = {}
    for sub in ("", *layout.SUBFOLDERS):
        directory = folder / sub if sub else folder
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            if path.is_file():
                files[f"{sub}/{path.name}" if sub else path.name] = path
    return dict(sorted(files.items()))


def done_names(folder) -> list[str]:
    """The relative names of the shard markers in a build or stage folder (``_done/00000.done``), sorted."""
    markers = Path(folder).glob(f"{layout.DONE_DIR}/*{layout.DONE_SUFFIX}")
    return sorted(f"{layout.DONE_DIR}/{path.name}" for path in markers)


def temp_files(folder) -> list[Path]:
    """Half-written files (``NAME.tmp-*``) at the top of a build or stage folder and in its sub-folders."""
    folder = Path(folder)
    return sorted([*folder.glob("*.tmp-*"), *folder.glob("_*/*.tmp-*")])
