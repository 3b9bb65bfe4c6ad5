"""Kosmos-2 location tokens: boxes <-> cells of a P x P grid (GRIT_SPEC section 4).

Encoding matches transformers' ``coordinate_to_patch_index`` and decoding its
``patch_index_to_coordinate``, so text we write reads back the same way in the
Kosmos-2 processor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_GRID = 32  # 224 px image, 7 px bins: 1024 location tokens


def box_to_cells(box, grid: int = DEFAULT_GRID) -> tuple[int, int]:
    """Normalised xyxy box -> (upper-left cell index, lower-right cell index).

    index = y_bin * grid + x_bin; raises ValueError unless x2 > x1 and y2 > y1.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"box {tuple(box)} must have x2 > x1 and y2 > y1")
    ul_x, ul_y = math.floor(x1 * grid), math.floor(y1 * grid)
    lr_x, lr_y = math.ceil(x2 * grid - 1), math.ceil(y2 * grid - 1)
    # Coordinates are validated to [0, 1] upstream; clamp so float noise never leaves the grid.
    ul_x, ul_y, lr_x, lr_y = (min(max(v, 0), grid - 1) for v in (ul_x, ul_y, lr_x, lr_y))
    return ul_y * grid + ul_x, lr_y * grid + lr_x


def cells_to_box(ul_index: int, lr_index: int, grid: int = DEFAULT_GRID) -> tuple[float, float, float, float]:
    """(upper-left, lower-right) cell indices -> normalised xyxy box.

    Corners in the same cell, row or column give cell edges; otherwise bin centres.
    """
    cell = 1.0 / grid
    ul_x, ul_y = ul_index % grid, ul_index // grid
    lr_x, lr_y = lr_index % grid, lr_index // grid
    if ul_index == lr_index or ul_x == lr_x or ul_y == lr_y:
        return ul_x * cell, ul_y * cell, lr_x * cell + cell, lr_y * cell + cell
    half = cell / 2
    return ul_x * cell + half, ul_y * cell + half, lr_x * cell + half, lr_y * cell + half


@dataclass(frozen=True)
class TokenSpelling:
    """How one convention spells the grounding markup."""

    name: str
    phrase_open: str
    phrase_close: str
    object_open: str
    object_close: str
    delimiter: str
    location_format: str  # str.format pattern with one integer field
    grounding: str = "<grounding>"

    def location(self, index: int) -> str:
        return self.location_format.format(index)


HF_SPELLING = TokenSpelling(
    name="hf",
    phrase_open="<phrase>",
    phrase_close="</phrase>",
    object_open="<object>",
    object_close="</object>",
    delimiter="</delimiter_of_multi_objects/>",
    location_format="<patch_index_{:04d}>",
)
PAPER_SPELLING = TokenSpelling(
    name="paper",
    phrase_open="<p>",
    phrase_close="</p>",
    object_open="<box>",
    object_close="</box>",
    delimiter="<delim>",
    location_format="<loc_{}>",
)
SPELLINGS = {s.name: s for s in (HF_SPELLING, PAPER_SPELLING)}


def spelling(name: str) -> TokenSpelling:
    """Look up a spelling by name ('hf' or 'paper')."""
    try:
        return SPELLINGS[name]
    except KeyError:
        raise ValueError(f"unknown token format {name!r}; choose one of {sorted(SPELLINGS)}") from None
