"""The page as the offline policy's rules see it (no model): candidate spans, geometry, line shapes.

Every OCR line is cut into candidate spans (numbers with their kind, and text phrases), each with
an estimated sub-box. `relation` says how two boxes read together: on the same row (a table row
label and its cells), in the same column (a header and the cells below, a bar's value and its
category), or merely near. The small predicates below describe a line's shape (a short label or
a sentence, a table row label, a person's name, a website).
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

from agent.policies.offline_question import CJK, Question, terms_of
from search_engine.types import TextBox

Box = tuple[float, float, float, float]

# --- candidate spans ---------------------------------------------------------------------------

# A number with an optional sign, currency (symbol or code) and percent sign; not glued to Latin letters
# ("3rd", "Q3", "IPv6"). Chinese characters may touch it ("为184,300名"), so the guards are ASCII-only
# (Python's \w would count them as letters and cut "184,300" down to "300").
_CURRENCY = r"(?:US\$|HK\$|S\$|A\$|\$|¥|€|£|(?:EUR|USD|RMB|CNY|GBP|JPY|HKD|SGD|INR|AUD)\s?)"
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])[+-]?" + _CURRENCY + r"?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
                     r"(?:\s?%|\s(?:million|billion|mn|bn)\b)?(?:\s+per\s+(?:cubic\s+|square\s+)?[a-z]+)?(?![A-Za-z\d])")
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
          r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
# A calendar date with at least a month and a year: "12 September 2025", "Sept. 12, 2025", "March 2009",
# "2025-09-12", "2025年9月12日". (A bare year is a number span of kind "year".)
DATE = re.compile(
    rf"(?<![A-Za-z0-9])(?:\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH},?\s+(?:19|20)\d\d|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(?:19|20)\d\d"
    rf"|{_MONTH},?\s+(?:19|20)\d\d|(?:19|20)\d\d-\d\d-\d\d)(?![A-Za-z0-9])"
    r"|(?:19|20)\d\d\s?年\s?\d{1,2}\s?月(?:\s?\d{1,2}\s?[日号])?",
    re.IGNORECASE,
)
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]*\w")
LEADING_MARK = re.compile(r"^[\s•·\-–—*●○■□◆>#]*(?:\d{1,2}[.)、]?\s*(?=[^\d\s.,%]))?")


@dataclass(frozen=True)
class Span:
    """A possible answer: a number or a text phrase, with its estimated box and the line it came from."""

    text: str
    kind: str  # one of ANSWER_KINDS
    box: Box
    line: int  # index of the OCR line (TextBox) it was cut from
    value: float | None = None  # numeric value for number kinds
    start: int = 0  # character offsets of the span in its line's text
    end: int = 0


def cloze_spans(boxes: list[TextBox], question: Question) -> list[Span]:
    """Chinese fill-in-the-blank: in a line holding the words just before the question word, the
    text right after them up to the next clause break ("围绕安全/稳定/性能/成本的..." for
    "...围绕哪几个方面" gives "安全/稳定/性能/成本"); when nothing follows them, the text before
    them, as a label puts its subject first ("增强型NAT网关发布" for "...发布了什么")."""
    if not question.cloze:
        return []
    spans = []
    for i, b in enumerate(boxes):
        at = b.text.find(question.cloze)
        if at < 0:
            continue
        start = at + len(question.cloze)
        start += len(b.text[start:]) - len(b.text[start:].lstrip("的了是"))  # "面临的挑战" for "面临的是什么"
        end = start + len(re.split(r"[的，。,;；：:]", b.text[start:])[0])
        if len(b.text[start:end].strip()) < 2 and question.cloze_last:  # nothing after: the clause before
            end = at
            start = end - len(re.split(r"[的，。,;；：:]", b.text[:end])[-1])
        phrase = b.text[start:end].strip()
        if len(phrase) >= 2:
            spans.append(Span(phrase, "text", _sub_box(b.box, b.text, start, end), i, None, start, end))
    return spans


def _char_width(ch: str) -> float:
    return 2.0 if CJK.match(ch) or unicodedata.east_asian_width(ch) in ("W", "F") else 1.0


def _sub_box(box: Box, text: str, start: int, end: int) -> Box:
    """Estimate the box of text[start:end] inside a line box by character widths (CJK count double)."""
    widths = [_char_width(c) for c in text]
    total = sum(widths) or 1.0
    x1, y1, x2, y2 = box
    a = x1 + (x2 - x1) * sum(widths[:start]) / total
    b = x1 + (x2 - x1) * sum(widths[:end]) / total
    return (a, y1, b, y2)


def number_kind(token: str) -> str:
    if token.endswith("%") or re.search(r"\sper\s?cent$", token):
        return "percent"
    if re.fullmatch(r"(19|20)\d\d", token):
        return "year"
    return "number"


def _number_value(token: str) -> float | None:
    digits = re.sub(r"[^\d.]", "", token)
    try:
        return float(digits)
    except ValueError:
        return None


def _in_range(text: str, start: int, end: int) -> bool:
    """True for the parts of a range label such as "2014-20" or "2011 – 30" (not values)."""
    before, after = text[max(0, start - 2) : start], text[end : end + 2]
    return bool(re.search(r"\d\s?[-–~]$", before) or re.match(r"\s?[-–~]\d", after))


# "Table 1", "Figure 2", "Page 3", "图 4": the number names a part of the document, never a value.
ELEMENT_ORDINAL = re.compile(r"(?:\b(?:table|figure|fig\.?|chart|exhibit|page|slide|section|appendix)|[图表])\s*$", re.IGNORECASE)


def _names_an_element(text: str, start: int) -> bool:
    return bool(ELEMENT_ORDINAL.search(text[:start]))


SOURCE = re.compile(r"^\s*(?:sources?|数据来源|来源|资料来源)\s*[:：]\s*", re.IGNORECASE)


def _junk(phrase: str) -> bool:
    """OCR of icons and pictograms: one character repeated ("田田田", "香香香香")."""
    chars = phrase.replace(" ", "")
    return len(chars) >= 3 and max(chars.count(c) for c in set(chars)) >= 0.6 * len(chars)


def spans_of(boxes: list[TextBox]) -> list[Span]:
    """Every number in every line, and each line's text (without a leading bullet or rank) as a phrase."""
    spans: list[Span] = []
    for i, b in enumerate(boxes):
        text = b.text
        for m in DATE.finditer(text):
            spans.append(Span(" ".join(m.group().split()), "date", _sub_box(b.box, text, m.start(), m.end()), i,
                              None, m.start(), m.end()))
        for m in _NUMBER.finditer(text):
            if _in_range(text, m.start(), m.end()) or _names_an_element(text, m.start()):
                continue
            token = re.sub(r"\s+(?=%)", "", " ".join(m.group().split()))  # "13 %" -> "13%"; "EUR 2.15" stays
            spans.append(Span(token, number_kind(token), _sub_box(b.box, text, m.start(), m.end()), i,
                              _number_value(token), m.start(), m.end()))
        lead = LEADING_MARK.match(text)
        start = lead.end() if lead else 0
        pieces = [(start, len(text))]
        source = SOURCE.match(text)
        if source:
            pieces.append((source.end(), len(text)))  # "Source: X" -> X
        pieces += [(m.start(), m.end()) for m in EMAIL.finditer(text)]
        if "," in text[start:] or "，" in text[start:]:
            # each comma-separated piece too: "Yeoh Siew Hoon, Editor & Founder" holds a name
            for m in re.finditer(r"[^,，]+", text[start:]):
                pieces.append((start + m.start(), start + m.end()))
        for a, z in pieces:
            raw = text[a:z]
            a, z = a + len(raw) - len(raw.lstrip()), z - (len(raw) - len(raw.rstrip()))
            phrase = text[a:z]
            letters = sum(1 for c in phrase if c.isalpha() or c == "@")
            if letters >= 2 and letters >= len(phrase.replace(" ", "")) / 2 and not _junk(phrase):
                spans.append(Span(phrase, "text", _sub_box(b.box, text, a, z), i, None, a, z))
    return list(dict.fromkeys(spans))  # a piece equal to the whole line is listed once


# --- geometry ----------------------------------------------------------------------------------


def overlap(a1: float, a2: float, b1: float, b2: float) -> float:
    return max(0.0, min(a2, b2) - max(a1, b1))


def relation(a: Box, b: Box, size: tuple[int, int]) -> tuple[float, str]:
    """How strongly two boxes read together (0..1) and how: "row", "column" or "near".

    Row: they share most of their height (a table row label and its cells, a legend and its value);
    column: one lies within the other's horizontal extent (a table header and the cells below, a bar's
    value and its category label). Both fade slowly with the gap, since a header may be far from a
    cell. "near" fades fast with distance: a caption beside a number.
    """
    w, h = size
    ah, bh = a[3] - a[1], b[3] - b[1]
    aw, bw = a[2] - a[0], b[2] - b[0]
    best, how = 0.0, "near"
    if ah > 0 and bh > 0:
        oy = overlap(a[1], a[3], b[1], b[3]) / min(ah, bh)
        if oy >= 0.5:
            gap = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
            best, how = oy * (1.0 - 0.4 * gap / w), "row"
    if aw > 0 and bw > 0:
        ox = overlap(a[0], a[2], b[0], b[2]) / min(aw, bw)
        # or: the narrower box's centre lies within (or just past) the wider one's extent, as a
        # table's last column may stick out from under a centred header
        narrow, wide_box = (a, b) if aw <= bw else (b, a)
        centre = (narrow[0] + narrow[2]) / 2
        outside = max(0.0, wide_box[0] - centre, centre - wide_box[2])
        ox = max(ox, 1.0 - outside / (0.1 * max(aw, bw)))
        if ox >= 0.5:
            gap = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
            # a line spanning most of the width (a title, a sentence) sits "above" everything: weak evidence
            wide = max(aw, bw) / w
            s = ox * (1.0 - 0.4 * gap / h) * (min(1.0, 0.5 / wide) ** 2)
            if s > best:
                best, how = s, "column"
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    near = 0.4 * math.exp(-math.hypot(dx, dy) / (0.08 * math.hypot(w, h)))
    if near > best:
        best, how = near, "near"
    return best, how




def short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def median_height(boxes: list[TextBox]) -> float:
    """The height of the page's median line: its body text size (0 for no lines)."""
    heights = sorted(b.box[3] - b.box[1] for b in boxes)
    return heights[len(heights) // 2] if heights else 0.0


def tall_lines(boxes: list[TextBox]) -> list[bool]:
    """Lines in a much larger font than the page's median line (slide titles, section headings)."""
    body = median_height(boxes)
    return [bool(body) and b.box[3] - b.box[1] > 1.4 * body for b in boxes]


def title_lines(boxes: list[TextBox], size: tuple[int, int] | None = None) -> list[bool]:
    """Which lines are slide titles: tall (see `tall_lines`) and in capitals, or short and at the top of
    the image. (A crop's prose may be taller than its chart labels without being a title, and a
    slide's lead sentence may be set large.)"""
    height = size[1] if size else max((b.box[3] for b in boxes), default=0.0)
    return [tall and ((b.box[1] < 0.3 * height and word_count(b.text) <= 8) or in_capitals(b.text))
            for b, tall in zip(boxes, tall_lines(boxes))]


def in_capitals(text: str) -> bool:
    """An English line in capital letters: a heading, not prose."""
    if CJK.search(text):
        return False  # Chinese lines carry Latin words in capitals ("VPC", "IPv6") as a matter of course
    letters = [c for c in text if c.isalpha() and c.isascii()]
    return len(letters) >= 4 and sum(c.isupper() for c in letters) >= 0.8 * len(letters)


# --- the shape of a line -------------------------------------------------------------------------


def content_terms(text: str) -> set[str]:
    """A line's terms without Chinese single characters (as in a question's terms)."""
    return {t for t in terms_of(text) if not (CJK.match(t) and len(t) == 1)}


def labels_a_row(boxes: list[TextBox], i: int, min_values: int = 2) -> bool:
    """Line i is a table row label: at least `min_values` number-only boxes to its right on its row."""
    x1, y1, x2, y2 = boxes[i].box
    h = y2 - y1
    count = 0
    for j, b in enumerate(boxes):
        # (years do not count: a header row "Country | 2013 | 2014" names columns, not a row)
        if j != i and b.box[0] > x2 and is_number(b.text) and number_kind(b.text.strip()) != "year" and h > 0:
            if overlap(y1, y2, b.box[1], b.box[3]) >= 0.5 * min(h, b.box[3] - b.box[1]):
                count += 1
                if count >= min_values:
                    return True
    return False


def is_number(text: str) -> bool:
    return bool(re.fullmatch(r"\s*[+-]?[\d.,]+\s*%?\s*", text))


def number_between(boxes: list[TextBox], anchor: int, span: Span) -> bool:
    """Another number-only box sits in the same row between the anchor and the span."""
    a = boxes[anchor].box
    lo, hi = sorted((a[2], span.box[0])) if a[0] < span.box[0] else sorted((span.box[2], a[0]))
    for j, b in enumerate(boxes):
        if j in (anchor, span.line) or not is_number(b.text):
            continue
        cy = (b.box[1] + b.box[3]) / 2
        if lo <= (b.box[0] + b.box[2]) / 2 <= hi and a[1] <= cy <= a[3]:
            return True
    return False


def adjacent(a: Box, b: Box) -> bool:
    """No room for another line between the boxes (the gap is under one line height)."""
    gap_x = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    gap_y = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return max(gap_x, gap_y) < min(a[3] - a[1], b[3] - b[1])


def looks_like_email(text: str) -> bool:
    return bool(EMAIL.fullmatch(text.strip()))


def looks_like_website(text: str) -> bool:
    return bool(re.search(r"\w\.(com|net|org|cn|io|co|jp|in|sg|hk)\b|www\.|https?://", text, re.IGNORECASE))


def looks_like_name(text: str) -> bool:
    """A person's name: 2-4 Chinese characters alone, or 2-4 capitalised words."""
    text = text.strip()
    if CJK.match(text):
        return bool(re.fullmatch(r"[\u4e00-\u9fff]{2,4}", text))
    words = text.split()
    return 2 <= len(words) <= 4 and all(re.fullmatch(r"[A-Z][a-zA-Z.'-]*", w) for w in words)


def word_count(text: str) -> float:
    """Words in a line; a Chinese line counts one word per two characters."""
    cjk = len(CJK.findall(text))
    return sum(1 for w in CJK.sub(" ", text).split() if any(c.isalnum() for c in w)) + cjk / 2


def label_likeness(text: str) -> float:
    """1 for a short label (a row name, a column header, a legend entry), less for a sentence:
    sentences lie beside numbers without labelling them."""
    return 1.0 / (1.0 + 0.2 * max(0.0, word_count(text) - 4))
