"""Similarity maps of late-interaction retrievers: where on a page each query token matched.
Arrays in, arrays out; no drawing (pages/ui draws them with the OCR relevance overlay).

Inputs: a query's token vectors (q, d) and a page's image-token vectors (rows * cols, d) in
row-major order over its patch grid (colqwen_processor.py: the processor resizes the page keeping
its aspect, cuts it into 14-px patches, and each image token is a merge x merge block of them, so
the (rows, cols) grid = image_grid_thw[1:] // merge covers the WHOLE page).

Grid conventions are relevance.py's: `values[row, col]`, row 0 at the top; `extent = (x0, y0, x1,
y1)` in page pixels is the rectangle the grid covers, here (0, 0, page width, page height), so cell
(i, j) covers x in [j * W / cols, (j + 1) * W / cols), y in [i * H / rows, (i + 1) * H / rows).

- `token_similarities`: (q, rows, cols), <query token t, patch (i, j)>: the map of one token.
- `maxsim_contributions`: (rows, cols), each token's best similarity credited to the patch that
  gave it: the exact decomposition of the MaxSim score (the map sums to it).
- `similarity_map`: one token's map, or the whole query's (the mean over tokens of their similarities
  clipped at 0), stretched to [0, 1] for display like relevance.RelevanceMap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def token_similarities(query: np.ndarray, patches: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(q, rows, cols) float32 dot products of each query token (q, d) with each patch (rows*cols, d)."""
    rows, cols = grid
    patches = np.asarray(patches, np.float32)
    if patches.ndim != 2 or patches.shape[0] != rows * cols:
        raise ValueError(f"{patches.shape[0]} patch vectors do not fill a {rows}x{cols} grid")
    sims = np.asarray(query, np.float32) @ patches.T  # (q, rows*cols)
    return sims.reshape(len(sims), rows, cols)


def maxsim_contributions(sims: np.ndarray) -> np.ndarray:
    """(rows, cols): for every query token, its maximum similarity added at its argmax patch. The
    total equals MaxSim(query, page)."""
    q, rows, cols = sims.shape
    flat = sims.reshape(q, rows * cols)
    best = flat.argmax(axis=1)
    out = np.zeros(rows * cols, np.float32)
    np.add.at(out, best, flat[np.arange(q), best])
    return out.reshape(rows, cols)


def query_similarity(sims: np.ndarray) -> np.ndarray:
    """(rows, cols): the mean over query tokens of their similarity to each patch, clipped at 0."""
    return np.clip(sims, 0.0, None).mean(axis=0)


def page_extent(width: float, height: float) -> tuple[float, float, float, float]:
    """The page-pixel rectangle a patch grid covers: the whole page."""
    return 0.0, 0.0, float(width), float(height)


def cell_box(grid: tuple[int, int], extent: tuple[float, float, float, float], row: int, col: int) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) page pixels of grid cell (row, col)."""
    rows, cols = grid
    x0, y0, x1, y1 = extent
    dx, dy = (x1 - x0) / cols, (y1 - y0) / rows
    return x0 + col * dx, y0 + row * dy, x0 + (col + 1) * dx, y0 + (row + 1) * dy


@dataclass
class SimilarityMap:
    """One query token's (or the whole query's) similarity over a page, ready to draw."""

    values: np.ndarray  # (rows, cols) float32 in [0, 1]: (raw - min) / (max - min), row 0 at the top
    extent: tuple[float, float, float, float]  # page pixels the grid covers (page_extent)
    raw: np.ndarray  # (rows, cols) the similarities before stretching
    token: int | None  # the query token index, None for the whole query
    peak: float  # raw.max(): how well the best patch matched


def similarity_map(sims: np.ndarray, width: float, height: float, token: int | None = None) -> SimilarityMap:
    """The map of query token `token` (an index into sims' first axis), or of the whole query (None)."""
    if token is not None and not 0 <= token < len(sims):
        raise ValueError(f"token {token} is not one of the query's {len(sims)} tokens")
    raw = query_similarity(sims) if token is None else sims[token]
    low, high = float(raw.min()), float(raw.max())
    values = (raw - low) / (high - low) if high > low else np.zeros_like(raw)
    return SimilarityMap(values.astype(np.float32), page_extent(width, height), raw.astype(np.float32), token, high)


@dataclass
class PageSimilarities:
    """What the app needs to draw any token's map of one query over one page."""

    tokens: list[str]  # the query tokens, as text (for the picker)
    sims: np.ndarray  # (q, rows, cols) token_similarities
    grid: tuple[int, int]
    score: float  # MaxSim of the query and the page's unpooled patches (= maxsim_contributions(sims).sum())


def page_similarities(embedder, image, query: str) -> PageSimilarities:
    """Embed `query` and the page `image` (a PIL image) with a late-interaction `embedder`
    (embedders_visual.LateInteractionEmbedder) and compute its token similarities. The page is
    embedded afresh, unpooled, so the map has the patch grid even when the index stores pooled vectors."""
    tokens = embedder.encode_query_tokens(query)
    patches = embedder.encode_page_patches([image])[0]
    sims = token_similarities(tokens.vectors, patches.vectors, patches.grid)
    return PageSimilarities(tokens.tokens, sims, patches.grid, float(maxsim_contributions(sims).sum()))
