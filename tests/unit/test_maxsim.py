"""MaxSim over pages stored as row spans of one matrix (search_engine/multivector_search.py)."""
from __future__ import annotations

import numpy as np
import pytest

from search_engine.multivector_search import maxsim, maxsim_scores, mean_vector, top_k


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("block_rows", [7, 64, 1_000_000])
def test_maxsim_scores_equal_the_einsum_formula_with_gaps_and_any_order(block_rows):
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 20, size=40)
    gaps = rng.integers(0, 3, size=40)  # dead rows of removed pages between live ones
    starts = np.cumsum(np.concatenate([[0], (counts + gaps)[:-1]])) + gaps[0]
    matrix = _unit(rng.normal(size=(int(starts[-1] + counts[-1] + 5), 16))).astype(np.float16)
    query = _unit(rng.normal(size=(6, 16)))
    shuffled = rng.permutation(40)
    scores = maxsim_scores(query, matrix, starts[shuffled], counts[shuffled], block_rows=block_rows)
    expected = [maxsim(query, matrix[s : s + c]) for s, c in zip(starts[shuffled], counts[shuffled])]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)


def test_a_page_without_vectors_is_refused():
    with pytest.raises(ValueError, match="at least one vector"):
        maxsim_scores(np.ones((1, 2), np.float32), np.ones((3, 2), np.float32), np.array([0, 1]), np.array([1, 0]))
    assert maxsim_scores(np.ones((1, 2)), np.ones((3, 2)), np.zeros(0), np.zeros(0)).shape == (0,)


def test_top_k_is_best_first_with_ties_by_id():
    scores, ids = top_k(np.array([0.5, 0.9, 0.5, 0.1]), np.array([7, 3, 2, 9]), 3)
    assert ids.tolist() == [3, 2, 7] and scores.tolist() == pytest.approx([0.9, 0.5, 0.5])


def test_mean_vector_is_a_unit_vector():
    v = mean_vector(np.array([[1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(v, [2 ** -0.5, 2 ** -0.5], rtol=1e-6)


def test_scattered_pages_are_gathered_and_scored_like_the_formula():
    rng = np.random.default_rng(3)
    counts = np.full(100, 10)
    starts = np.arange(100) * 10
    matrix = _unit(rng.normal(size=(1000, 8))).astype(np.float16)
    query = _unit(rng.normal(size=(3, 8)))
    chosen = np.array([90, 3, 47, 12])  # a candidate stage's picks: far apart, any order
    scores = maxsim_scores(query, matrix, starts[chosen], counts[chosen])
    np.testing.assert_allclose(scores, [maxsim(query, matrix[s : s + 10]) for s in starts[chosen]], rtol=1e-5)
