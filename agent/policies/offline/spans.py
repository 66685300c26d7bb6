"""Candidate spans: the possible answers cut out of OCR lines, each with its kind and estimated box.

Every number (with its sign, currency, percent sign or unit) and every calendar date in a line is a
span, and so is the line's text without its leading bullet or rank, each comma-separated piece of
it, the part after "Source:", and any email address. Numbers that are not values are left out:
the ends of a range ("2014-20") and the number of a table or figure ("Table 1").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from search_engine.types import TextBox

from .layout import EMAIL, Box, sub_box

# not glued to Latin letters ("3rd", "Q3", "IPv6"); Chinese may touch it ("为184,300名"), so the guards are ASCII
_CURRENCY = r"(?:US\$|HK\$|S\$|A\$|\$|¥|€|£|(?:EUR|USD|RMB|CNY|GBP|JPY|HKD|SGD|INR|AUD)\s?)"
NUMBER = re.compile(r"(?<![A-Za-z0-9_.])[+-]?" + _CURRENCY + r"?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
                    r"(?:\s?%|\s(?:million|billion|mn|bn)\b)?(?:\s+per\s+(?:cubic\s+|square\s+)?[a-z]+)?(?![A-Za-z\d])")
_MONTH = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
DATE = re.compile(  # a month and a year at least: "12 September 2025", "Sept. 3, 2014", "2025-09-12", "2025年9月12日"
    rf"(?<![A-Za-z0-9])(?:\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH},?\s+(?:19|20)\d\d|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+"
    rf"(?:19|20)\d\d|{_MONTH},?\s+(?:19|20)\d\d|(?:19|20)\d\d-\d\d-\d\d)(?![A-Za-z0-9])|(?:19|20)\d\d\s?年\s?\d{{1,2}}\s?月(?:\s?\d{{1,2}}\s?[日号])?",
    re.IGNORECASE)
LEADING_MARK = re.compile(r"^[\s•·\-–—*●○■□◆>#]*(?:\d{1,2}[.)、]?\s*(?=[^\d\s.,%]))?")
SOURCE = re.compile(r"^\s*(?:sources?|数据来源|来源|资料来源)\s*[:：]\s*", re.IGNORECASE)
_ELEMENT = re.compile(r"(?:\b(?:table|figure|fig\.?|chart|exhibit|page|slide|section|appendix)|[图表])\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Span:
    """A possible answer: a number, a date or a text phrase, with its box and the line it came from."""

    text: str
    kind: str  # "percent", "year", "number", "date" or "text"
    box: Box
    line: int  # index of the OCR line it was cut from
    value: float | None = None  # for numbers
    start: int = 0  # character offsets in its line's text
    end: int = 0


def number_kind(token: str) -> str:
    if token.endswith("%") or re.search(r"\sper\s?cent$", token):
        return "percent"
    return "year" if re.fullmatch(r"(19|20)\d\d", token) else "number"


def _value(token: str) -> float | None:
    try:
        return float(re.sub(r"[^\d.]", "", token))
    except ValueError:
        return None


def _is_phrase(text: str) -> bool:
    """Mostly letters, and not OCR of a pictogram (one character repeated: "田田田")."""
    chars = text.replace(" ", "")
    letters = sum(1 for c in chars if c.isalpha() or c == "@")
    junk = len(chars) >= 3 and max(chars.count(c) for c in set(chars)) >= 0.6 * len(chars)
    return letters >= 2 and letters >= len(chars) / 2 and not junk


def spans_of(boxes: list[TextBox]) -> list[Span]:
    """Every number and date in every line, and each line's text (see the module docstring)."""
    spans: list[Span] = []
    for i, b in enumerate(boxes):
        text = b.text
        for m in DATE.finditer(text):
            spans.append(Span(" ".join(m.group().split()), "date", sub_box(b.box, text, *m.span()), i, None, *m.span()))
        for m in NUMBER.finditer(text):
            before, after = text[max(0, m.start() - 2): m.start()], text[m.end(): m.end() + 2]
            if re.search(r"\d\s?[-–~]$", before) or re.match(r"\s?[-–~]\d", after) or _ELEMENT.search(text[: m.start()]):
                continue
            token = re.sub(r"\s+(?=%)", "", " ".join(m.group().split()))  # "13 %" -> "13%"
            spans.append(Span(token, number_kind(token), sub_box(b.box, text, *m.span()), i, _value(token), *m.span()))
        start = LEADING_MARK.match(text).end()
        pieces = [(start, len(text))] + ([(SOURCE.match(text).end(), len(text))] if SOURCE.match(text) else [])  # "Source: X"
        pieces += [m.span() for m in EMAIL.finditer(text)]
        if re.search(r"[,，]", text[start:]):  # "Yeoh Siew Hoon, Editor & Founder" holds a name
            pieces += [(start + m.start(), start + m.end()) for m in re.finditer(r"[^,，]+", text[start:])]
        for a, z in pieces:
            a, z = a + len(text[a:z]) - len(text[a:z].lstrip()), z - (len(text[a:z]) - len(text[a:z].rstrip()))
            if _is_phrase(text[a:z]):
                spans.append(Span(text[a:z], "text", sub_box(b.box, text, a, z), i, None, a, z))
    return list(dict.fromkeys(spans))  # a piece equal to the whole line is listed once


def cloze_spans(boxes: list[TextBox], cloze: str, cloze_last: bool) -> list[Span]:
    """Chinese fill-in-the-blank: in a line holding the question's words before its question word,
    the text right after them up to the next clause break ("围绕安全/稳定/性能/成本的..." for
    "...围绕哪几个方面"); when nothing follows and the question ends there, the clause before them
    ("增强型NAT网关发布" for "...发布了什么")."""
    spans = []
    for i, b in enumerate(boxes if cloze else []):
        at = b.text.find(cloze)
        if at < 0:
            continue
        start = at + len(cloze)
        start += len(b.text[start:]) - len(b.text[start:].lstrip("的了是"))  # "面临的挑战" for "面临的是什么"
        end = start + len(re.split(r"[的，。,;；：:]", b.text[start:])[0])
        if len(b.text[start:end].strip()) < 2 and cloze_last:
            end = at
            start = end - len(re.split(r"[的，。,;；：:]", b.text[:end])[-1])
        if len(b.text[start:end].strip()) >= 2:
            spans.append(Span(b.text[start:end].strip(), "text", sub_box(b.box, b.text, start, end), i, None, start, end))
    return spans
