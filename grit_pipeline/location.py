"""Kosmos-2 location tokens: boxes <-> cells of a P x P grid (Kosmos-2 paper, section 3.1).

Two encodings of the lower-right corner exist and both are here (``cell_rule``):

- ``official`` (default): the released training loader's ``get_box_coords_index``
  (microsoft/unilm ``kosmos-2/unilm/data/vl/obj_utils.py``): ``floor(min(x2, 0.99999) / (1/P))``, the
  text the released Kosmos-2 checkpoint was trained on;
- ``transformers``: ``coordinate_to_patch_index`` of ``transformers.models.kosmos2``: ``ceil(x2 * P - 1)``.

They differ only when ``x2 * P`` (or ``y2 * P``) is a whole number below P: a box ending exactly on a cell
edge ends in the next cell under ``official`` and in the cell before under ``transformers``. The upper-left
corner is ``floor(x1 * P)`` in both. Decoding is the same in unilm and transformers
(``patch_index_to_coordinate``), so text written under either rule reads back in the Kosmos-2 processor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_GRID = 32  # 224 px image, 7 px bins: 1024 location tokens
CELL_RULES = ("official", "transformers")
DEFAULT_CELL_RULE = "official"
_OFFICIAL_MAX_CORNER = 0.99999  # the released loader's cap on x2 / y2 before flooring


def check_grid(grid) -> int:
    """``grid`` as a positive int, or ValueError (``--grid 0`` would write negative location tokens)."""
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"grid must be a positive integer, got {grid!r}")
    return grid


def check_cell_rule(cell_rule: str) -> str:
    if cell_rule not in CELL_RULES:
        raise ValueError(f"unknown cell rule {cell_rule!r}; choose one of {', '.join(CELL_RULES)}")
    return cell_rule


def box_to_cells(box, grid: int = DEFAULT_GRID, cell_rule: str = DEFAULT_CELL_RULE) -> tuple[int, int]:
    """Normalised xyxy box -> (upper-left cell index, lower-right cell index).

    index = y_bin * grid + x_bin. ``cell_rule`` picks the lower-right encoding (module docstring). Raises
    ValueError unless the coordinates are finite numbers with x2 > x1 and y2 > y1.
    """
    check_grid(grid)
    check_cell_rule(cell_rule)
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"box {box!r} is not four numbers") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"box {tuple(box)} has a non-finite coordinate")
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"box {tuple(box)} must have x2 > x1 and y2 > y1")
    if cell_rule == "official":
        cell = 1.0 / grid  # divided by the cell size, as the released code does (not multiplied by P)
        ul_x, ul_y = math.floor(max(x1, 0.0) / cell), math.floor(max(y1, 0.0) / cell)
        lr_x = math.floor(min(x2, _OFFICIAL_MAX_CORNER) / cell)
        lr_y = math.floor(min(y2, _OFFICIAL_MAX_CORNER) / cell)
    else:
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
