"""How a text box reads in its layout: a table cell means little without its row, column header and caption.

"7.9" on a slide matches no query, but read the way a person reads a table, it says
"Outbound Trips (Mn.): Japan 2014 7.9", which answers "how many outbound trips did Japan
make in 2014?". `reading_contexts` rebuilds that reading for every box from geometry alone
(boxes in page pixels, no model), so relevance maps can light up the answer cell of a table.

The rules, deliberately few (OCR gives us line boxes and nothing about table structure):
- a box is a table cell when another box shares its row (their vertical extents overlap by at
  least half of the shorter one); a line alone in its row is prose and reads as itself;
- row header: the leftmost cell of its row (not every cell to its left: in a timeline or a table
  those are other columns' values, which describe other things);
- column header: the topmost table cell above it that is aligned with it (their horizontal
  extents overlap by at least half of the wider one, so a wide title is nobody's column header);
- caption: the nearest box above the column header (or above the cell when it has none) that
  either overlaps the header horizontally or is a line alone in its row, such as a table title
  set flush left above the first column.
Side-by-side tables share rows, so a cell of the right-hand table reads the left table's row
header: a known limit of reading rows by geometry alone.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BoxCoords = Sequence[float]  # (x1, y1, x2, y2) in page pixels
MIN_OVERLAP = 0.5
_CHUNK = 512  # boxes compared at once: keeps the pairwise matrices small on pages with thousands of boxes


def reading_contexts(texts: Sequence[str], boxes: Sequence[BoxCoords], min_overlap: float = MIN_OVERLAP) -> list[str]:
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

    # pass 1: which boxes share a row with another box (table cells)
    in_table = np.zeros(n, dtype=bool)
    for start in range(0, n, _CHUNK):
        rows = slice(start, start + _CHUNK)
        v_overlap = np.minimum(y2[rows, None], y2[None, :]) - np.maximum(y1[rows, None], y1[None, :])
        same_row = v_overlap >= min_overlap * np.minimum(h[rows, None], h[None, :])
        same_row[index[rows] - start, index[rows]] = False
        in_table[rows] = same_row.any(axis=1)

    contexts = list(texts)
    for start in range(0, n, _CHUNK):
        rows = slice(start, start + _CHUNK)
        v_overlap = np.minimum(y2[rows, None], y2[None, :]) - np.maximum(y1[rows, None], y1[None, :])
        same_row = v_overlap >= min_overlap * np.minimum(h[rows, None], h[None, :])
        h_overlap = np.minimum(x2[rows, None], x2[None, :]) - np.maximum(x1[rows, None], x1[None, :])
        aligned = h_overlap >= min_overlap * np.maximum(w[rows, None], w[None, :])
        above = y2[None, :] <= y1[rows, None] + 0.5 * h[rows, None]  # [i, j]: box j ends above box i's middle
        for k, i in enumerate(range(start, min(start + _CHUNK, n))):
            if not in_table[i]:
                continue
            left = np.flatnonzero(same_row[k] & (x2 <= x1[i] + 0.5 * w[i]) & (index != i))
            row_header = int(left[np.argmin(x1[left])]) if len(left) else None
            headers = np.flatnonzero(aligned[k] & above[k] & in_table & (index != i))
            header = int(headers[np.argmin(y1[headers])]) if len(headers) else None
            top = header if header is not None else i
            caption = _caption(top, x1, y1, x2, y2, in_table)
            parts = [texts[row_header]] if row_header is not None else []
            if header is not None:
                parts.append(texts[header])
            parts.append(texts[i])
            line = " ".join(parts)
            contexts[i] = f"{texts[caption]}: {line}" if caption is not None else line
    return contexts


def _caption(top: int, x1, y1, x2, y2, in_table) -> int | None:
    """The nearest box wholly above box `top` that overlaps it horizontally or is a line alone in its row."""
    overlaps = (np.minimum(x2, x2[top]) - np.maximum(x1, x1[top])) > 0
    candidates = np.flatnonzero((y2 <= y1[top]) & (overlaps | ~in_table))
    if not len(candidates):
        return None
    return int(candidates[np.argmax(y2[candidates])])
