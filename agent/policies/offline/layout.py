"""Page geometry and line shapes for the offline policy: pure functions of OCR boxes and their text.

`relation` says how two boxes read together: on one row (a table row label and its cells), in one
column (a header and the cells below it, a bar's value and its category), or merely near. The
predicates describe a line: a big-type title, a table row label, a short label or a sentence, a
person's name, a website, an email address.
"""
from __future__ import annotations

import math
import re
import unicodedata

from search_engine.types import TextBox

from .terms import CJK

Box = tuple[float, float, float, float]
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]*\w")


def overlap(a1: float, a2: float, b1: float, b2: float) -> float:
    return max(0.0, min(a2, b2) - max(a1, b1))


def gaps(a: Box, b: Box) -> tuple[float, float]:
    """The horizontal and vertical empty space between two boxes (0 where they overlap)."""
    return max(0.0, max(a[0], b[0]) - min(a[2], b[2])), max(0.0, max(a[1], b[1]) - min(a[3], b[3]))


def distance(a: Box, b: Box) -> float:
    return math.hypot(*gaps(a, b))


def union(boxes: list[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def relation(a: Box, b: Box, size: tuple[int, int]) -> tuple[float, str]:
    """How strongly two boxes read together (0..1) and how: "row", "column" or "near".

    Row: they share most of their height; column: the narrower one's centre lies within (or just
    past) the wider one's extent. Both fade slowly with the gap (a header may be far from its cell);
    a line spanning most of the page (a title, a sentence) is weak as a column head. "near" fades
    fast with distance: a caption beside a number."""
    w, h = size
    (aw, ah), (bw, bh) = (a[2] - a[0], a[3] - a[1]), (b[2] - b[0], b[3] - b[1])
    gap_x, gap_y = gaps(a, b)
    best, how = 0.4 * math.exp(-math.hypot(gap_x, gap_y) / (0.08 * math.hypot(w, h))), "near"
    if ah > 0 and bh > 0 and overlap(a[1], a[3], b[1], b[3]) / min(ah, bh) >= 0.5:
        row = overlap(a[1], a[3], b[1], b[3]) / min(ah, bh) * (1.0 - 0.4 * gap_x / w)
        if row > best:
            best, how = row, "row"
    if aw > 0 and bw > 0:
        narrow, wide = (a, b) if aw <= bw else (b, a)
        centre = (narrow[0] + narrow[2]) / 2
        inside = 1.0 - max(0.0, wide[0] - centre, centre - wide[2]) / (0.1 * max(aw, bw))
        ox = max(overlap(a[0], a[2], b[0], b[2]) / min(aw, bw), inside)
        column = ox * (1.0 - 0.4 * gap_y / h) * min(1.0, 0.5 * w / max(aw, bw)) ** 2
        if ox >= 0.5 and column > best:
            best, how = column, "column"
    return best, how


def short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def height(box: Box) -> float:
    return box[3] - box[1]


def similar_height(a: Box, b: Box, ratio: float = 1.2) -> bool:
    return min(height(a), height(b)) > 0 and max(height(a), height(b)) / min(height(a), height(b)) < ratio


def adjacent(a: Box, b: Box) -> bool:
    """No room for another line between the boxes."""
    return max(gaps(a, b)) < min(height(a), height(b))


def median_height(boxes: list[TextBox]) -> float:
    """The height of the page's median line: its body type size (0 for no lines)."""
    heights = sorted(height(b.box) for b in boxes)
    return heights[len(heights) // 2] if heights else 0.0


def tall_lines(boxes: list[TextBox]) -> list[bool]:
    """Lines in type much larger than the page's median line (slide titles, section headings)."""
    body = median_height(boxes)
    return [bool(body) and height(b.box) > 1.4 * body for b in boxes]


def title_lines(boxes: list[TextBox], size: tuple[int, int]) -> list[bool]:
    """Slide titles: tall, and short near the top of the image or set in capitals (a crop's prose may be
    taller than its chart labels without being a title)."""
    return [tall and ((b.box[1] < 0.3 * size[1] and word_count(b.text) <= 8) or in_capitals(b.text))
            for b, tall in zip(boxes, tall_lines(boxes))]


def in_capitals(text: str) -> bool:
    """An English line in capital letters: a heading, not prose (Chinese lines carry "VPC", "IPv6")."""
    letters = [c for c in text if c.isalpha() and c.isascii()]
    return not CJK.search(text) and len(letters) >= 4 and sum(c.isupper() for c in letters) >= 0.8 * len(letters)


def is_number(text: str) -> bool:
    return bool(re.fullmatch(r"\s*[+-]?[\d.,]+\s*%?\s*", text))


def on_row(a: Box, b: Box) -> bool:
    return overlap(a[1], a[3], b[1], b[3]) >= 0.5 * min(height(a), height(b))


def labels_a_row(boxes: list[TextBox], i: int, min_values: int = 2) -> bool:
    """Line i is a table row label: number-only boxes (not years, which head columns) to its right."""
    me = boxes[i].box
    return sum(1 for j, b in enumerate(boxes) if j != i and b.box[0] > me[2] and is_number(b.text)
               and not re.fullmatch(r"\s*(19|20)\d\d\s*", b.text) and height(me) > 0 and on_row(me, b.box)) >= min_values


def number_between(boxes: list[TextBox], a: Box, b: Box, skip: tuple[int, ...]) -> bool:
    """A number-only box sits on a's row between a and b (a rank before the next phrase of a list)."""
    lo, hi = sorted((a[2], b[0]) if a[0] < b[0] else (b[2], a[0]))
    return any(j not in skip and is_number(x.text) and lo <= (x.box[0] + x.box[2]) / 2 <= hi
               and a[1] <= (x.box[1] + x.box[3]) / 2 <= a[3] for j, x in enumerate(boxes))


def word_count(text: str) -> float:
    """Words in a line; Chinese counts one word per two characters."""
    return sum(1 for w in CJK.sub(" ", text).split() if any(c.isalnum() for c in w)) + len(CJK.findall(text)) / 2


def label_likeness(text: str) -> float:
    """1 for a short label (a row name, a column header, a legend entry), less for a sentence."""
    return 1.0 / (1.0 + 0.2 * max(0.0, word_count(text) - 4))


def char_width(ch: str) -> float:
    return 2.0 if CJK.match(ch) or unicodedata.east_asian_width(ch) in ("W", "F") else 1.0


def sub_box(box: Box, text: str, start: int, end: int) -> Box:
    """The box of text[start:end] inside its line's box, by character widths (Chinese count double)."""
    widths = [char_width(c) for c in text]
    total = sum(widths) or 1.0
    return (box[0] + (box[2] - box[0]) * sum(widths[:start]) / total, box[1],
            box[0] + (box[2] - box[0]) * sum(widths[:end]) / total, box[3])


SHAPES = {  # the shape a question may ask of its answer (Question.wants), as a test of a phrase
    "name": lambda t: bool(re.fullmatch(r"[\u4e00-\u9fff]{2,4}", t.strip()) if CJK.match(t.strip())
                           else 2 <= len(t.split()) <= 4 and all(re.fullmatch(r"[A-Z][a-zA-Z.'-]*", w) for w in t.split())),
    "website": lambda t: bool(re.search(r"\w\.(com|net|org|cn|io|co|jp|in|sg|hk)\b|www\.|https?://", t, re.I)),
    "email": lambda t: bool(EMAIL.fullmatch(t.strip())),
}
SHAPES["presenter"] = SHAPES["name"]
