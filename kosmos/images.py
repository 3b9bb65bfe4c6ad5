"""How an image is fitted to the model's square input, and where a box lands in what the model sees."""
from __future__ import annotations

from typing import Any


def crop_frame(width: int, height: int, image_mode: str) -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom) of the region the model sees."""
    if image_mode == "square":
        return 0, 0, width, height
    if image_mode != "crop":
        raise ValueError(f"image_mode must be 'crop' or 'square', got {image_mode!r}")
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def random_region(region: tuple[int, int, int, int], min_scale: float, rng) -> tuple[int, int, int, int]:
    """A random part of a pixel ``region``: each side ``s`` times the region's (``s`` uniform in
    [min_scale, 1], the same for both sides, so the shape is kept), at a uniform position inside it."""
    left, top, right, bottom = region
    scale = rng.uniform(min_scale, 1.0)
    width, height = max(1, round((right - left) * scale)), max(1, round((bottom - top) * scale))
    x0 = left + rng.randint(0, right - left - width)
    y0 = top + rng.randint(0, bottom - top - height)
    return x0, y0, x0 + width, y0 + height


def prepare_image(image, image_size: int, image_mode: str = "crop", zoom: tuple[float, Any] | None = None):
    """Resize (+ centre crop) to ``image_size`` square; returns (image, frame) where frame is the visible
    region as normalised (x0, y0, w, h) of the original image (predict maps boxes back with it).
    ``zoom``: (min_scale, rng): the model sees a random part of that region instead (``random_region``)."""
    from PIL import Image

    width, height = image.size
    left, top, right, bottom = crop_frame(width, height, image_mode)
    if zoom is not None and zoom[0] < 1.0:
        left, top, right, bottom = random_region((left, top, right, bottom), zoom[0], zoom[1])
    if (left, top, right, bottom) != (0, 0, width, height):
        image = image.crop((left, top, right, bottom))
    image = image.resize((image_size, image_size), Image.BICUBIC)
    frame = (left / width, top / height, (right - left) / width, (bottom - top) / height)
    return image, frame


def move_box(box, frame, min_area_kept: float = 0.2):
    """A normalised box in the original image -> the same box in the visible ``frame``; None when it keeps
    less than ``min_area_kept`` of its area (or nothing) inside the frame."""
    x0, y0, fw, fh = frame
    x1, y1, x2, y2 = box
    area = (x2 - x1) * (y2 - y1)
    nx1, ny1 = max((x1 - x0) / fw, 0.0), max((y1 - y0) / fh, 0.0)
    nx2, ny2 = min((x2 - x0) / fw, 1.0), min((y2 - y0) / fh, 1.0)
    if nx2 <= nx1 or ny2 <= ny1 or area <= 0:
        return None
    kept = (nx2 - nx1) * fw * (ny2 - ny1) * fh / area
    if kept < min_area_kept:
        return None
    return (nx1, ny1, nx2, ny2)


def mirror_box(box):
    """A normalised box -> the same box in the left-right mirrored image."""
    x1, y1, x2, y2 = box
    return (1.0 - x2, y1, 1.0 - x1, y2)
