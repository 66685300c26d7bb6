"""Retrieval relevance maps: which text on a page matches a query. Arrays in, arrays out; no drawing.

For one query and one indexed page we score every OCR (or text-layer) box on two signals:
- dense: cosine similarity between the query embedding and the box text embedding (the same
  embedder the index searches with), clipped at 0;
- lexical: the share of the query's term weight found in the box, BM25-style, using the index's
  own `tokenize()` so that a match here is a match for the retriever; IDF is computed over the
  boxes of this page (a term on every line of the page tells no line apart).
Both are computed on the box's *reading context* (search_engine/reading_context.py): a table
cell is scored as "caption: row header ... column header cell", which is how a person reads it,
so the cell answering "how many outbound trips did Japan make in 2014?" lights up although its
own text is "7.9". Prose lines read as themselves. The dense signal takes the better of the box's
own text and its context. The two signals mix into one score per box in [0, 1].
A PDF text layer gives one box per word; words are first grouped into phrases (the unit OCR
gives), scored as phrases, and every word gets its phrase's score.

`paint_boxes` then paints box scores into a page-space grid. Grid conventions (shared with
agent/figures.py and agent/attention_maps.py): `values[row, col]`, row 0 at the top of the page;
`extent = (x0, y0, x1, y1)` in page pixels is the rectangle the whole grid covers, so cell (i, j)
covers x in [x0 + j*dx, x0 + (j+1)*dx), y in [y0 + i*dy, y0 + (i+1)*dy) with dx = (x1-x0)/cols,
dy = (y1-y0)/rows.

Everything that does not depend on the query (reading contexts, their tokens, the embeddings of
box texts and contexts) is computed once per page and kept in a `BoxCache` that the caller owns
and passes in; it also keeps the last few query embeddings, since a turn maps one query over
several pages. With a warm cache a map costs at most one query embedding plus a little numpy
(bench/relevance_speed.py measures it).
"""
from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .embedders import Embedder
from .reading_context import phrases, reading_contexts
from .types import Page

log = logging.getLogger(__name__)


Tokenizer = Callable[[str], list[str]]


@dataclass(frozen=True)
class RelevanceWeights:
    """How the signals mix. dense + lexical = 1 keeps a box score in [0, 1].

    Lexical weighs more because it is what tells the lines of an on-topic page apart: MiniLM gives
    every line of such a page a similar cosine (and maps most CJK characters to [UNK]).
    """

    dense: float = 0.4
    lexical: float = 0.6
    k1: float = 1.2  # BM25 term-frequency saturation
    b: float = 0.5  # BM25 length normalisation (mild: a cell's context is longer than a prose line)


@dataclass
class BoxScores:
    """Per-box scores for one query on one page: arrays of shape (n_boxes,) aligned with page.boxes."""

    dense: np.ndarray  # cosine similarity of the box text or its reading context, clipped to [0, 1]
    lexical: np.ndarray  # BM25-weighted share of the query terms in the reading context, in [0, 1]
    combined: np.ndarray  # weights.dense * dense + weights.lexical * lexical, in [0, 1]
    contexts: list[str]  # what each box was read as (its phrase's context for PDF words; for hover text)


@dataclass
class RelevanceMap:
    """Box scores painted on a page grid, stretched so that the map shows where on THIS page the query fits.

    `values` = (score - floor) / (peak - floor), clipped to [0, 1]: 1 is the page's best box, 0 is
    a box no better than the page's median box (and any area without text). Dense similarity
    gives every line of an on-topic page a middling score; without the floor the whole page would
    glow. `peak` and `floor` keep the absolute scale (a page where nothing matches has a low peak).
    """

    values: np.ndarray  # (rows, cols) float32 in [0, 1], row 0 at the top
    extent: tuple[float, float, float, float]  # (x0, y0, x1, y1) page pixels the grid covers
    box_scores: BoxScores
    peak: float  # the best combined box score (0 for a page without text)
    floor: float  # the median combined box score


@dataclass
class _PageText:
    """A page's text units (OCR lines, or phrases of PDF words) with everything a query needs."""

    fingerprint: str
    unit_of: np.ndarray  # (n_boxes,) the unit each box belongs to
    contexts: list[str]  # per unit
    tokens: list[Counter]  # term counts of each unit's reading context
    text_vectors: np.ndarray  # (n_units, dim) embeddings of the unit texts
    context_vectors: np.ndarray  # (n_units, dim) embeddings of the contexts (a copy of the text row for prose)


@dataclass
class BoxCache:
    """Query-independent work per page, for one embedder and tokenizer. Create one per index and keep it.

    Entries are keyed by page id and checked against a fingerprint of the page's boxes, so a
    re-ingested page with new text is recomputed rather than served stale.
    """

    embedder: Embedder
    tokenize: Tokenizer
    max_queries: int = 64  # query embeddings kept: one query is mapped over several pages in a turn
    _pages: dict[str, _PageText] = field(default_factory=dict, repr=False)
    _queries: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict, repr=False)

    @classmethod
    def for_index(cls, index) -> "BoxCache":
        """A cache using a DocumentIndex's own embedder and the index's tokenizer."""
        from .tokenize import tokenize

        return cls(index.embedder, tokenize)

    def query_vector(self, query: str) -> np.ndarray:
        """The query's embedding, computed once while it is among the last `max_queries` queries."""
        vector = self._queries.get(query)
        if vector is None:
            vector = np.asarray(self.embedder.encode_query(query), dtype=np.float32).reshape(-1)
            self._queries[query] = vector
            while len(self._queries) > self.max_queries:
                self._queries.popitem(last=False)
        else:
            self._queries.move_to_end(query)
        return vector

    def page_text(self, page: Page) -> _PageText:
        texts = [b.text for b in page.boxes]
        boxes = [b.box for b in page.boxes]
        fingerprint = hashlib.sha1(repr((page.text_source, texts, boxes)).encode("utf-8")).hexdigest()
        cached = self._pages.get(page.page_id)
        if cached is not None and cached.fingerprint == fingerprint:
            return cached
        # a PDF text layer gives words; OCR already gives lines and table cells
        unit_of = phrases(boxes) if page.text_source == "pdf" else np.arange(len(boxes))
        unit_texts, unit_boxes = _units(texts, boxes, unit_of)
        contexts = reading_contexts(unit_texts, unit_boxes)
        # one encoder call for the unit texts and the contexts that differ from them
        extra = sorted({c for c, t in zip(contexts, unit_texts) if c != t})
        if unit_texts:
            vectors = np.asarray(self.embedder.encode_texts(unit_texts + extra), dtype=np.float32)
            text_vectors = vectors[: len(unit_texts)]
            row_of = {c: len(unit_texts) + k for k, c in enumerate(extra)}
            context_vectors = vectors[[row_of.get(c, i) for i, c in enumerate(contexts)]]
        else:
            text_vectors = context_vectors = np.zeros((0, 0), dtype=np.float32)
        tokens = [Counter(self.tokenize(c)) for c in contexts]
        entry = _PageText(fingerprint, unit_of, contexts, tokens, text_vectors, context_vectors)
        self._pages[page.page_id] = entry
        log.debug("cached page %s: %d boxes, %d units, %d table contexts", page.page_id, len(texts), len(unit_texts), len(extra))
        return entry

    def __len__(self) -> int:
        return len(self._pages)


def box_relevance(query: str, page: Page, cache: BoxCache, weights: RelevanceWeights = RelevanceWeights()) -> BoxScores:
    """Score every box of `page` against `query` (see the module docstring)."""
    if not page.boxes:
        empty = np.zeros(0, dtype=np.float32)
        return BoxScores(empty, empty, empty, [])
    text = cache.page_text(page)
    q = cache.query_vector(query)
    dense = np.clip(np.maximum(text.text_vectors @ q, text.context_vectors @ q), 0.0, 1.0).astype(np.float32)
    lexical = lexical_scores(cache.tokenize(query), text.tokens, k1=weights.k1, b=weights.b)
    combined = (weights.dense * dense + weights.lexical * lexical).astype(np.float32)
    # every word of a phrase gets the phrase's scores
    u = text.unit_of
    return BoxScores(dense[u], lexical[u], combined[u], [text.contexts[i] for i in u])


def _units(texts: list[str], boxes: list, unit_of: np.ndarray) -> tuple[list[str], list[tuple[float, ...]]]:
    """Text (members left to right) and bounding box of each unit."""
    n_units = int(unit_of.max()) + 1 if len(unit_of) else 0
    members: list[list[int]] = [[] for _ in range(n_units)]
    for i, u in enumerate(unit_of):
        members[u].append(i)
    unit_texts, unit_boxes = [], []
    for m in members:
        m.sort(key=lambda i: boxes[i][0])
        unit_texts.append(" ".join(texts[i] for i in m))
        b = np.asarray([boxes[i] for i in m], dtype=np.float64)
        unit_boxes.append((b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()))
    return unit_texts, unit_boxes


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
    shown, peak, floor = stretch(scores.combined)
    values = paint_boxes(shown, [b.box for b in page.boxes], size, grid_shape or grid_for(size), normalize=False)
    extent = (0.0, 0.0, float(page.width), float(page.height))
    return RelevanceMap(values=values, extent=extent, box_scores=scores, peak=peak, floor=floor)


# --- the maths, on plain arrays -----------------------------------------------------------------


def lexical_scores(query_tokens: list[str], box_tokens: list[Counter], k1: float = 1.2, b: float = 0.5) -> np.ndarray:
    """Per box, the BM25 score of the query divided by its ceiling, in [0, 1].

    The boxes (term counts of their texts or reading contexts) of one page are the documents, so
    IDF says how rare a term is on this page: a caption word that every cell of a table inherits
    weighs little, a row header or column header weighs much. The ceiling is the score of a box of
    average length holding every query term once, so a box holding all the query's terms scores
    about 1 and one holding only a common term scores near 0. Query terms that occur nowhere on the
    page add nothing to the ceiling: the score says how well a box matches compared with what this
    page could match at best. Repeated query terms count once.
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


def stretch(scores: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(scores mapped so the median is 0 and the best is 1, clipped to [0, 1]; the best; the median).

    When the best is no better than the median (one box, or all equal), every positive score maps
    to 1: there is nothing to tell apart, and a lone matching line should still show.
    """
    scores = np.asarray(scores, dtype=np.float32)
    if len(scores) == 0:
        return scores, 0.0, 0.0
    peak, floor = float(scores.max()), float(np.median(scores))
    if peak - floor < 1e-6:
        return (scores > 0).astype(np.float32), peak, floor
    return np.clip((scores - floor) / (peak - floor), 0.0, 1.0).astype(np.float32), peak, floor


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
