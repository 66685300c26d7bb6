"""How a text box reads in its layout: a table cell means little without its row, column header and caption.

"7.9" on a slide matches no query, but read the way a person reads a table, it says
"Outbound Trips (Mn.): Japan 2014 7.9", which answers "how many outbound trips did Japan
make in 2014?". `reading_contexts` rebuilds that reading for every box from geometry alone
(boxes in page pixels, no model), so relevance maps can light up the answer cell of a table.

The rules (OCR gives line boxes and nothing about table structure; each rule is here because a
table in ../shared/corpus/vrag-demo needed it, and tests/integration/test_relevance.py checks all of them):
- a box is a table cell when another box shares its row (their vertical extents overlap by at
  least half of the shorter one); a line alone in its row is prose and reads as itself;
- row header: the leftmost cell of its row that has a letter in it (numbers on the left are
  usually a rank or a chart value, not a label), else the leftmost cell; only the header, not
  every cell to its left: those are other columns' values and describe other things;
- column header: the topmost table cell above it that is aligned with it (their horizontal
  extents overlap by at least half of the narrower one) and spans no other column of its row
  (it overlaps no other cell of the cell's row by more than a quarter of that cell's width), so a
  header may be wider than its numbers but a full-width line is nobody's header; plus up to
  two lines right under it that touch the line above, have letters, and sit in a row that is
  mostly words (headers often wrap; a body row of names and numbers is not a header line);
- caption: the nearest box above the column header (or above the cell when it has none) that
  either overlaps the header horizontally or is a line alone in its row, such as a table title
  set flush left above the first column; plus up to two lines right above it that touch it and
  overlap it horizontally (captions wrap too).
Side-by-side tables share rows, so a cell of the right-hand table reads the left table's row
header: a known limit of reading rows by geometry alone.

`phrases` groups the word boxes of a PDF text layer into the line-or-cell units OCR gives, so
both sources read the same way.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BoxCoords = Sequence[float]  # (x1, y1, x2, y2) in page pixels
MIN_OVERLAP = 0.5  # of the shorter box (rows) or the narrower box (columns)
MAX_SPILL = 0.25  # a column header may overlap other cells of the row by this share of their width
HEADER_LINES = 3
_CHUNK = 512  # boxes compared at once: keeps the pairwise matrices small on pages with thousands of boxes


def reading_contexts(texts: Sequence[str], boxes: Sequence[BoxCoords]) -> list[str]:
    """For each box, the text it reads as: 'caption: row-header column-header cell', or its own text."""
    n = len(texts)
    if len(boxes) != n:
        raise ValueError(f"{n} texts for {len(boxes)} boxes")
    if n == 0:
        return []
    b = np.asarray(boxes, dtype=np.float64).reshape(n, 4)
    x1, y1, x2, y2 = b.T
    h = np.maximum(y2 - y1, 1e-6)
    w = np.maximum(x2 - x1, 1e-6)
    index = np.arange(n)
    wordy = np.array([any(ch.isalpha() for ch in t) for t in texts])

    def relations(rows: slice):
        """Pairwise relations of boxes `rows` (axis 0) to all boxes (axis 1)."""
        v_overlap = np.minimum(y2[rows, None], y2[None, :]) - np.maximum(y1[rows, None], y1[None, :])
        same_row = v_overlap >= MIN_OVERLAP * np.minimum(h[rows, None], h[None, :])
        same_row &= index[rows, None] != index[None, :]
        h_overlap = np.minimum(x2[rows, None], x2[None, :]) - np.maximum(x1[rows, None], x1[None, :])
        aligned = h_overlap >= MIN_OVERLAP * np.minimum(w[rows, None], w[None, :])
        above = y2[None, :] <= y1[rows, None] + 0.5 * h[rows, None]  # [i, j]: box j ends above box i's middle
        return same_row, aligned & above & (index[rows, None] != index[None, :])

    in_table = np.zeros(n, dtype=bool)
    wordy_row = np.zeros(n, dtype=bool)  # most boxes of the box's row (itself included) have letters
    for start in range(0, n, _CHUNK):
        same_row = relations(slice(start, start + _CHUNK))[0]
        in_table[start : start + _CHUNK] = same_row.any(axis=1)
        members = same_row.sum(axis=1) + 1
        words = same_row @ wordy.astype(np.int64) + wordy[start : start + _CHUNK]
        wordy_row[start : start + _CHUNK] = 2 * words > members

    contexts = list(texts)
    for start in range(0, n, _CHUNK):
        same_row, aligned_above = relations(slice(start, start + _CHUNK))
        for k, i in enumerate(range(start, min(start + _CHUNK, n))):
            if not in_table[i]:
                continue
            parts = []
            left = np.flatnonzero(same_row[k] & (x2 <= x1[i] + 0.5 * w[i]))
            if len(left):
                labels = left[wordy[left]] if wordy[left].any() else left
                parts.append(texts[int(labels[np.argmin(x1[labels])])])
            column = _exclusive(np.flatnonzero(aligned_above[k] & in_table), np.flatnonzero(same_row[k]), x1, x2, w)
            top = i
            if len(column):
                column = column[np.argsort(y1[column], kind="stable")]
                top = int(column[0])
                parts.append(texts[top])
                last = top
                for j in column[1:HEADER_LINES]:  # a wrapped header: touching lines with letters
                    if not (wordy[j] and wordy_row[j]) or y1[j] - y2[last] > 0.5 * h[last]:
                        break
                    parts.append(texts[j])
                    last = j
            parts.append(texts[i])
            line = " ".join(parts)
            caption = _caption(top, x1, y1, x2, y2, h, in_table)
            contexts[i] = " ".join(texts[j] for j in caption) + ": " + line if caption else line
    return contexts


def _exclusive(candidates: np.ndarray, row: np.ndarray, x1, x2, w) -> np.ndarray:
    """The candidates that overlap no cell of `row` by more than MAX_SPILL of that cell's width."""
    if not len(candidates) or not len(row):
        return candidates
    overlap = np.minimum(x2[candidates, None], x2[None, row]) - np.maximum(x1[candidates, None], x1[None, row])
    return candidates[(overlap <= MAX_SPILL * w[None, row]).all(axis=1)]


def _caption(top: int, x1, y1, x2, y2, h, in_table) -> list[int]:
    """The caption lines of box `top`, top to bottom (see the module docstring); [] if there is none."""

    def overlaps(j: int) -> np.ndarray:
        return (np.minimum(x2, x2[j]) - np.maximum(x1, x1[j])) > 0

    candidates = np.flatnonzero((y2 <= y1[top]) & (overlaps(top) | ~in_table))
    if not len(candidates):
        return []
    lines = [int(candidates[np.argmax(y2[candidates])])]
    while len(lines) < HEADER_LINES:
        first = lines[0]
        above = np.flatnonzero((y2 <= y1[first] + 0.25 * h[first]) & (y1 < y1[first]) & overlaps(first))
        if not len(above):
            break
        j = int(above[np.argmax(y2[above])])
        if y1[first] - y2[j] > 0.5 * h[first]:
            break
        lines.insert(0, j)
    return lines


def phrases(boxes: Sequence[BoxCoords], max_gap: float = 0.8) -> np.ndarray:
    """Phrase number of each word box: words of one line join while the gap between them is small.

    A PDF text layer gives one box per word; OCR gives one per line or table cell. Reading
    contexts and embeddings need the OCR-like unit, so words are grouped first: words share a line
    when their vertical centres are within half a word height of the line's first word, and a
    phrase continues while the horizontal gap to the next word is at most `max_gap` times the
    taller word's height (a space is ~0.3 of it; table columns are several heights apart).
    Phrases are numbered in reading order (lines top to bottom, left to right).
    """
    n = len(boxes)
    out = np.zeros(n, dtype=np.int64)
    if n == 0:
        return out
    b = np.asarray(boxes, dtype=np.float64).reshape(n, 4)
    x1, y1, x2, y2 = b.T
    h = np.maximum(y2 - y1, 1e-6)
    cy = (y1 + y2) / 2
    lines: list[list[int]] = []
    for i in np.argsort(cy, kind="stable"):
        if lines and cy[i] - cy[lines[-1][0]] <= 0.5 * h[lines[-1][0]]:
            lines[-1].append(int(i))
        else:
            lines.append([int(i)])
    phrase = -1
    for line in lines:
        line.sort(key=lambda i: x1[i])
        prev = None
        for i in line:
            if prev is None or x1[i] - x2[prev] > max_gap * max(h[i], h[prev]):
                phrase += 1
            out[i] = phrase
            prev = i
    return out
