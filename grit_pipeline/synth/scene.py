"""Synthetic scenes: one to five coloured shapes on a varied background, rendered with PIL.

A scene is plain data (``Scene``); ``render_scene`` turns it into an RGB image. Everything is drawn from
one ``random.Random`` so a scene is a pure function of its seed.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from .vocab import BACKGROUNDS, COLOURS, SHAPES

MIN_SIDE, MAX_SIDE = 160, 320


@dataclass
class SceneObject:
    shape: str
    colour: str
    size: str                          # "small" | "medium" | "large"
    centre: tuple[float, float]        # pixels
    radius: float                      # pixels: half the side of the shape's square extent
    rotation: float                    # degrees (triangles, squares, diamonds, stars, crosses)
    group: int                         # objects of one group share shape and colour
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # normalised xyxy, clipped to the image


@dataclass
class Scene:
    width: int
    height: int
    background: str                    # a key of vocab.BACKGROUNDS
    background_colours: tuple[tuple[int, int, int], tuple[int, int, int]]
    background_seed: int
    objects: list[SceneObject] = field(default_factory=list)
    jpeg_quality: int = 90


def _muted(rng: random.Random) -> tuple[int, int, int]:
    # low saturation, mid value: white, black and every palette colour stay visible on it
    base = rng.randint(95, 175)
    return tuple(int(min(255, max(0, base + rng.randint(-18, 18)))) for _ in range(3))


def _shape_points(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    def polygon(n: int, radius_at, offset: float) -> list[tuple[float, float]]:
        pts = []
        for i in range(n):
            a = math.radians(offset + rot + 360.0 * i / n)
            rr = radius_at(i)
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts

    if shape == "square":
        return polygon(4, lambda i: r * 1.0, 45.0 if abs(rot) < 1e-9 else 45.0)
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.7, cy), (cx, cy + r), (cx - r * 0.7, cy)]
    if shape == "triangle":
        return polygon(3, lambda i: r, -90.0)
    if shape == "star":
        return polygon(10, lambda i: r if i % 2 == 0 else r * 0.45, -90.0)
    if shape == "cross":
        t = r * 0.33
        return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t),
                (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t),
                (cx - r, cy - t), (cx - t, cy - t)]
    raise ValueError(shape)


def object_extent(obj: SceneObject) -> tuple[float, float, float, float]:
    """Pixel xyxy of the drawn shape (before clipping)."""
    cx, cy = obj.centre
    r = obj.radius
    if obj.shape in ("circle", "ring"):
        return (cx - r, cy - r, cx + r, cy + r)
    pts = _shape_points(obj.shape, cx, cy, r, obj.rotation)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (min(xs), min(ys), max(xs), max(ys))


def _overlap_ok(a: tuple, boxes: list[tuple]) -> bool:
    """Allow some overlap, but never hide more than 35% of an earlier box or overlap at IoU > 0.3."""
    ax1, ay1, ax2, ay2 = a
    area_a = (ax2 - ax1) * (ay2 - ay1)
    for b in boxes:
        bx1, by1, bx2, by2 = b
        iw, ih = min(ax2, bx2) - max(ax1, bx1), min(ay2, by2) - max(ay1, by1)
        if iw <= 0 or ih <= 0:
            continue
        inter = iw * ih
        area_b = (bx2 - bx1) * (by2 - by1)
        if inter / area_b > 0.35 or inter / area_a > 0.35 or inter / (area_a + area_b - inter) > 0.3:
            return False
    return True


LEVELS = (1, 2, 3)


def random_scene(rng: random.Random, level: int = 3) -> Scene:
    """Draw a scene: size, background, then objects of distinct (shape, colour) per group.

    ``level`` 3: 1-5 objects in 1-4 groups; 2: two single objects; 1: one object (curriculum worlds)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    width, height = rng.randint(MIN_SIDE, MAX_SIDE), rng.randint(MIN_SIDE, MAX_SIDE)
    background = rng.choice(sorted(BACKGROUNDS))
    scene = Scene(width, height, background, (_muted(rng), _muted(rng)), rng.randrange(2**31),
                  jpeg_quality=rng.randint(70, 95))
    if level < 3:
        counts = [1] * level
        kinds = rng.sample([(s, c) for s in SHAPES for c in COLOURS], level)
    else:
        n_objects = rng.choices([1, 2, 3, 4, 5], weights=[2, 3, 3, 2, 1])[0]
        kinds = rng.sample([(s, c) for s in SHAPES for c in COLOURS], 4)
        counts = []
        left = n_objects
        while left > 0:
            c = 1 if left == 1 or rng.random() < 0.7 else rng.randint(2, min(3, left))
            counts.append(c)
            left -= c
        counts = counts[:4]
    short = min(width, height)
    placed: list[tuple] = []
    for group, (count, (shape, colour)) in enumerate(zip(counts, kinds)):
        size = rng.choice(["small", "medium", "large"]) if count == 1 else rng.choice(["small", "medium"])
        for _ in range(count):
            for _attempt in range(30):
                frac = {"small": (0.07, 0.10), "medium": (0.12, 0.16), "large": (0.19, 0.25)}[size]
                r = short * rng.uniform(*frac)
                if rng.random() < 0.2:   # touch the border: centre near an edge, at least half inside
                    cx = rng.choice([rng.uniform(0, r * 0.5), width - rng.uniform(0, r * 0.5)])
                    cy = rng.uniform(r, height - r)
                    if rng.random() < 0.5:
                        cx, cy = rng.uniform(r, width - r), rng.choice([rng.uniform(0, r * 0.5), height - rng.uniform(0, r * 0.5)])
                else:
                    cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
                rotation = rng.choice([0.0, 0.0, rng.uniform(-25, 25)])
                obj = SceneObject(shape, colour, size, (cx, cy), r, rotation, group)
                ext = object_extent(obj)
                if _overlap_ok(ext, placed):
                    placed.append(ext)
                    x1, y1, x2, y2 = ext
                    obj.box = (max(0.0, x1) / width, max(0.0, y1) / height, min(width, x2) / width,
                               min(height, y2) / height)
                    scene.objects.append(obj)
                    break
    return scene


def _background(scene: Scene) -> np.ndarray:
    h, w = scene.height, scene.width
    rng = np.random.default_rng(scene.background_seed)
    c1, c2 = (np.array(c, dtype=np.float32) for c in scene.background_colours)
    kind = scene.background
    if kind == "flat":
        img = np.broadcast_to(c1, (h, w, 3)).copy()
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xx / w * np.cos(angle) + yy / h * np.sin(angle)
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
        img = c1 * (1 - t[..., None]) + c2 * t[..., None]
    elif kind == "noise":
        img = c1 + rng.normal(0, 22, size=(h, w, 1)).astype(np.float32) + rng.normal(0, 8, size=(h, w, 3)).astype(np.float32)
    elif kind == "stripes":
        period = int(rng.integers(6, 20))
        yy, xx = np.mgrid[0:h, 0:w]
        axis = xx if rng.random() < 0.5 else yy
        img = np.where(((axis // period) % 2 == 0)[..., None], c1, c2)
    elif kind == "checker":
        period = int(rng.integers(8, 24))
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.where((((xx // period) + (yy // period)) % 2 == 0)[..., None], c1, c2)
    elif kind == "dots":
        period = int(rng.integers(10, 22))
        yy, xx = np.mgrid[0:h, 0:w]
        d = ((xx % period) - period / 2) ** 2 + ((yy % period) - period / 2) ** 2
        img = np.where((d < (period / 4) ** 2)[..., None], c2, c1)
    else:
        raise ValueError(f"unknown background {kind!r}")
    return np.clip(img, 0, 255).astype(np.uint8)


def render_scene(scene: Scene) -> Image.Image:
    """The scene as an RGB PIL image (objects drawn in list order, later ones on top)."""
    image = Image.fromarray(_background(scene), "RGB")
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        colour = COLOURS[obj.colour]
        cx, cy = obj.centre
        r = obj.radius
        if obj.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        elif obj.shape == "ring":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=max(2, int(r * 0.3)))
        else:
            draw.polygon(_shape_points(obj.shape, cx, cy, r, obj.rotation), fill=colour)
    return image
