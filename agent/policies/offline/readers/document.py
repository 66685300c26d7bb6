"""Reads the document's own title and presenter from the layout of its cover.

"What is the title of this presentation?" or "这个演讲的主讲人是谁？" name nothing printed on the
page, so no line can support an answer: the answer is where a cover puts it. A cover sets its
title in the largest type on the page and the presenter's name, alone on a short line, below it.
`cover_likeness` also stands in for the question-term match when the question names nothing else.
"""
from __future__ import annotations

import re

from search_engine.types import TextBox

from ..layout import SHAPES, Box, height, median_height, union
from ..page import Page
from ..scoring import Candidate
from ..spans import Span
from ..weights import Weights

_WIDE = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")  # Chinese text and punctuation: no spaces


def _continues(a: Box, b: Box, h: float) -> bool:
    """b continues a: the next line of the same column, or the next piece of the same row."""
    if -0.3 * h <= max(a[1], b[1]) - min(a[3], b[3]) <= 0.9 * h and min(a[2], b[2]) - max(a[0], b[0]) > 0.3 * min(a[2] - a[0], b[2] - b[0]):
        return True
    return min(a[3], b[3]) - max(a[1], b[1]) > 0.5 * h and max(a[0], b[0]) - min(a[2], b[2]) <= 2 * h


def title_block(boxes: list[TextBox]) -> list[int]:
    """The title's lines in reading order: the tallest line with text and the lines in nearly its type
    size that continue it (OCR may cut a line in two)."""
    lines = [i for i, b in enumerate(boxes) if height(b.box) > 0 and sum(c.isalnum() for c in b.text) >= 2]
    if not lines:
        return []
    top = max(lines, key=lambda i: (height(boxes[i].box), -boxes[i].box[1]))
    h = height(boxes[top].box)
    block, frontier = [top], [top]
    while frontier:
        edge = frontier.pop()
        for i in lines:
            if i not in block and 0.75 * h <= height(boxes[i].box) <= 1.33 * h and _continues(boxes[edge].box, boxes[i].box, h):
                block.append(i)
                frontier.append(i)
    rows = sorted(block, key=lambda i: boxes[i].box[1])
    row_of = {i: next(n for n, j in enumerate(rows) if min(boxes[i].box[3], boxes[j].box[3]) - max(boxes[i].box[1], boxes[j].box[1])
                      > 0.5 * height(boxes[i].box)) for i in rows}
    return sorted(rows, key=lambda i: (row_of[i], boxes[i].box[0]))


def presenter_line(boxes: list[TextBox], title: list[int]) -> int | None:
    """The name-shaped line closest under the title; one further up (a logo, a header) last."""
    names = [i for i, b in enumerate(boxes) if i not in title and SHAPES["name"](b.text)]
    bottom = max((boxes[i].box[3] for i in title), default=0.0)
    return min(names, key=lambda i: (boxes[i].box[1] < bottom, abs(boxes[i].box[1] - bottom)), default=None)


def cover_likeness(boxes: list[TextBox], part: str) -> float:
    """0..1: a title in type much larger than the rest (1 from 1.6x the median), few lines, and for
    a presenter a name (a section divider has a title but no presenter)."""
    title = title_block(boxes)
    if not title:
        return 0.0
    ratio = height(boxes[title[0]].box) / (median_height(boxes) or 1.0)
    score = min(1.0, max(0.0, (ratio - 1.0) / 0.6)) * (1.0 if len(boxes) <= 12 else 0.5)
    named = presenter_line(boxes, title) is not None
    return score * ((1.0 if named else 0.2) if part == "presenter" else (1.0 if named else 0.8))


def read(page: Page, w: Weights) -> Candidate | None:
    boxes, title = page.boxes, title_block(page.boxes)
    if not title:
        return None
    score = 1.0 + cover_likeness(boxes, page.question.wants)
    if page.question.wants == "title":
        text = ""
        for i in title:
            part = boxes[i].text.strip()
            text = text + part if text and _WIDE.match(text[-1]) and _WIDE.match(part[:1]) else f"{text} {part}".strip()
        span = Span(text, "text", union([boxes[i].box for i in title]), title[0])
        return Candidate(span, score, note="the lines in the largest type on the page")
    line = presenter_line(boxes, title)
    if line is None:
        return None
    return Candidate(Span(boxes[line].text.strip(), "text", boxes[line].box, line), score, note="the name-shaped line under the title")


def applies(question) -> bool:
    return question.wants in ("title", "presenter")
