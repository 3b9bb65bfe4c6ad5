"""Location tokens: the released loader's cells (official) and transformers' (Kosmos-2 paper, section 3.1)."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from transformers.models.kosmos2.processing_kosmos2 import coordinate_to_patch_index, patch_index_to_coordinate

from grit_pipeline.location import (CELL_RULES, HF_SPELLING, PAPER_SPELLING, box_to_cells, cells_to_box,
                                   check_grid, spelling)

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def boxes(draw):
    x1, x2 = sorted(draw(st.lists(unit, min_size=2, max_size=2, unique=True)))
    y1, y2 = sorted(draw(st.lists(unit, min_size=2, max_size=2, unique=True)))
    return x1, y1, x2, y2


@settings(max_examples=3000)
@given(boxes(), st.sampled_from([8, 16, 32, 64]))
def test_encoding_matches_transformers(box, grid):
    ours = box_to_cells(box, grid, cell_rule="transformers")
    assert all(0 <= i < grid * grid for i in ours)
    # transformers computes ceil(x2 * P - 1), which is -1 (a wrapped or negative index) when x2 * P is below
    # float precision (x2 ~ 1e-100); that case is tested on its own below.
    if box[2] * grid - 1 > -1.0 and box[3] * grid - 1 > -1.0:
        assert ours == tuple(coordinate_to_patch_index(box, grid))


def test_vanishing_box_stays_on_the_grid():
    for rule in CELL_RULES:
        assert box_to_cells((0.0, 0.0, 1e-100, 1.0), 8, rule) == (0, 7 * 8 + 0)


def released_loader_cells(box, grid):
    """The formula of the released loader (unilm kosmos-2 ``obj_utils.get_box_coords_index``), in numpy."""
    cell_size = 1.0 / grid
    ul_x, ul_y = int(np.floor(max(box[0], 0) / cell_size)), int(np.floor(max(box[1], 0) / cell_size))
    lr_x = int(np.floor(min(box[2], 0.99999) / cell_size))
    lr_y = int(np.floor(min(box[3], 0.99999) / cell_size))
    return ul_x + ul_y * grid, lr_x + lr_y * grid


GRID_PAIRS = [(a / 32, c / 32) for a, c in itertools.combinations(range(33), 2)]  # every x1 < x2 on k/32


def test_both_rules_on_every_multiple_of_a_32nd():
    differing = agreeing_expected = 0
    for (x1, x2), (y1, y2) in itertools.product(GRID_PAIRS, GRID_PAIRS[::7]):
        box = (x1, y1, x2, y2)
        official = box_to_cells(box, 32, "official")
        transformers = box_to_cells(box, 32, "transformers")
        assert official == released_loader_cells(box, 32)
        assert transformers == tuple(coordinate_to_patch_index(box, 32))
        # on a cell edge below 1 the official corner is one cell further right / down
        shift_x = 1 if x2 < 1 else 0
        shift_y = 32 if y2 < 1 else 0
        assert official[0] == transformers[0] and official[1] == transformers[1] + shift_x + shift_y
        differing += official != transformers
        agreeing_expected += x2 == 1 and y2 == 1
    assert differing == len(GRID_PAIRS) * len(GRID_PAIRS[::7]) - agreeing_expected > 0


@settings(max_examples=300)
@given(boxes(), st.sampled_from([8, 16, 32, 64]))
def test_official_encoding_matches_the_released_loader(box, grid):
    assert box_to_cells(box, grid, "official") == released_loader_cells(box, grid)


def test_grid_and_rule_are_checked():
    for bad in (0, -3, 1.5, True, "32"):
        with pytest.raises(ValueError, match="positive integer"):
            check_grid(bad)
    with pytest.raises(ValueError, match="positive integer"):
        box_to_cells((0.1, 0.1, 0.5, 0.5), 0)
    with pytest.raises(ValueError, match="cell rule"):
        box_to_cells((0.1, 0.1, 0.5, 0.5), 32, "unilm")
    for bad in ((0.1, 0.1, float("nan"), 0.5), (0.1, 0.1, float("inf"), 0.5), ("a", 0, 1, 1), (10**400, 0, 1, 1)):
        with pytest.raises(ValueError):
            box_to_cells(bad)


@settings(max_examples=3000)
@given(st.integers(0, 1023), st.integers(0, 1023))
def test_decoding_matches_transformers(ul, lr):
    assert cells_to_box(ul, lr, 32) == pytest.approx(patch_index_to_coordinate(ul, lr, 32))


def test_grid_edges_and_bins():
    # the whole image: first and last cell; decoded to the bin centres of the corner cells
    assert box_to_cells((0.0, 0.0, 1.0, 1.0)) == (0, 1023)
    # x2 * P integral: transformers' ceil(x2*P - 1) keeps the cell to the left, the released loader's
    # floor(min(x2, 0.99999) * P) takes the cell to the right
    assert box_to_cells((0.0, 0.0, 0.5, 0.5), cell_rule="transformers") == (0, 15 * 32 + 15)
    assert box_to_cells((0.0, 0.0, 0.5, 0.5)) == (0, 16 * 32 + 16)
    # one cell -> that cell's edges
    assert cells_to_box(33, 33) == (1 / 32, 1 / 32, 2 / 32, 2 / 32)
    # same row -> edges, different row and column -> centres
    assert cells_to_box(0, 3) == (0.0, 0.0, 4 / 32, 1 / 32)
    assert cells_to_box(0, 33) == (0.5 / 32, 0.5 / 32, 1.5 / 32, 1.5 / 32)


@pytest.mark.parametrize("box", [(0.5, 0.1, 0.5, 0.9), (0.6, 0.1, 0.5, 0.9), (0.1, 0.9, 0.5, 0.2)])
def test_degenerate_box_is_refused(box):
    with pytest.raises(ValueError, match="x2 > x1"):
        box_to_cells(box)


def test_spellings():
    assert HF_SPELLING.location(7) == "<patch_index_0007>"
    assert PAPER_SPELLING.location(7) == "<loc_7>"
    assert spelling("paper") is PAPER_SPELLING
    with pytest.raises(ValueError, match="unknown token format"):
        spelling("xml")
