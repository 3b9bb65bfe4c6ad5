"""Location tokens: identical to transformers' Kosmos-2 helpers (spec section 4)."""
import pytest
from hypothesis import given, settings, strategies as st
from transformers.models.kosmos2.processing_kosmos2 import coordinate_to_patch_index, patch_index_to_coordinate

from grit_pipeline.location import HF_SPELLING, PAPER_SPELLING, box_to_cells, cells_to_box, spelling

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def boxes(draw):
    x1, x2 = sorted(draw(st.lists(unit, min_size=2, max_size=2, unique=True)))
    y1, y2 = sorted(draw(st.lists(unit, min_size=2, max_size=2, unique=True)))
    return x1, y1, x2, y2


@settings(max_examples=3000)
@given(boxes(), st.sampled_from([8, 16, 32, 64]))
def test_encoding_matches_transformers(box, grid):
    ours = box_to_cells(box, grid)
    assert all(0 <= i < grid * grid for i in ours)
    # transformers computes ceil(x2 * P - 1), which is -1 (a wrapped or negative index) when x2 * P is below
    # float precision (x2 ~ 1e-100); that case is tested on its own below.
    if box[2] * grid - 1 > -1.0 and box[3] * grid - 1 > -1.0:
        assert ours == tuple(coordinate_to_patch_index(box, grid))


def test_vanishing_box_stays_on_the_grid():
    assert box_to_cells((0.0, 0.0, 1e-100, 1.0), 8) == (0, 7 * 8 + 0)


@settings(max_examples=3000)
@given(st.integers(0, 1023), st.integers(0, 1023))
def test_decoding_matches_transformers(ul, lr):
    assert cells_to_box(ul, lr, 32) == pytest.approx(patch_index_to_coordinate(ul, lr, 32))


def test_grid_edges_and_bins():
    # the whole image: first and last cell; decoded to the bin centres of the corner cells
    assert box_to_cells((0.0, 0.0, 1.0, 1.0)) == (0, 1023)
    # x2 * P integral: transformers' ceil(x2*P - 1) keeps the cell to the left (unilm would not)
    assert box_to_cells((0.0, 0.0, 0.5, 0.5)) == (0, 15 * 32 + 15)
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
