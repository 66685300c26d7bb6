"""Similarity-map maths (search_engine/similarity_maps.py): shapes, the MaxSim decomposition, and a
planted match that must land on the planted page pixels."""
from __future__ import annotations

import numpy as np
import pytest

from search_engine.multivector_search import maxsim
from search_engine.similarity_maps import (cell_box, maxsim_contributions, page_extent, similarity_map,
                                           token_similarities)


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("grid, page", [((9, 6), (600, 800)), ((4, 13), (1200, 400)), ((7, 7), (300, 300))])
def test_a_planted_patch_lights_up_its_page_pixels(grid, page):
    rng = np.random.default_rng(1)
    rows, cols = grid
    patches = _unit(rng.normal(size=(rows * cols, 32)))
    query = _unit(rng.normal(size=(5, 32)))
    row, col = rows - 2, cols // 3  # plant token 2 at patch (row, col)
    patches[row * cols + col] = query[2]
    sims = token_similarities(query, patches, grid)
    assert sims.shape == (5, rows, cols)
    planted = similarity_map(sims, *page, token=2)
    assert planted.values.shape == grid and planted.extent == page_extent(*page) == (0, 0, *page)
    assert np.unravel_index(planted.values.argmax(), grid) == (row, col)
    assert planted.values.max() == 1.0 and planted.peak == pytest.approx(1.0, abs=1e-5)
    x0, y0, x1, y1 = cell_box(grid, planted.extent, row, col)
    # the cell is where the planted patch sits on the page: its share of the width and height
    assert (x0, y0) == pytest.approx((col * page[0] / cols, row * page[1] / rows))
    assert (x1 - x0, y1 - y0) == pytest.approx((page[0] / cols, page[1] / rows))
    whole = similarity_map(sims, *page)
    assert whole.token is None and whole.values.shape == grid and 0 <= whole.values.min() <= whole.values.max() <= 1


def test_contributions_sum_to_the_maxsim_score():
    rng = np.random.default_rng(2)
    patches, query = _unit(rng.normal(size=(12, 8))), _unit(rng.normal(size=(4, 8)))
    sims = token_similarities(query, patches, (3, 4))
    contributions = maxsim_contributions(sims)
    assert contributions.shape == (3, 4)
    assert float(contributions.sum()) == pytest.approx(maxsim(query, patches), rel=1e-5)
    assert (contributions != 0).sum() <= 4  # at most one patch per query token


def test_bad_grids_and_tokens_are_refused():
    with pytest.raises(ValueError, match="do not fill a 3x3 grid"):
        token_similarities(np.ones((1, 2)), np.ones((8, 2)), (3, 3))
    with pytest.raises(ValueError, match="not one of the query's 1 tokens"):
        similarity_map(np.ones((1, 2, 2)), 10, 10, token=3)
