"""Reads a column chart that prints its values: which number belongs to which category.

A column chart sets its category labels in one row under the axis and prints each column's value
above its column, at a height that depends on the value, so the values share no row with each
other or with their labels and support scoring (rows and columns of aligned cells) misses them.
Each label takes the nearest number printed above it within its own width (the y-axis ticks sit
left of every label). Then "what is the growth for India" is the value above "India", and "which
project had the largest spending" the label under the largest value.
"""
from __future__ import annotations

import re
from dataclasses import replace

from search_engine.types import TextBox

from ..layout import height, short, union
from ..page import Page
from ..prose import superlative_statement
from ..scoring import Candidate, Support
from ..spans import Span, spans_of
from ..terms import matched_terms, terms_of
from ..weights import Weights

_VALUE = re.compile(r"\s*[+-]?(?:[$€£¥]|EUR\s?|USD\s?)?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*%?\s*")


def value_of(text: str) -> float | None:
    m = _VALUE.fullmatch(text)
    return float((m.group(1) + (m.group(2) or "")).replace(",", "")) if m else None


def category_rows(boxes: list[TextBox], min_labels: int = 3) -> list[list[int]]:
    """Rows of at least `min_labels` short text labels sharing a baseline and a type size, left to right."""
    rows: list[list[int]] = []
    labels = [i for i, b in enumerate(boxes) if sum(c.isalpha() for c in b.text) >= 2 and len(b.text.split()) <= 5 and height(b.box) > 0]
    for i in sorted(labels, key=lambda i: boxes[i].box[1]):
        h = height(boxes[i].box)
        row = next((r for r in rows if abs(boxes[i].box[3] - boxes[r[0]].box[3]) <= 0.4 * min(h, height(boxes[r[0]].box))
                    and max(h, height(boxes[r[0]].box)) <= 1.3 * min(h, height(boxes[r[0]].box))), None)
        rows.append([i]) if row is None else row.append(i)
    return [sorted(r, key=lambda i: boxes[i].box[0]) for r in rows if len(r) >= min_labels]


def labelled_values(boxes: list[TextBox], min_values: int = 3) -> list[tuple[int, int, float]]:
    """(label, value line, value) for the category row with the most values printed above its labels;
    evenly spaced numbers are an axis, not data."""
    best: list[tuple[int, int, float]] = []
    for row in category_rows(boxes):
        pairs = []
        for i in row:
            x1, y1, x2, _ = boxes[i].box
            pad = 0.15 * (x2 - x1)
            above = [(y1 - b.box[3], j) for j, b in enumerate(boxes) if j not in row and value_of(b.text) is not None
                     and b.box[3] <= y1 and x1 - pad <= (b.box[0] + b.box[2]) / 2 <= x2 + pad]
            if above:
                j = min(above)[1]
                pairs.append((i, j, value_of(boxes[j].text)))
        values = sorted(v for _, _, v in pairs)
        steps = {round(b - a, 6) for a, b in zip(values, values[1:])}
        if len(pairs) >= min_values and len({j for _, j, _ in pairs}) == len(pairs) and len(steps) > 1 and len(pairs) > len(best):
            best = pairs
    return best


def read(page: Page, w: Weights) -> Candidate | None:
    boxes, q = page.boxes, page.question
    pairs = labelled_values(boxes)
    if not pairs:
        return None
    extent = union([boxes[i].box for p in pairs for i in p[:2]])
    if q.extreme:
        pairs = [p for p in pairs if not q.excludes(boxes[p[0]].text)]
        if not pairs or superlative_statement(page.phrases, q) >= 0.6:
            return None  # a sentence states the answer
        label, line, _ = (max if q.extreme == "max" else min)(pairs, key=lambda p: (p[2], -p[0]))
        value = boxes[line].text.strip()
        note = f"{value} is the {'highest' if q.extreme == 'max' else 'lowest'} of the {len(pairs)} values printed above the categories"
        support = (Support("extreme", line, value, boxes[line].box, 1.0, "column"),)
        text = boxes[label].text.strip() + (f", {value}" if q.also_value else "")
        return Candidate(Span(text, "text", boxes[label].box, label), 1.0, support, note=note, extent=extent)
    # the one category the question names (a label OCR ran together with its neighbour names two: not this one)
    named = [p for p in pairs if terms_of(boxes[p[0]].text) and all(matched_terms([t], q.terms) for t in terms_of(boxes[p[0]].text))]
    span = next((s for s in spans_of([boxes[named[0][1]]]) if s.kind != "text"), None) if len(named) == 1 else None
    if span is None:
        return None
    label, line, _ = named[0]
    support = (Support("category", label, boxes[label].text, boxes[label].box, 1.0, "column"),)
    note = f'printed above the category "{short(boxes[label].text)}" of a column chart'
    return Candidate(replace(span, box=boxes[line].box, line=line), 1.5, support, note=note, extent=extent)


def applies(question) -> bool:
    return (question.kind == "text" and question.extreme is not None) or (question.kind in ("percent", "number", "value")
                                                                          and question.extreme is None)
