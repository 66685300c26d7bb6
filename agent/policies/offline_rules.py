"""The rules behind the offline policy: question analysis, region choice and answer spans.

No model is involved anywhere in this file. Everything is plain functions over OCR text boxes
(`search_engine.types.TextBox`, pixel coordinates of the image that was OCR'd), so each rule can be
checked on a hand-made list of boxes (tests/test_offline_policy.py).

The idea, in three steps:
1. `analyse_question` turns the question into weighted key terms (English word stems, numbers,
   Chinese character bigrams), the kind of answer it asks for (a percentage, a year, a number or
   text) and whether it asks for an extreme ("highest", "最高").
2. Every OCR line is cut into candidate spans (numbers with their kind, and text phrases), each
   with an estimated sub-box. A candidate is supported by the boxes that contain question terms
   and read together with it: on the same row (a table row label), in the same column (a table
   header, a bar's category label), or simply close by. `rank_candidates` adds that support up,
   term by term, so the cell at the crossing of the row and the column the question names wins.
3. `choose_region` returns the best candidate together with the boxes that support it; the policy
   crops that region and runs step 2 again on the sharper crop to pick the answer.
"""
from __future__ import annotations

import math
import os
import re
import unicodedata
from dataclasses import dataclass, field, replace

import numpy as np

from agent.policies.offline_charts import bar_ends, label_column, swatch_color
from search_engine.tokenize import CJK_STOPCHARS, tokenize
from search_engine.types import TextBox

Box = tuple[float, float, float, float]

ANSWER_KINDS = ("percent", "year", "number", "value", "text")  # "value": a number or a percentage
NUMBER_KINDS = ("percent", "year", "number")

# --- question analysis -------------------------------------------------------------------------

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_ORDINAL_WORDS = {
    "first": "1", "second": "2", "third": "3", "fourth": "4", "fifth": "5",
    "sixth": "6", "seventh": "7", "eighth": "8", "ninth": "9", "tenth": "10",
}
_ORDINAL_SUFFIXES = frozenset({"st", "nd", "rd", "th"})
# Words that shape the question but do not name anything on the page.
_QUESTION_WORDS = frozenset(
    """how many much what which who whom whose when where why according page slide chart table figure graph
    diagram shown show shows given listed mentioned value values number numbers percentage percent proportion
    year years rank ranked ranks ranking highest lowest largest smallest least most biggest greatest
    top bottom best worst there name named called respectively between among amount total do does did
    can could would should about approximately around roughly than more less fewer make made give given get
    has have had use used expected projected forecast
    """.split()
)
# Chinese question phrases, removed before the text is cut into bigrams.
_ZH_QUESTION = re.compile(r"是多少|有多少|多少|哪一年|哪年|哪一个|哪几个|哪个|哪些|哪家|哪项|哪种|什么时候|什么|几个|几家|几项|几种|几|是否|请问|分别|吗|呢|是谁|谁|？|\?")
# Two-letter codes that charts print instead of country names (ISO 3166 alpha-2, plus common forms).
ALIASES = {
    "singapore": ("sg",), "malaysia": ("my",), "indonesia": ("id",), "philippine": ("ph",), "thailand": ("th",),
    "vietnam": ("vn",), "china": ("cn",), "japan": ("jp",), "korea": ("kr",), "australia": ("au",),
    "india": ("ind",), "taiwan": ("tw",), "hong": ("hk",), "usa": ("us",), "us": ("usa",),
    "uk": ("united kingdom", "britain"), "japanese": ("japan",), "chinese": ("china",), "indian": ("india",),
    "korean": ("korea",),
}

# What kind of answer the wording asks for (checked in this order, see `answer_kind_of`).
_YEAR_EN = re.compile(r"\b(which|what) year\b|\bwhen\b")
_TEXT_EN = re.compile(
    r"\b(which|who|whom|whose|where)\b"
    r"|^what ((is|was|are|were) )?(the )?([\w-]+ ){0,2}(name|reason|title|type|kind|purpose|method|term|theme|topic|"
    r"country|destination|city|company|market|product|region|app|segment|tier|service|brand|channel|step|website)s?\b"
)
_PERCENT_EN = re.compile(r"\b(percent|percentage|share|proportion|cagr|growth rate|rate)\b|%")
_NUMBER_EN = re.compile(r"\bhow (many|much|large|big|high|low|long|old)\b|\bnumber of\b")
_YEAR_ZH = re.compile(r"哪一年|哪年|什么时候|何时|年份")
_TEXT_ZH = re.compile(r"哪个|哪几个|哪些|哪家|哪项|哪种|哪类|谁|什么")
_PERCENT_ZH = re.compile(r"百分比|占比|比例|比重|百分之|增长率|增速|%")
_NUMBER_ZH = re.compile(r"多少|几")
_MAX_EN = re.compile(r"\b(highest|largest|biggest|greatest|most|maximum|best)\b")
_MIN_EN = re.compile(r"\b(lowest|smallest|least|fewest|minimum|worst)\b")
_MAX_ZH = re.compile(r"最高|最大|最多")
_MIN_ZH = re.compile(r"最低|最小|最少")


@dataclass(frozen=True)
class Question:
    """What the rules read from a question."""

    text: str
    language: str  # "zh" if the question has Chinese characters, else "en"
    terms: dict[str, float]  # key term -> weight
    answer_kind: str  # one of ANSWER_KINDS
    extreme: str | None  # "max" / "min" when the question asks for the highest / lowest
    query: str  # what the policy types into the search engine
    numbers: tuple[str, ...] = ()  # numbers written in the question (never the answer)
    wants_name: bool = False  # "who ..." / "谁": a person's name
    wants_website: bool = False  # "which website ...": a domain name
    wants_source: bool = False  # "where does the data come from": a slide's "Source: ..." line
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)  # term -> other spellings on pages
    cloze: str = ""  # Chinese: the two characters just before the question word ("围绕" in "围绕哪几个方面")


def _stem(word: str) -> str:
    """A very light English stemmer: possessives and plurals ("travellers" -> "traveller")."""
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def terms_of(text: str) -> list[str]:
    """Normalised terms of any text (question or OCR line): stems, numbers, Chinese uni/bigrams."""
    out = []
    for token in tokenize(text):
        if token in _ORDINAL_SUFFIXES:
            continue
        if token.isdigit() and len(token) > 1:
            token = token.lstrip("0") or "0"  # "03" (a numbered section) is rank 3
        if token.isascii() and token[0].isalpha():
            token = _stem(token)
        out.append(_ORDINAL_WORDS.get(token, token))
    return out


_ZH_DIGITS = {c: str(i) for i, c in enumerate("一二三四五六七八九十", start=1)}


def _rank_words(question: str) -> str:
    """Write ranks as numbers: "the top destination" -> rank 1, "第三部分" -> "3 部分"."""
    question = re.sub(r"\bthe top\b(?!\s*\d)", " the 1 ", question, flags=re.IGNORECASE)
    return re.sub(r"第([一二三四五六七八九十])", lambda m: f" {_ZH_DIGITS[m.group(1)]} ", question)


def _term_weight(term: str) -> float:
    if term[0].isdigit():
        return 2.0  # a number the question names (a year, a rank) is a sharp anchor
    if _CJK.match(term):
        return 1.0 if len(term) > 1 else 0.1  # bigrams carry the meaning; unigrams mostly add noise
    return 1.0


def answer_kind_of(question: str) -> str:
    """"year", "text", "percent", "number" or "value", from the wording, in that order of precedence
    ("which country has the highest CAGR" asks for a country, not a percentage)."""
    q = unicodedata.normalize("NFKC", question).lower().strip()
    if _YEAR_EN.search(q) or _YEAR_ZH.search(q):
        return "year"
    if re.search(r"\b(where|what) does .* rank\b|\bwhat rank\b|排名第几|排第几", q):
        return "number"  # a rank
    if _TEXT_EN.search(q) or _TEXT_ZH.search(q):
        return "text"
    if _PERCENT_EN.search(q) or _PERCENT_ZH.search(q):
        return "percent"
    if _NUMBER_EN.search(q) or _NUMBER_ZH.search(q):
        return "number"
    # "what is the X of Y" on a slide of figures usually asks for a figure of some kind
    return "value" if re.search(r"\bwhat\b", q) else "text"


def extreme_of(question: str) -> str | None:
    q = unicodedata.normalize("NFKC", question).lower()
    if _MIN_EN.search(q) or _MIN_ZH.search(q):
        return "min"
    if _MAX_EN.search(q) or _MAX_ZH.search(q):
        return "max"
    return None


def analyse_question(question: str) -> Question:
    text = " ".join(question.split())
    language = "zh" if _CJK.search(text) else "en"
    stripped = _ZH_QUESTION.sub(" ", text) if language == "zh" else text
    terms: dict[str, float] = {}
    for term in terms_of(_rank_words(stripped)):
        if term in _QUESTION_WORDS:
            continue
        if _CJK.match(term) and (len(term) == 1 or set(term) & CJK_STOPCHARS):
            continue  # Chinese: bigrams carry the meaning; single characters and "的作"-like pairs are noise
        terms[term] = max(terms.get(term, 0.0), _term_weight(term))
    numbers = tuple(t for t in terms if t[0].isdigit())
    if language == "zh":
        query = " ".join(stripped.split()) or text
    else:
        words = re.findall(r"[A-Za-z0-9][A-Za-z0-9.%$'&/-]*", text)
        kept = [w for w in words if any(t in terms for t in terms_of(w))]
        query = " ".join(kept) or text
    aliases = {t: ALIASES[t] for t in terms if t in ALIASES}
    cloze = ""
    wh = re.search(r"多少|哪|什么|几|谁", text) if language == "zh" else None
    if wh:
        before = re.findall(r"[\u4e00-\u9fff]+", text[: wh.start()])
        if before and len(before[-1]) >= 2 and not set(before[-1][-2:]) & set("是有的了在为对"):
            cloze = before[-1][-2:]
    lowered = text.lower()
    return Question(
        text, language, terms, answer_kind_of(text), extreme_of(text), query, numbers,
        wants_name=bool(re.match(r"\s*(who|whom|whose)\b", lowered) or "谁" in text),
        wants_website=bool(re.search(r"\b(website|site|url|domain|web address)\b|网站|网址", lowered)),
        wants_source=bool(re.search(r"\bsources?\b|\bcomes? from\b|来源|出处", lowered)),
        aliases=aliases, cloze=cloze,
    )


# --- matching OCR lines against the question -----------------------------------------------------


def _fuzzy_equal(a: str, b: str) -> bool:
    """Tolerate OCR slips and suffixes on longer English words ("aspiration" ~ "aspirational")."""
    if a == b:
        return True
    if not (a.isascii() and b.isascii() and a.isalpha() and b.isalpha()):
        return False
    short, long_ = sorted((a, b), key=len)
    if len(short) >= 5 and long_.startswith(short):
        return True
    common = len(os.path.commonprefix([a, b]))
    if common >= 6 and common >= 0.8 * len(short):  # "individualism" ~ "individualistic"
        return True
    if len(short) >= 6 and len(long_) - len(short) <= 1:
        return _edit_distance_at_most_one(short, long_)
    return False


def _edit_distance_at_most_one(a: str, b: str) -> bool:
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) <= 1
    # len(b) == len(a) + 1: one insertion
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1 :]


def matched_terms(line_terms: list[str] | set[str], question: Question) -> set[str]:
    """Question terms found among a line's terms (exactly, fuzzily, or by an alias such as "SG")."""
    found = set()
    line_terms = set(line_terms)
    for term in question.terms:
        if term in line_terms or any(_fuzzy_equal(term, t) for t in line_terms):
            found.add(term)
        elif any(alias in line_terms for alias in question.aliases.get(term, ())):
            found.add(term)
    return found


def page_match(boxes: list[TextBox], question: Question) -> float:
    """Share of the question's term weight found anywhere in the boxes (0..1)."""
    total = sum(question.terms.values())
    if not total:
        return 0.0
    found: set[str] = set()
    for b in boxes:
        found |= matched_terms(terms_of(b.text), question)
    return sum(question.terms[t] for t in found) / total


# --- candidate spans ---------------------------------------------------------------------------

# A number with an optional sign, currency and percent sign; not glued to letters ("3rd", "Q3", "IPv6").
_NUMBER = re.compile(r"(?<![\w.])[+-]?(?:US\$|\$|¥|€|£)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?%)?(?![A-Za-z\d])")
_LEADING_MARK = re.compile(r"^[\s•·\-–—*●○■□◆>#]*(?:\d{1,2}[.)、]?\s*(?=[^\d\s.,%]))?")


@dataclass(frozen=True)
class Span:
    """A possible answer: a number or a text phrase, with its estimated box and the line it came from."""

    text: str
    kind: str  # one of ANSWER_KINDS
    box: Box
    line: int  # index of the OCR line (TextBox) it was cut from
    value: float | None = None  # numeric value for number kinds


def cloze_spans(boxes: list[TextBox], question: Question) -> list[Span]:
    """Chinese fill-in-the-blank: in a line holding the words just before the question word, the
    text right after them up to the next clause break ("围绕安全/稳定/性能/成本的..." for
    "...围绕哪几个方面" gives "安全/稳定/性能/成本")."""
    if not question.cloze:
        return []
    spans = []
    for i, b in enumerate(boxes):
        at = b.text.find(question.cloze)
        if at < 0:
            continue
        start = at + len(question.cloze)
        end = start + len(re.split(r"[的，。,;；：:]", b.text[start:])[0])
        phrase = b.text[start:end].strip()
        if len(phrase) >= 2:
            spans.append(Span(phrase, "text", _sub_box(b.box, b.text, start, end), i))
    return spans


def _char_width(ch: str) -> float:
    return 2.0 if _CJK.match(ch) or unicodedata.east_asian_width(ch) in ("W", "F") else 1.0


def _sub_box(box: Box, text: str, start: int, end: int) -> Box:
    """Estimate the box of text[start:end] inside a line box by character widths (CJK count double)."""
    widths = [_char_width(c) for c in text]
    total = sum(widths) or 1.0
    x1, y1, x2, y2 = box
    a = x1 + (x2 - x1) * sum(widths[:start]) / total
    b = x1 + (x2 - x1) * sum(widths[:end]) / total
    return (a, y1, b, y2)


def number_kind(token: str) -> str:
    if token.endswith("%"):
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


_SOURCE = re.compile(r"^\s*(?:sources?|数据来源|来源|资料来源)\s*[:：]\s*", re.IGNORECASE)


def _junk(phrase: str) -> bool:
    """OCR of icons and pictograms: one character repeated ("田田田", "香香香香")."""
    chars = phrase.replace(" ", "")
    return len(chars) >= 3 and max(chars.count(c) for c in set(chars)) >= 0.6 * len(chars)


def spans_of(boxes: list[TextBox]) -> list[Span]:
    """Every number in every line, and each line's text (without a leading bullet or rank) as a phrase."""
    spans: list[Span] = []
    for i, b in enumerate(boxes):
        text = b.text
        for m in _NUMBER.finditer(text):
            if _in_range(text, m.start(), m.end()):
                continue
            token = re.sub(r"\s", "", m.group())
            spans.append(Span(token, number_kind(token), _sub_box(b.box, text, m.start(), m.end()), i, _number_value(token)))
        lead = _LEADING_MARK.match(text)
        start = lead.end() if lead else 0
        phrase = text[start:].strip()
        letters = sum(1 for c in phrase if c.isalpha())
        if letters >= 2 and letters >= len(phrase.replace(" ", "")) / 2 and not _junk(phrase):
            spans.append(Span(phrase, "text", _sub_box(b.box, text, start, len(text)), i))
        source = _SOURCE.match(text)
        if source and text[source.end():].strip():
            spans.append(Span(text[source.end():].strip(), "text", _sub_box(b.box, text, source.end(), len(text)), i))
    return spans


# --- geometry ----------------------------------------------------------------------------------


def _overlap(a1: float, a2: float, b1: float, b2: float) -> float:
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
        oy = _overlap(a[1], a[3], b[1], b[3]) / min(ah, bh)
        if oy >= 0.5:
            gap = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
            best, how = oy * (1.0 - 0.4 * gap / w), "row"
    if aw > 0 and bw > 0:
        ox = _overlap(a[0], a[2], b[0], b[2]) / min(aw, bw)
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


# --- ranking -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Support:
    """One question term's best evidence for a candidate: the line holding it and how they relate."""

    term: str
    line: int
    text: str
    box: Box
    strength: float
    how: str  # "row", "column", "near" or "same line"


@dataclass(frozen=True)
class Candidate:
    span: Span
    score: float
    support: tuple[Support, ...] = field(default_factory=tuple)
    note: str = ""  # how it was found, when not by support alone (e.g. a bar measured in pixels)
    extent: Box | None = None  # the area the evidence covers (e.g. the whole chart), if wider than the supports

    def explain(self, limit: int = 3) -> str:
        """E.g. 'same row as "Japan", same column as "2014"' (the strongest supports)."""
        seen, parts = set(), [self.note] if self.note else []
        for s in sorted(self.support, key=lambda s: -s.strength):
            if s.line in seen or s.strength < 0.15:
                continue
            seen.add(s.line)
            label = {"row": "same row as", "column": "same column as", "near": "near", "same line": "on the line"}[s.how]
            parts.append(f'{label} "{_short(s.text)}"')
            if len(parts) == limit:
                break
        return ", ".join(parts) if parts else "no question term near it"


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _kinds_for(answer_kind: str) -> list[tuple[str, ...]]:
    """Which span kinds to try, in order of preference, for an expected answer kind."""
    return {
        "percent": [("percent",), ("number",)],
        "year": [("year",), ("number",)],
        "number": [("number",), ("percent",), ("year",)],
        "value": [("number", "percent"), ("year",)],
        "text": [("text",)],
    }[answer_kind]


def _support_for(span: Span, question: Question, boxes: list[TextBox], anchors: dict[str, list[int]],
                 quality: list[float], titles: list[bool], row_labels: list[bool], size: tuple[int, int]) -> list[Support]:
    """For each question term found on the page, the line holding it that reads best with `span`.

    `quality[i]` says how much line i looks like a label of something (see `anchor_quality`)."""
    span_terms = set(terms_of(span.text))
    support = []
    for term in question.terms:
        best: Support | None = None
        for i in anchors.get(term, []):
            if i == span.line:
                if term in span_terms or any(_fuzzy_equal(term, t) for t in span_terms):
                    continue  # the candidate itself repeats the question: no support
                # a sentence that names a question term states its number ("21 are domestic"); a short
                # line that does is usually a label, its number part of the name ("Top 20 destinations")
                sentence = word_count(boxes[i].text) >= 5
                s, how = (1.0 if span.kind == "text" or sentence else 0.5), "same line"
                s *= 0.5 if titles[i] else 1.0  # a slide title mentions things in passing
            else:
                s, how = relation(span.box, boxes[i].box, size)
                s *= quality[i]
                if how == "row" and boxes[i].box[0] > span.box[2]:
                    s *= 0.8  # row labels sit left of their values
                if how == "column" and row_labels[i]:
                    s *= 0.3  # a table's row label names its row, not the labels above and below it
                if how == "row" and span.kind == "text" and _is_number(boxes[i].text) and _number_between(boxes, i, span):
                    s *= 0.3  # a rank labels the phrase right after it, not the one after the next rank
                if span.kind == "text" and how != "near" and _content_terms(span.text) & _content_terms(boxes[i].text):
                    s *= 0.5  # two parallel labels sharing words ("IT系统上云", "全量系统上云"): siblings, not label and value
                if span.kind == "text" and how != "near" and _adjacent(span.box, boxes[i].box):
                    s *= 1.15  # a phrase right under / beside its label is its description
            if best is None or s > best.strength:
                best = Support(term, i, boxes[i].text, boxes[i].box, s, how)
        if best is not None:
            support.append(best)
    return support


def _content_terms(text: str) -> set[str]:
    """A line's terms without Chinese single characters (as in a question's terms)."""
    return {t for t in terms_of(text) if not (_CJK.match(t) and len(t) == 1)}


def _labels_a_row(boxes: list[TextBox], i: int, min_values: int = 2) -> bool:
    """Line i is a table row label: at least `min_values` number-only boxes to its right on its row."""
    x1, y1, x2, y2 = boxes[i].box
    h = y2 - y1
    count = 0
    for j, b in enumerate(boxes):
        # (years do not count: a header row "Country | 2013 | 2014" names columns, not a row)
        if j != i and b.box[0] > x2 and _is_number(b.text) and number_kind(b.text.strip()) != "year" and h > 0:
            if _overlap(y1, y2, b.box[1], b.box[3]) >= 0.5 * min(h, b.box[3] - b.box[1]):
                count += 1
                if count >= min_values:
                    return True
    return False


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"\s*[+-]?[\d.,]+\s*%?\s*", text))


def _number_between(boxes: list[TextBox], anchor: int, span: Span) -> bool:
    """Another number-only box sits in the same row between the anchor and the span."""
    a = boxes[anchor].box
    lo, hi = sorted((a[2], span.box[0])) if a[0] < span.box[0] else sorted((span.box[2], a[0]))
    for j, b in enumerate(boxes):
        if j in (anchor, span.line) or not _is_number(b.text):
            continue
        cy = (b.box[1] + b.box[3]) / 2
        if lo <= (b.box[0] + b.box[2]) / 2 <= hi and a[1] <= cy <= a[3]:
            return True
    return False


def _adjacent(a: Box, b: Box) -> bool:
    """No room for another line between the boxes (the gap is under one line height)."""
    gap_x = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    gap_y = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return max(gap_x, gap_y) < min(a[3] - a[1], b[3] - b[1])


def anchor_quality(line_terms: list[str], matched: set[str]) -> float:
    """How well a line containing question terms can label something: short labels made mostly of
    question terms ("Japan", "CAGR (2014-20)") are good; sentences and lines that mention a term in
    passing ("China (ex. HK/Macau)" for "China") less so."""
    distinct = {t for t in line_terms if not (_CJK.match(t) and len(t) == 1)}  # as in the question's terms
    coverage = len(matched & distinct) / len(distinct) if distinct else 0.0
    return 0.5 + 0.5 * coverage


def looks_like_website(text: str) -> bool:
    return bool(re.search(r"\w\.(com|net|org|cn|io|co|jp|in|sg|hk)\b|www\.|https?://", text, re.IGNORECASE))


def looks_like_name(text: str) -> bool:
    """A person's name: 2-4 Chinese characters alone, or 2-4 capitalised words."""
    text = text.strip()
    if _CJK.match(text):
        return bool(re.fullmatch(r"[\u4e00-\u9fff]{2,4}", text))
    words = text.split()
    return 2 <= len(words) <= 4 and all(re.fullmatch(r"[A-Z][a-zA-Z.'-]*", w) for w in words)


def word_count(text: str) -> float:
    """Words in a line; a Chinese line counts one word per two characters."""
    cjk = len(_CJK.findall(text))
    return sum(1 for w in _CJK.sub(" ", text).split() if any(c.isalnum() for c in w)) + cjk / 2


def label_likeness(text: str) -> float:
    """1 for a short label (a row name, a column header, a legend entry), less for a sentence:
    sentences lie beside numbers without labelling them."""
    return 1.0 / (1.0 + 0.2 * max(0.0, word_count(text) - 4))


def support_score(support: list[Support] | tuple[Support, ...], weights: dict[str, float]) -> float:
    """Sum over supporting lines of strength * sqrt(weight of the terms that line supplies).

    The square root keeps one line that repeats many question words (a title, a header) from
    outvoting a row label that holds the one word naming the row.
    """
    by_line: dict[int, list[Support]] = {}
    for s in support:
        by_line.setdefault(s.line, []).append(s)
    total = 0.0
    for items in by_line.values():
        weight = sum(weights[s.term] for s in items)
        total += max(s.strength for s in items) * math.sqrt(weight)
    return total


def image_weights(question: Question, anchors: dict[str, list[int]]) -> dict[str, float]:
    """Term weights for one image: a term found on many lines (a word of the title repeated in
    headers) says less about where the answer is than one found on a single line (a row label)."""
    return {t: w / math.sqrt(len(anchors[t])) if anchors.get(t) else w for t, w in question.terms.items()}


def rank_candidates(boxes: list[TextBox], question: Question, size: tuple[int, int]) -> list[Candidate]:
    """Candidates of the expected kind, best supported first (deterministic order on ties)."""
    anchors: dict[str, list[int]] = {}
    anchor_lines: set[int] = set()
    quality = []
    for i, b in enumerate(boxes):
        line_terms = terms_of(b.text)
        matched = matched_terms(line_terms, question)
        for term in matched:
            anchors.setdefault(term, []).append(i)
            anchor_lines.add(i)
        quality.append(label_likeness(b.text) * anchor_quality(line_terms, matched))
    # lines in a much larger font than the page's body text are slide titles: they say what the slide
    # is about, not which cell answers (and they lie above every column of the page)
    heights = sorted(b.box[3] - b.box[1] for b in boxes)
    body = heights[len(heights) // 2] if heights else 0.0
    titles = [bool(body) and b.box[3] - b.box[1] > 1.4 * body for b in boxes]
    quality = [q * (0.5 if t else 1.0) for q, t in zip(quality, titles)]
    row_labels = [i in anchor_lines and _labels_a_row(boxes, i) for i in range(len(boxes))]
    weights = image_weights(question, anchors)
    spans = [s for s in spans_of(boxes) if not (s.kind in NUMBER_KINDS and s.text.rstrip("%") in question.numbers)]
    cloze = cloze_spans(boxes, question) if question.answer_kind == "text" else []
    spans += cloze
    for kinds in _kinds_for(question.answer_kind):
        pool = [s for s in spans if s.kind in kinds]
        if pool:
            break
    else:
        return []
    ranked = []
    for span in pool:
        support = _support_for(span, question, boxes, anchors, quality, titles, row_labels, size)
        score = support_score(support, weights)
        named = [s.strength for s in support if s.term in question.numbers]
        if named and max(named) < 0.3:
            score *= 0.5  # the question names a number (a year, a rank) on the page, and this is far from it
        line = boxes[span.line].text
        if span.kind != "text" and word_count(line) - word_count(span.text) >= 2 and not (
                word_count(line) >= 5 and any(s.how == "same line" for s in support)):
            score *= 0.7  # a number inside a label or an unrelated sentence, rather than a value standing alone
        if span.kind == "text":
            span_terms = _content_terms(span.text)
            echoed = matched_terms(span_terms, question)
            # an answer that repeats the question's own words is rarely the answer; nor is a long sentence
            score *= 1.0 - 0.8 * len(echoed) / max(1, len(span_terms))
            score /= 1.0 + 0.3 * max(0, word_count(span.text) - 5)
            if question.wants_name:
                score *= 1.5 if looks_like_name(span.text) else 0.6
            if question.wants_website:
                score *= 1.5 if looks_like_website(span.text) else 0.6
            line = boxes[span.line].text
            if question.wants_source:
                score = (score + 1.0) * 2.0 if _SOURCE.match(line) and not _SOURCE.match(span.text) else score * 0.5
            lead = _LEADING_MARK.match(line)
            if lead and set(terms_of(lead.group())) & set(question.numbers):
                score *= 1.3  # the rank the question names is written on this very line ("3 Rome-Italy")
            if span in cloze:
                score *= 1.5  # the page completes the question's own sentence
        ranked.append(Candidate(span, score, tuple(support)))
    ranked.sort(key=lambda c: (-c.score, c.span.line, c.span.box[0]))
    return ranked


def _extreme_candidate(boxes: list[TextBox], question: Question, size: tuple[int, int]) -> Candidate | None:
    """For "which X has the highest Y": the extreme number among those in the best-supported column
    or row, then the text that labels it (its row label or its column label)."""
    numbers = rank_candidates(boxes, replace(question, answer_kind="value"), size)
    numbers = [c for c in numbers if c.span.value is not None and c.span.kind != "year"]
    if not numbers:
        return None
    # Numbers that share the top candidate's strongest row/column support form the series compared.
    top = numbers[0]
    axis = max(top.support, key=lambda s: s.strength, default=None)
    if axis is None or axis.how not in ("row", "column"):
        return None
    series = [c for c in numbers if any(s.line == axis.line and s.how == axis.how for s in c.support)]
    values = sorted(c.span.value for c in series)
    steps = {round(b - a, 6) for a, b in zip(values, values[1:])}
    if len(values) >= 3 and len(steps) == 1:
        return None  # evenly spaced: axis ticks, not data
    pick = (max if question.extreme == "max" else min)(series, key=lambda c: (c.span.value, -c.span.line))
    # its label: in a table, on the other axis (the row label of a cell picked down a column); in a
    # bar chart, on the same axis (the category under a bar whose value was picked across the panel)
    other = "column" if axis.how == "row" else "row"
    labels = []  # (prefer, strength, line, phrase span, how): text that does not repeat the question
    for i, b in enumerate(boxes):
        if i == pick.span.line or i == axis.line:
            continue
        s, how = relation(pick.span.box, b.box, size)
        phrases = [sp for sp in spans_of([b]) if sp.kind == "text"]
        if how in ("row", "column") and s > 0.2 and phrases and not matched_terms(terms_of(phrases[0].text), question):
            labels.append((how == other, s, i, phrases[0], how))
    if not labels:
        return None
    _, s, i, phrase, how = min(labels, key=lambda t: (not t[0], -t[1], t[2]))
    word = "highest" if question.extreme == "max" else "lowest"
    note = f'the {word} of {len(series)} values along "{_short(axis.text)}" is {pick.span.text}'
    span = Span(phrase.text, "text", phrase.box, i)
    support = (Support("extreme", pick.span.line, pick.span.text, pick.span.box, s, how),) + tuple(pick.support)
    return Candidate(span, pick.score, support, note)


@dataclass(frozen=True)
class Choice:
    """The answer the rules pick from one image, and the region worth zooming into."""

    candidate: Candidate
    region: Box  # in the pixels of the OCR'd image

    @property
    def answer(self) -> str:
        return self.candidate.span.text


def _chart_candidate(boxes: list[TextBox], question: Question, size: tuple[int, int], pixels: np.ndarray) -> Candidate | None:
    """For "which X has the most Y" over a horizontal bar chart without printed values: the label
    whose bar is longest (shortest for "min"), measured in pixels (agent/policies/offline_charts.py)."""
    anchors: dict[str, list[int]] = {}
    for i, b in enumerate(boxes):
        for term in matched_terms(terms_of(b.text), question):
            anchors.setdefault(term, []).append(i)
    weights = image_weights(question, anchors)
    matched_weight: dict[int, float] = {}
    for term, lines in anchors.items():
        for i in lines:
            matched_weight[i] = matched_weight.get(i, 0.0) + weights[term]
    if not matched_weight:
        return None
    # the chart title: the line holding most of the question that has a column of labels under it
    for title in sorted(matched_weight, key=lambda i: (-matched_weight[i], boxes[i].box[1]))[:4]:
        labels = label_column(boxes, title, size)
        if labels:
            break
    else:
        return None
    tb = boxes[title].box
    right = min(float(size[0]), tb[2] + 0.05 * size[0])  # a chart is about as wide as its title
    # a legend entry named by the question ("leisure") picks the series by its swatch colour
    color, legend_text, legend_box = None, "", None
    labels_box = (min(boxes[i].box[0] for i in labels), tb[1], right, max(boxes[i].box[3] for i in labels))
    legends = [i for i in matched_weight if i != title and i not in labels and len(boxes[i].text.split()) <= 2
               and labels_box[0] <= (boxes[i].box[0] + boxes[i].box[2]) / 2 <= labels_box[2]]
    for i in sorted(legends, key=lambda i: _distance(boxes[i].box, labels_box)):
        color = swatch_color(pixels, boxes[i].box)
        if color is not None:
            legend_text, legend_box = boxes[i].text, boxes[i].box
            break
    bars = bar_ends(pixels, boxes, labels, right, color)
    lengths = sorted((b.end - boxes[b.label].box[2] for b in bars), reverse=True)
    line_h = min(boxes[i].box[3] - boxes[i].box[1] for i in labels)
    if sum(1 for v in lengths if v > 2 * line_h) < 2 or lengths[0] - lengths[1] < 2:
        return None  # no measurable bars, or no clear winner
    pick = (max if question.extreme == "max" else min)(bars, key=lambda b: (b.end, -boxes[b.label].box[1]))
    label = boxes[pick.label]
    word = "longest" if question.extreme == "max" else "shortest"
    series = f' in the colour of the legend "{_short(legend_text)}"' if legend_text else ""
    note = f"its bar is the {word} of {len(bars)}{series}, measured in pixels"
    support = (Support("chart title", title, boxes[title].text, tb, 1.0, "column"),)
    extent = (labels_box[0], tb[1], max(b.end for b in bars), labels_box[3])
    if legend_box is not None:  # keep the legend in view, so a crop measures the same series
        extent = (min(extent[0], legend_box[0]), extent[1], max(extent[2], legend_box[2]), max(extent[3], legend_box[3]))
    return Candidate(Span(label.text.strip(), "text", label.box, pick.label), 1.0, support, note, extent)


def _distance(a: Box, b: Box) -> float:
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return math.hypot(dx, dy)


def best_answer(boxes: list[TextBox], question: Question, size: tuple[int, int],
                pixels: np.ndarray | None = None) -> Candidate | None:
    """The best answer on one image. `pixels` (the image as an RGB array) lets bar charts be measured."""
    if question.extreme and question.answer_kind == "text":
        found = _chart_candidate(boxes, question, size, pixels) if pixels is not None else None
        if found is None:
            found = _extreme_candidate(boxes, question, size)
        if found is not None:
            return found
    ranked = rank_candidates(boxes, question, size)
    return ranked[0] if ranked else None


def _same_reading(a: str, b: str) -> bool:
    """Two OCR readings of the same text (case, spaces and punctuation aside; one may be cut)."""
    na, nb = (re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", t).lower()) for t in (a, b))
    return bool(na and nb) and (na == nb or (min(len(na), len(nb)) >= 4 and (na in nb or nb in na)))


def answer_on_crop(boxes: list[TextBox], question: Question, size: tuple[int, int], expected: str | None,
                   pixels: np.ndarray | None = None, keep_ratio: float = 0.5) -> Candidate | None:
    """The answer read from a zoomed crop, given the candidate the crop was chosen for.

    A crop cuts away context (the title, far headers), so its own ranking is less sure than the
    page's. If the crop still reads the expected candidate with a score close to its best
    (`keep_ratio`), that sharper reading wins; otherwise the crop's best does.
    """
    best = best_answer(boxes, question, size, pixels)
    if best is None or expected is None:
        return best
    if _same_reading(best.span.text, expected):
        # the same text; a zoomed OCR sometimes drops the spaces between words ("SUSHANTSHARMA")
        if " " in expected.strip() and " " not in best.span.text.strip():
            return Candidate(replace(best.span, text=expected), best.score, best.support, best.note, best.extent)
        return best
    for cand in rank_candidates(boxes, question, size)[:10]:
        if _same_reading(cand.span.text, expected) and cand.score >= keep_ratio * best.score:
            return cand
    return best


def choose_region(boxes: list[TextBox], question: Question, size: tuple[int, int], pixels: np.ndarray | None = None,
                  min_fraction: tuple[float, float] = (0.3, 0.2), max_support: int = 3) -> Choice | None:
    """The best candidate and a region around it and its strongest supporting lines.

    The region keeps the lines that justify the answer (row label, column header), so that the
    same rules can run again on the crop; it is widened to at least `min_fraction` of the image so a
    crop keeps some context around a single cell.
    """
    cand = best_answer(boxes, question, size, pixels)
    if cand is None:
        return None
    x1, y1, x2, y2 = cand.extent or cand.span.box
    by_line: dict[int, Support] = {}
    for s in cand.support:
        if s.strength >= 0.2 and (s.line not in by_line or s.strength > by_line[s.line].strength):
            by_line[s.line] = s
    for s in sorted(by_line.values(), key=lambda s: -s.strength)[:max_support]:
        x1, y1, x2, y2 = min(x1, s.box[0]), min(y1, s.box[1]), max(x2, s.box[2]), max(y2, s.box[3])
    return Choice(cand, _widen((x1, y1, x2, y2), size, min_fraction))


def _widen(box: Box, size: tuple[int, int], min_fraction: tuple[float, float]) -> Box:
    w, h = size
    x1, y1, x2, y2 = box
    need_w, need_h = min_fraction[0] * w, min_fraction[1] * h
    if x2 - x1 < need_w:
        cx = (x1 + x2) / 2
        x1, x2 = cx - need_w / 2, cx + need_w / 2
    if y2 - y1 < need_h:
        cy = (y1 + y2) / 2
        y1, y2 = cy - need_h / 2, cy + need_h / 2
    # shift back inside the image rather than cut, so the region keeps its size
    if x1 < 0:
        x1, x2 = 0.0, min(w, x2 - x1)
    if x2 > w:
        x1, x2 = max(0.0, x1 - (x2 - w)), float(w)
    if y1 < 0:
        y1, y2 = 0.0, min(h, y2 - y1)
    if y2 > h:
        y1, y2 = max(0.0, y1 - (y2 - h)), float(h)
    return (float(int(x1)), float(int(y1)), float(math.ceil(x2)), float(math.ceil(y2)))
