"""Questions about the document itself, for the offline policy's rules (no model): its title, its presenter.

"What is the title of this presentation?" or "这个演讲的主讲人是谁？" name nothing that is printed on
the page: the answer is where the layout puts it. A deck's cover sets its title in the largest
type on the page and the presenter's name, alone on a short line, below it (often beside an email
address or a job title). So these rules read font sizes and line shapes, not question words:
- `document_part` says whether the question asks for the title or the presenter (or neither);
- `title_block` is the run of largest-type lines, read top to bottom;
- `presenter_line` is the best name-shaped line outside the title;
- `cover_likeness` scores how much a page looks like a cover (a big title and a name), which stands
  in for the question-term match when the question names nothing else ("这个演讲的标题是什么").
"""
from __future__ import annotations

import re
import unicodedata

from agent.policies.offline_layout import Box, Span, looks_like_name, median_height
from agent.policies.offline_question import CJK
from search_engine.types import TextBox

_DOC_EN = r"(?:presentation|talk|deck|slides?|slideshow|document|speech|lecture|keynote|webinar)"
_TITLE_EN = re.compile(rf"\b(?:title|topic|theme|subject|name)\b.*\b{_DOC_EN}\b|\bwhat is (?:this|the) {_DOC_EN} (?:about|called)\b"
                       rf"|\b{_DOC_EN}\b.*\b(?:titled|called|title|topic|theme)\b")
_PERSON_EN = re.compile(r"\b(?:author|presenter|speaker)s?\b")
_WHO_MADE_EN = re.compile(r"\bwho\b.*\b(?:present(?:ed|s|ing)?|gave|gives|giving|deliver(?:ed|s)?|wrote|written|prepared|"
                          r"authored|spoke|speaks)\b")
_DOC_ZH = r"(?:演讲|报告|分享|讲座|演示|幻灯片|PPT|ppt|文档)"
_TITLE_ZH = re.compile(rf"{_DOC_ZH}.{{0,6}}(?:标题|主题|题目|名称)|(?:标题|主题|题目).{{0,6}}{_DOC_ZH}")
_PERSON_ZH = re.compile(r"演讲者|演讲人|主讲|讲者|作者|报告人|分享人|分享者")
_PART_OF_DOC = re.compile(r"\b(?:section|chapter|part|chart|table|figure|slide \d+)\b|章|部分|节|图|表")

# Words that only say the question is about the document; they are not printed on its cover.
META_TERMS = frozenset(
    """author presenter speaker title topic theme subject name presentation talk deck slide slideshow document
    speech lecture keynote webinar present presented gave give deliver delivered wrote written prepared authored
    spoke made called about
    演讲 讲者 讲人 主讲 标题 主题 题目 作者 报告 告人 分享 享人 享者 讲座 演示 幻灯 灯片 文档 名称""".split()
)


def document_part(question: str) -> str:
    """"title" or "presenter" when the question asks for that of the document itself, else ""."""
    q = unicodedata.normalize("NFKC", question).lower()
    # the person's name, not something of theirs ("the presenter's email address", "主讲人的职务")
    if CJK.search(q):
        if re.search(r"谁|哪位|名字|叫什么", q) and (_PERSON_ZH.search(q) or re.search(_DOC_ZH, q)):
            return "presenter"
    elif (re.search(r"\bwho\b|\bname of the (?:author|presenter|speaker)", q)
          and (_PERSON_EN.search(q) or (_WHO_MADE_EN.search(q) and re.search(rf"\b{_DOC_EN}\b", q)))):
        return "presenter"
    if _PART_OF_DOC.search(q) or re.search(r"\btitle (?:slide|page)\b", q):
        return ""  # the title of a chapter or a chart is read like any other label
    if (_TITLE_ZH if CJK.search(q) else _TITLE_EN).search(q):
        return "title"
    return ""


def _height(b: TextBox) -> float:
    return b.box[3] - b.box[1]


def title_block(boxes: list[TextBox]) -> list[int]:
    """Indices of the title's lines in reading order: the tallest line with text and the lines in nearly
    the same type size stacked right above or below it, or beside it on its row (OCR may cut a line)."""
    lines = [i for i, b in enumerate(boxes) if _height(b) > 0 and sum(c.isalnum() for c in b.text) >= 2]
    if not lines:
        return []
    top = max(lines, key=lambda i: (_height(boxes[i]), -boxes[i].box[1]))
    h = _height(boxes[top])
    block, frontier = [top], [top]
    while frontier:
        edge = frontier.pop()
        for i in lines:
            if i not in block and 0.75 * h <= _height(boxes[i]) <= 1.33 * h and _beside(boxes[edge].box, boxes[i].box, h):
                block.append(i)
                frontier.append(i)
    rows = sorted(block, key=lambda i: boxes[i].box[1])
    return sorted(rows, key=lambda i: (_row_of(boxes, rows, i), boxes[i].box[0]))


def _beside(a: Box, b: Box, h: float) -> bool:
    """b continues a: the next line of the same column, or the next piece of the same row."""
    gap_y = max(a[1], b[1]) - min(a[3], b[3])
    shared_x = min(a[2], b[2]) - max(a[0], b[0])
    if -0.3 * h <= gap_y <= 0.9 * h and shared_x > 0.3 * min(a[2] - a[0], b[2] - b[0]):
        return True
    shared_y = min(a[3], b[3]) - max(a[1], b[1])
    gap_x = max(a[0], b[0]) - min(a[2], b[2])
    return shared_y > 0.5 * h and gap_x <= 2 * h


def _row_of(boxes: list[TextBox], rows: list[int], i: int) -> int:
    """The index of the first line (top to bottom) that shares line i's row."""
    for n, j in enumerate(rows):
        if min(boxes[i].box[3], boxes[j].box[3]) - max(boxes[i].box[1], boxes[j].box[1]) > 0.5 * _height(boxes[i]):
            return n
    return len(rows)


_WIDE = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")  # Chinese text and punctuation: no spaces


def title_text(boxes: list[TextBox], lines: list[int]) -> str:
    text = ""
    for i in lines:
        part = boxes[i].text.strip()
        text = text + part if text and _WIDE.match(text[-1]) and _WIDE.match(part[:1]) else f"{text} {part}".strip()
    return text


def presenter_line(boxes: list[TextBox], title: list[int]) -> int | None:
    """The name-shaped line closest under the title (a cover puts the presenter there)."""
    names = [i for i, b in enumerate(boxes) if i not in title and looks_like_name(b.text)]
    if not names:
        return None
    bottom = max((boxes[i].box[3] for i in title), default=0.0)
    # below the title first, then the nearest; a line further up (a logo, a header) last
    return min(names, key=lambda i: (boxes[i].box[1] < bottom, abs(boxes[i].box[1] - bottom)))


def cover_likeness(boxes: list[TextBox], part: str) -> float:
    """0..1: a title in type much larger than the rest, few lines, and (for a presenter) a name."""
    title = title_block(boxes)
    if not title:
        return 0.0
    ratio = _height(boxes[title[0]]) / (median_height(boxes) or 1.0)
    score = min(1.0, max(0.0, (ratio - 1.0) / 0.6)) * (1.0 if len(boxes) <= 12 else 0.5)  # 1 from 1.6x the median type
    has_name = presenter_line(boxes, title) is not None
    if part == "presenter":
        return score if has_name else 0.2 * score
    return score * (1.0 if has_name else 0.8)  # a cover names its presenter; a section divider does not


def document_answer(boxes: list[TextBox], part: str) -> tuple[Span, str] | None:
    """The span answering a title or presenter question on this image, and how it was found."""
    title = title_block(boxes)
    if not title:
        return None
    if part == "title":
        xs = [boxes[i].box for i in title]
        box = (min(b[0] for b in xs), min(b[1] for b in xs), max(b[2] for b in xs), max(b[3] for b in xs))
        return Span(title_text(boxes, title), "text", box, title[0]), "the lines in the largest type on the page"
    line = presenter_line(boxes, title)
    if line is None:
        return None
    return Span(boxes[line].text.strip(), "text", boxes[line].box, line), "the name-shaped line under the title"
