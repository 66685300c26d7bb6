"""Retrieval relevance maps: which text on a page matches a query. Arrays in, arrays out; no drawing.

For one query and one indexed page we score every OCR (or text-layer) box on two signals:
- dense: cosine similarity between the query embedding and the box text embedding (the same
  embedder the index searches with), clipped at 0;
- lexical: the share of the query's term weight found in the box, with BM25-style IDF weights
  computed over the page's boxes (a term on every line of the page says little about any one line),
  using the index's own `tokenize()` so that a match here is a match for the retriever.
They are mixed into one score per box in [0, 1]. Tables get one more signal: a cell whose row
header and column header both match the query is where the answer usually sits, though the cell
itself (a number) matches nothing, so such cells inherit the geometric mean of their row's and
column's best matches.

`paint_boxes` then paints box scores into a page-space grid. Grid conventions (shared with
agent/figures.py and agent/attention.py): `values[row, col]`, row 0 at the top of the page;
`extent = (x0, y0, x1, y1)` in page pixels is the rectangle the whole grid covers, so cell (i, j)
covers x in [x0 + j*dx, x0 + (j+1)*dx), y in [y0 + i*dy, y0 + (i+1)*dy) with dx = (x1-x0)/cols,
dy = (y1-y0)/rows.

Box embeddings cost one encoder call per page (~50-500 ms), so they are computed once per page and
kept in a `BoxCache` that the caller owns and passes in; with a warm cache a map costs one query
embedding plus a little numpy (see bench/relevance_speed.py).
"""
from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from .types import Page, TextBox

log = logging.getLogger(__name__)


class Embedder(Protocol):
    """What relevance needs from search_engine.embedders: normalised float32 rows."""

    def encode_texts(self, texts: list[str]) -> np.ndarray: ...

    def encode_query(self, text: str) -> np.ndarray: ...


Tokenizer = Callable[[str], list[str]]


@dataclass(frozen=True)
class RelevanceWeights:
    """How the signals mix. dense + lexical should sum to 1 so a box score stays in [0, 1]."""

    dense: float = 0.4
    lexical: float = 0.6
    table: float = 0.9  # a table cell's inherited score is scaled by this (< 1: a direct match wins ties)
    k1: float = 1.2  # BM25 term-frequency saturation within a box
    b: float = 0.5  # BM25 length normalisation (boxes are short lines; a mild penalty on long ones)


@dataclass
class BoxScores:
    """Per-box scores for one query on one page, all arrays of shape (n_boxes,), aligned with page.boxes."""

    dense: np.ndarray  # cosine similarity clipped to [0, 1]
    lexical: np.ndarray  # BM25-weighted share of the query terms, in [0, 1]
    table: np.ndarray  # inherited from the matching row and column headers, in [0, 1]
    combined: np.ndarray  # max(dense*w + lexical*w, table*w_table), in [0, 1]


@dataclass
class RelevanceMap:
    """Box scores painted on a page grid. `values` is in [0, 1] relative to this page's best box."""

    values: np.ndarray  # (rows, cols) float32, row 0 at the top
    extent: tuple[float, float, float, float]  # (x0, y0, x1, y1) page pixels the grid covers
    box_scores: BoxScores
    peak: float  # the largest combined box score before normalisation (0: nothing on the page matches)


@dataclass
class _PageText:
    fingerprint: str
    embeddings: np.ndarray  # (n_boxes, dim) normalised float32
    tokens: list[Counter]  # term counts per box


@dataclass
class BoxCache:
    """Box embeddings and tokens per page, for one embedder. Create one per (index, embedder) and keep it.

    Entries are keyed by page id and checked against a fingerprint of the page's box texts, so a
    re-ingested page with new text is recomputed rather than served stale.
    """

    embedder: Embedder
    tokenize: Tokenizer
    _pages: dict[str, _PageText] = field(default_factory=dict, repr=False)

    def page_text(self, page: Page) -> _PageText:
        texts = [b.text for b in page.boxes]
        fingerprint = hashlib.sha1("\x1f".join(texts).encode("utf-8")).hexdigest()
        cached = self._pages.get(page.page_id)
        if cached is not None and cached.fingerprint == fingerprint:
            return cached
        if texts:
            embeddings = np.asarray(self.embedder.encode_texts(texts), dtype=np.float32)
        else:
            embeddings = np.zeros((0, 0), dtype=np.float32)
        entry = _PageText(fingerprint, embeddings, [Counter(self.tokenize(t)) for t in texts])
        self._pages[page.page_id] = entry
        log.debug("embedded %d boxes of page %s", len(texts), page.page_id)
        return entry

    def __len__(self) -> int:
        return len(self._pages)


def box_relevance(query: str, page: Page, cache: BoxCache, weights: RelevanceWeights = RelevanceWeights()) -> BoxScores:
    """Score every box of `page` against `query` (see the module docstring)."""
    n = len(page.boxes)
    if n == 0:
        empty = np.zeros(0, dtype=np.float32)
        return BoxScores(empty, empty, empty, empty)
    text = cache.page_text(page)
    q = np.asarray(cache.embedder.encode_query(query), dtype=np.float32).reshape(-1)
    dense = np.clip(text.embeddings @ q, 0.0, 1.0)
    lexical = lexical_scores(cache.tokenize(query), text.tokens, k1=weights.k1, b=weights.b)
    direct = weights.dense * dense + weights.lexical * lexical
    table = table_scores(direct, [b.box for b in page.boxes])
    combined = np.maximum(direct, weights.table * table)
    return BoxScores(dense.astype(np.float32), lexical, table, combined.astype(np.float32))


def relevance_map(
    query: str,
    page: Page,
    cache: BoxCache,
    grid_shape: tuple[int, int] | None = None,
    weights: RelevanceWeights = RelevanceWeights(),
) -> RelevanceMap:
    """Box scores for `query` painted over the whole page. `grid_shape` (rows, cols) defaults to `grid_for`."""
    scores = box_relevance(query, page, cache, weights)
    size = (page.width, page.height)
    grid_shape = grid_shape or grid_for(size)
    values = paint_boxes(scores.combined, [b.box for b in page.boxes], size, grid_shape)
    peak = float(scores.combined.max()) if len(scores.combined) else 0.0
    return RelevanceMap(values=values, extent=(0.0, 0.0, float(page.width), float(page.height)), box_scores=scores, peak=peak)


# --- the maths, on plain arrays -----------------------------------------------------------------


def lexical_scores(query_tokens: list[str], box_tokens: list[Counter], k1: float = 1.2, b: float = 0.5) -> np.ndarray:
    """Per box, the BM25 score of the query over the page's boxes divided by its ceiling, in [0, 1].

    IDF is computed with the boxes of this page as the documents. The ceiling is the score of a box
    of average length holding every query term once, so a line that holds all the query's terms
    scores about 1 and one that holds only a common term scores near 0. Query terms that occur
    nowhere on the page add nothing to the ceiling: the score says how well a box matches compared
    with what this page could match at best. Repeated query terms count once.
    """
    n = len(box_tokens)
    out = np.zeros(n, dtype=np.float32)
    terms = list(dict.fromkeys(query_tokens))
    if n == 0 or not terms:
        return out
    lengths = np.array([sum(c.values()) for c in box_tokens], dtype=np.float32)
    avg = float(lengths.mean()) or 1.0
    norm = k1 * (1 - b + b * lengths / avg)
    ceiling = 0.0
    for term in terms:
        tf = np.array([c.get(term, 0) for c in box_tokens], dtype=np.float32)
        df = int((tf > 0).sum())
        if df == 0:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        out += idf * tf * (k1 + 1) / (tf + norm)
        ceiling += idf  # tf = 1 at average length: (k1 + 1) / (1 + k1) = 1
    if ceiling == 0:
        return out
    return np.clip(out / ceiling, 0.0, 1.0)


def table_scores(scores: np.ndarray, boxes: list[tuple[float, float, float, float]], min_overlap: float = 0.5) -> np.ndarray:
    """Per box, sqrt(best score in its row x best score above it in its column), other boxes only.

    Two boxes share a row when their vertical extents overlap by at least `min_overlap` of the
    shorter one; a box is in another's column when their horizontal extents overlap by that much of
    the narrower one and it lies above (column headers sit above the cells). Outside tables a box
    rarely has both a matching row-mate and a matching header above, so this stays near 0 there.
    """
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    b = np.asarray(boxes, dtype=np.float32).reshape(n, 4)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    h = np.maximum(y2 - y1, 1e-6)
    w = np.maximum(x2 - x1, 1e-6)
    v_overlap = np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :])
    h_overlap = np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :])
    same_row = v_overlap >= min_overlap * np.minimum(h[:, None], h[None, :])
    same_col = h_overlap >= min_overlap * np.minimum(w[:, None], w[None, :])
    above = y2[None, :] <= (y1[:, None] + 0.5 * h[:, None])  # [i, j]: box j lies above box i
    not_self = ~np.eye(n, dtype=bool)
    s = np.asarray(scores, dtype=np.float32)[None, :]
    row_best = np.where(same_row & not_self, s, 0).max(axis=1)
    col_best = np.where(same_col & above & not_self, s, 0).max(axis=1)
    return np.sqrt(row_best * col_best).astype(np.float32)


def grid_for(page_size: tuple[int, int], long_side: int = 96) -> tuple[int, int]:
    """A (rows, cols) grid with `long_side` cells along the page's longer side and square-ish cells."""
    w, h = page_size
    if w <= 0 or h <= 0:
        raise ValueError(f"page size must be positive, got {page_size}")
    if w >= h:
        return max(1, round(long_side * h / w)), long_side
    return long_side, max(1, round(long_side * w / h))


def paint_boxes(
    scores: np.ndarray,
    boxes: list[tuple[float, float, float, float]],
    page_size: tuple[int, int],
    grid: tuple[int, int],
    normalize: bool = True,
) -> np.ndarray:
    """Paint box scores into a (rows, cols) grid over the page (extent (0, 0, width, height)).

    A cell takes the largest score of the boxes that overlap it (max, not sum: overlapping OCR
    boxes are the same text, and a small box must stay visible on a coarse grid). Negative scores
    count as 0 and boxes are clipped to the page. With `normalize` the grid is divided by its
    maximum, so it lies in [0, 1]; an empty page or all-zero scores give all zeros.
    """
    rows, cols = grid
    width, height = page_size
    if rows <= 0 or cols <= 0:
        raise ValueError(f"grid must have positive (rows, cols), got {grid}")
    if width <= 0 or height <= 0:
        raise ValueError(f"page size must be positive, got {page_size}")
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"{len(scores)} scores for {len(boxes)} boxes")
    out = np.zeros((rows, cols), dtype=np.float32)
    cell_w, cell_h = width / cols, height / rows
    for score, (x1, y1, x2, y2) in zip(scores, boxes):
        if not score > 0:  # also skips NaN
            continue
        x1, x2 = max(0.0, min(x1, x2)), min(float(width), max(x1, x2))
        y1, y2 = max(0.0, min(y1, y2)), min(float(height), max(y1, y2))
        if x2 <= x1 or y2 <= y1:
            continue
        # cells [c*cell_w, (c+1)*cell_w) that the half-open box [x1, x2) overlaps
        c1, c2 = int(x1 // cell_w), math.ceil(x2 / cell_w)
        r1, r2 = int(y1 // cell_h), math.ceil(y2 / cell_h)
        region = out[r1:r2, c1:c2]
        np.maximum(region, score, out=region)
    if normalize:
        peak = out.max()
        if peak > 0:
            out /= peak
    return out
