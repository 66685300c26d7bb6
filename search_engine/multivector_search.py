"""MaxSim (late-interaction) scoring of pages stored as rows of one big matrix. Arrays in, arrays out.

A page i is rows [starts[i], starts[i] + counts[i]) of `matrix` (total rows, dim), float16 or float32,
unit rows; a query is (q, dim) float32 unit rows. MaxSim(query, page) = sum over query tokens t of
max over the page's rows r of <query[t], matrix[r]> (ColBERT / ColPali scoring).
"""
from __future__ import annotations

import numpy as np

BLOCK_ROWS = 8_192  # rows converted to float32 and multiplied at once (4 MB at dim 128: stays in cache;
# 262,144-row blocks (134 MB, fresh pages every block) made a 10k-page scan 1.3x slower)


def maxsim(query: np.ndarray, page: np.ndarray) -> float:
    """MaxSim of one query (q, d) and one page (n, d): the reference formula."""
    return float(np.einsum("qd,nd->qn", query.astype(np.float32), page.astype(np.float32)).max(axis=1).sum())


def maxsim_scores(query: np.ndarray, matrix: np.ndarray, starts: np.ndarray, counts: np.ndarray,
                  block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """MaxSim of `query` with every page (starts[i], counts[i]) of `matrix`: (pages,) float32.

    Pages are visited in order of `starts` in blocks of at most `block_rows` of their rows (or one
    page, if larger); within a block one matrix product gives every (row, query token) similarity and
    `np.maximum.reduceat` takes each page's maximum per token. Every count must be >= 1."""
    query = np.ascontiguousarray(query, dtype=np.float32)
    starts, counts = np.asarray(starts, np.int64), np.asarray(counts, np.int64)
    if len(starts) == 0:
        return np.zeros(0, np.float32)
    if counts.min() < 1:
        raise ValueError("every page needs at least one vector")
    order = np.argsort(starts, kind="stable")
    scores = np.empty(len(starts), np.float32)
    first = 0
    while first < len(order):
        last, rows = first, int(counts[order[first]])
        while last + 1 < len(order) and rows + int(counts[order[last + 1]]) <= block_rows:
            last += 1
            rows += int(counts[order[last]])
        pages = order[first : last + 1]
        scores[pages] = _block_scores(query, matrix, starts[pages], counts[pages], rows)
        first = last + 1
    return scores


def _block_scores(query, matrix, starts, counts, rows: int) -> np.ndarray:
    """MaxSim of pages (sorted by start) holding `rows` rows in all. Pages close together are read
    as one slice (the rows between them, dead or other pages', cost little); scattered ones (a
    candidate stage's) are gathered first, so their cost is their own rows only."""
    lo, hi = int(starts[0]), int((starts + counts).max())
    if hi - lo <= rows + rows // 2:
        block, bounds_start = np.asarray(matrix[lo:hi], dtype=np.float32), starts - lo
    else:
        block = np.concatenate([np.asarray(matrix[s : s + c], dtype=np.float32) for s, c in zip(starts, counts)])
        bounds_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sims = block @ query.T  # (rows in block, q)
    sims = np.vstack([sims, np.full((1, sims.shape[1]), -np.inf, np.float32)])  # lets a segment end at the last row
    bounds = np.empty(2 * len(starts), np.int64)
    bounds[0::2] = bounds_start
    bounds[1::2] = bounds_start + counts
    return np.maximum.reduceat(sims, bounds, axis=0)[0::2].sum(axis=1)  # (pages,)


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the k best, best first; ties by id."""
    order = np.lexsort((ids, -scores))[:k]
    return scores[order].astype(np.float32), ids[order].astype(np.int64)


def mean_vector(vectors: np.ndarray) -> np.ndarray:
    """The normalised mean of unit rows (n, d) -> (d,): a page's (or query's) one vector for the
    candidate stage, which ranks pages by <mean(query), mean(page)>."""
    mean = np.asarray(vectors, np.float32).mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
