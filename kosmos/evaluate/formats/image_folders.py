"""Labelled images: a folder with one subfolder per class (ImageNet-style, rendered SST-2) or a JSON list / JSON lines
of ``{"image", "label"}``."""
from __future__ import annotations

from pathlib import Path

from kosmos.evaluate.formats.common import read_records, record_field

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")


def read_labelled_images(path, images_dir=None, what: str = "annotations") -> list[dict]:
    """``[{"id", "image", "label"}]`` from an image folder with one subfolder per class (``CLASS/x.png``; the id is
    the path inside the folder) or a JSON list / JSON lines of ``{"image", "label"}`` (images relative to
    ``images_dir``, default the file's folder). Sorted by id for folders, file order otherwise."""
    path = Path(path)
    if path.is_dir():
        out = [{"id": str(p.relative_to(path)), "image": str(p), "label": p.parent.name}
               for p in sorted(path.glob("*/*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not out:
            raise ValueError(f"{what} {path}: no images in class subfolders (CLASS/NAME.jpg)")
        return out
    base = Path(images_dir) if images_dir else path.parent
    out = []
    for where, record in read_records(path, what):
        image = record_field(record, "image", where)
        label = record_field(record, "label", where, (str, int))
        out.append({"id": record.get("id", image), "image": str(base / image), "label": label})
    return out
