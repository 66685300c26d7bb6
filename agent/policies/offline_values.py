"""Reading a column chart that prints its values: which number belongs to which category.

Part of the offline policy's rules (no model). A column chart sets its category labels in one row
under the axis and prints each column's value above its column, at a height that depends on the
value, so the values share no row with each other or with their labels (which is why the table
rules, which look for rows and columns of aligned cells, miss them). Here each label takes the
nearest number printed above it within its own horizontal extent; the y-axis ticks sit left of
every label and are never taken.

Boxes in, index pairs out: `labelled_values` returns (label line, value line, value) triples.
"""
from __future__ import annotations

import re

from search_engine.types import TextBox

_VALUE = re.compile(r"\s*[+-]?(?:[$€£¥]|EUR\s?|USD\s?)?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*%?\s*")


def _value(text: str) -> float | None:
    m = _VALUE.fullmatch(text)
    if not m:
        return None
    return float((m.group(1) + (m.group(2) or "")).replace(",", ""))


def _is_label(b: TextBox) -> bool:
    letters = sum(c.isalpha() for c in b.text)
    return letters >= 2 and len(b.text.split()) <= 5


def category_rows(boxes: list[TextBox], min_labels: int = 3) -> list[list[int]]:
    """Rows of at least `min_labels` short text labels sharing a baseline and a type size, left to right."""
    labels = [i for i, b in enumerate(boxes) if _is_label(b) and b.box[3] > b.box[1]]
    rows: list[list[int]] = []
    for i in sorted(labels, key=lambda i: boxes[i].box[1]):
        h = boxes[i].box[3] - boxes[i].box[1]
        for row in rows:
            j = row[0]
            hj = boxes[j].box[3] - boxes[j].box[1]
            if abs(boxes[i].box[3] - boxes[j].box[3]) <= 0.4 * min(h, hj) and max(h, hj) <= 1.3 * min(h, hj):
                row.append(i)
                break
        else:
            rows.append([i])
    return [sorted(r, key=lambda i: boxes[i].box[0]) for r in rows if len(r) >= min_labels]


def labelled_values(boxes: list[TextBox], min_values: int = 3) -> list[tuple[int, int, float]]:
    """For the category row with the most values printed above its labels: (label, value line, value)."""
    best: list[tuple[int, int, float]] = []
    for row in category_rows(boxes):
        pairs = []
        for i in row:
            x1, y1, x2, _ = boxes[i].box
            pad = 0.15 * (x2 - x1)
            above = [(y1 - b.box[3], j) for j, b in enumerate(boxes)
                     if j not in row and _value(b.text) is not None and b.box[3] <= y1
                     and x1 - pad <= (b.box[0] + b.box[2]) / 2 <= x2 + pad]
            if above:
                _, j = min(above)
                pairs.append((i, j, _value(boxes[j].text)))
        values = [v for _, _, v in pairs]
        steps = {round(b - a, 6) for a, b in zip(sorted(values), sorted(values)[1:])}
        if len(pairs) >= min_values and len(set(j for _, j, _ in pairs)) == len(pairs) and len(steps) > 1:
            if len(pairs) > len(best):
                best = pairs  # (evenly spaced numbers would be an axis, not data)
    return best
