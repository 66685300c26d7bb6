"""Reading the question, for the offline policy's rules (no model): key terms, answer kind, matching.

`analyse_question` turns a question into weighted key terms (English word stems, numbers, Chinese
character bigrams), the kind of answer it asks for (a percentage, a year, a number, a value or
text), whether it asks for an extreme ("highest", "最高") and a few flags (a name, a website, a
source). `matched_terms` finds those terms in an OCR line, tolerating OCR slips, suffixes and the
two-letter country codes charts print.
"""
from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass, field

from search_engine.tokenize import CJK_STOPCHARS, tokenize
from search_engine.types import TextBox

MAX_QUERY = 300  # characters: a search query is keywords, not a pasted document

ANSWER_KINDS = ("percent", "date", "year", "number", "value", "text")  # "value": a number or a percentage; "date": a
# calendar date, or a year if the page gives no more
NUMBER_KINDS = ("percent", "year", "number")

# --- question analysis -------------------------------------------------------------------------

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_NUMBER_WORDS = {
    "first": "1", "second": "2", "third": "3", "fourth": "4", "fifth": "5",
    "sixth": "6", "seventh": "7", "eighth": "8", "ninth": "9", "tenth": "10",
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ORDINAL_SUFFIXES = frozenset({"st", "nd", "rd", "th"})
# Words that shape the question but do not name anything on the page.
QUESTION_WORDS = frozenset(
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
    "uk": ("britain",), "japanese": ("japan",), "chinese": ("china",), "indian": ("india",),
    "korean": ("korea",),
}

# What kind of answer the wording asks for (checked in this order, see `answer_kind_of`).
_DATE_EN = re.compile(r"\bwhen\b|\b(which|what) (day|date)\b|\bon what date\b")
_YEAR_EN = re.compile(r"\b(which|what) years?\b|\bin what year\b")
_TEXT_EN = re.compile(
    r"\b(which|who|whom|whose|where)\b"
    r"|^what ((is|was|are|were) )?(the )?([\w-]+ ){0,2}(name|reason|title|type|kind|purpose|method|term|theme|topic|"
    r"country|destination|city|company|market|product|region|app|segment|tier|service|brand|channel|step|website)s?\b"
)
_PERCENT_EN = re.compile(r"\b(percent|percentage|share|proportion|cagr|growth rate|rate)\b|%")
_NUMBER_EN = re.compile(r"\bhow (many|much|large|big|high|low|long|old)\b|\bnumber of\b")
_MEASURE = re.compile(
    r"\b(score|scores|rate|penetration|share|number|value|income|size|growth|population|index|count|total|amount|"
    r"price|cost|revenue|ratio|age|figure|level|volume|spend|spending|trips|departures|visitors|forecast|"
    r"cagr|percentage|proportion|sales|users|households|cities|average|median|multiple|times|increase|decline|"
    r"tariff|tariffs|fee|fees|fare|fares|budget|salary|wage|rent|profit|investment|expenditure|turnover|margin|"
    r"capacity|output|production|consumption|demand|supply|length|height|weight|distance|duration|speed)\b"
)
_DATE_ZH = re.compile(r"什么时候|何时|哪一天|哪天|什么日期|日期")
_YEAR_ZH = re.compile(r"哪一年|哪年|年份")
_TEXT_ZH = re.compile(r"哪个|哪几个|哪些|哪家|哪项|哪种|哪类|谁|什么")
_PERCENT_ZH = re.compile(r"百分比|占比|比例|比重|百分之|率|增速|%")  # 率: a rate (漏损率, 渗透率, 增长率)
_NUMBER_ZH = re.compile(r"多少|几")
_MAX_EN = re.compile(r"\b(highest|largest|biggest|greatest|most|maximum|best)\b")
_MIN_EN = re.compile(r"\b(lowest|smallest|least|fewest|minimum|worst)\b")
_MAX_ZH = re.compile(r"最高|最大|最多")
SUPERLATIVE = re.compile(r"\b(highest|largest|biggest|greatest|most|maximum|best|lowest|smallest|least|fewest|minimum|"
                         r"worst|top)\b|最")
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
    wants_email: bool = False  # "what is the email address": an address with an @
    wants_phone: bool = False  # "what phone number": a telephone number as printed
    wants_stage: bool = False  # "in which stage / step / phase ...": the heading of the part that holds it
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)  # term -> other spellings on pages
    cloze: str = ""  # Chinese: the two characters just before the question word ("围绕" in "围绕哪几个方面",
    # "发布" in "发布了什么")
    count: int = 0  # how many items the question asks for ("which three groups", "两个关键词"), 0 if not said
    cloze_last: bool = False  # the question ends with its question word ("...发布了什么？"): the answer may precede
    document_part: str = ""  # "title" / "presenter": asks for the document's own title or presenter
    asks_rank: bool = False  # "where does Japan rank", "排名第几": the answer is a place in a ranking
    excluded: tuple[str, ...] = ()  # "apart from 'Other'", "除了X": labels the answer must not be
    rank: int = 0  # "which app ranks second" / "the third largest": the place asked for, 0 if none
    also_value: bool = False  # "which project ..., and how much was it?": the label and its value, both


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
        out.append(_NUMBER_WORDS.get(token, token))
    return out


_ZH_DIGITS = {c: str(i) for i, c in enumerate("一二三四五六七八九十", start=1)}
_COUNT_EN = re.compile(r"\b(two|three|four|five|six)\s+(?!times\b|years?\b|percent\b)[a-z-]+s\b", re.IGNORECASE)
_COUNT_ZH = re.compile(r"([两二三四五六])[个项类种点大]")


def _rank_words(question: str) -> str:
    """Write ranks as numbers: "the top destination" -> rank 1, "第三部分" -> "3 部分"."""
    if not re.search(r"\b(are|were) the top\b|\b(two|three|four|five|six|seven|eight|nine|ten|\d+)\b", question, re.IGNORECASE):
        question = re.sub(r"\bthe top\b", " the 1 ", question, flags=re.IGNORECASE)  # not "the top 20", "are the top"
    return re.sub(r"第([一二三四五六七八九十])", lambda m: f" {_ZH_DIGITS[m.group(1)]} ", question)


def _term_weight(term: str) -> float:
    if term[0].isdigit():
        return 2.0  # a number the question names (a year, a rank) is a sharp anchor
    return 1.0


def answer_kind_of(question: str) -> str:
    """"date", "year", "text", "percent", "number" or "value", from the wording, in that order of precedence
    ("which country has the highest CAGR" asks for a country, not a percentage)."""
    q = unicodedata.normalize("NFKC", question).lower().strip()
    if _DATE_EN.search(q) or _DATE_ZH.search(q):
        return "date"
    if _YEAR_EN.search(q) or _YEAR_ZH.search(q):
        return "year"
    if (re.search(r"\brank\b", q) and not re.search(r"\branks? (\d|first|second|third|\w+th)\b", q)) or re.search(r"排名第几|排第几", q):
        return "number"  # a rank
    if _TEXT_EN.search(q) or _TEXT_ZH.search(q):
        return "text"
    if _PERCENT_EN.search(q) or _PERCENT_ZH.search(q):
        return "percent"
    if _NUMBER_EN.search(q) or _NUMBER_ZH.search(q):
        return "number"
    # "what is the penetration / score of Y" asks for a figure; "what are the barriers", "what is the
    # growth engine" for words: the head noun decides (the last word before a preposition)
    m = re.search(r"\bwhat (is|are|was|were|will be)( the)? ([^?]*?)(\s(of|for|in|among|by|on|at|to|from|between|"
                  r"across|with|that|does|do|did)\b|\?|$)", q)
    if m and m.group(3).split():
        return "value" if _MEASURE.fullmatch(m.group(3).split()[-1]) else "text"
    # "above what household income does ...": the words between "what" and the verb name the thing
    m = re.search(r"\bwhat ((?:[\w$'-]+ ){0,3}?)(does|do|did|is|are|was|were|will|would|can|could|should|has|have)\b", q)
    if m:
        words = m.group(1).split()
        return "value" if words and _MEASURE.fullmatch(words[-1]) else "text"
    return "value" if re.search(r"\bwhat\b", q) and _MEASURE.search(q) else "text"


def extreme_of(question: str) -> str | None:
    q = unicodedata.normalize("NFKC", question).lower()
    if _MIN_EN.search(q) or _MIN_ZH.search(q):
        return "min"
    if _MAX_EN.search(q) or _MAX_ZH.search(q):
        return "max"
    return None


_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4, "5th": 5}
_RANK_ASKED = re.compile(r"\branks? (?:as )?(?:the )?(first|second|third|fourth|fifth|1st|2nd|3rd|4th|5th)\b"
                         r"|\b(second|third|fourth|fifth|2nd|3rd|4th|5th)[- ](?:most|largest|highest|biggest|greatest)\b")


def _rank_asked(question: str) -> int:
    """The place a question asks for ("ranks second", "the third largest"), 0 if none."""
    m = _RANK_ASKED.search(question)
    return _ORDINALS[m.group(1) or m.group(2)] if m else 0


def analyse_question(question: str) -> Question:
    # imported here: offline_document reads page layout through offline_layout, which imports this module
    from agent.policies.offline_document import META_TERMS, document_part

    text = " ".join(question.split())
    part = document_part(text)
    language = "zh" if CJK.search(text) else "en"
    stripped = _ZH_QUESTION.sub(" ", text) if language == "zh" else text
    if language == "zh":  # a unit ends its number: "2009年阿里云" holds no word "年阿"
        stripped = re.sub(r"(\d\s?[年月日号个次项家])", r"\1 ", stripped)
    count = 0
    m = _COUNT_EN.search(text) or _COUNT_ZH.search(text)
    if m:  # "which three groups": a number of items to list, not a number to find on the page
        count = int(_NUMBER_WORDS.get(m.group(1).lower(), _ZH_DIGITS.get(m.group(1), "2" if m.group(1) == "两" else "0")))
        stripped = stripped.replace(m.group(0), m.group(0)[len(m.group(1)):], 1)
    terms: dict[str, float] = {}
    for term in terms_of(_rank_words(stripped)):
        if term in QUESTION_WORDS or (part and term in META_TERMS):
            continue
        if CJK.match(term) and (len(term) == 1 or set(term) & CJK_STOPCHARS):
            continue  # Chinese: bigrams carry the meaning; single characters and "的作"-like pairs are noise
        terms[term] = max(terms.get(term, 0.0), _term_weight(term))
    numbers = tuple(t for t in terms if t[0].isdigit())
    if language == "zh":
        query = " ".join(stripped.split()) or text
    else:
        words = re.findall(r"[A-Za-z0-9][A-Za-z0-9.%$'&/-]*", text)
        kept = [w for w in words if any(t in terms for t in terms_of(w))]
        query = " ".join(kept) or text
    query = query[:MAX_QUERY]
    aliases = {t: ALIASES[t] for t in terms if t in ALIASES}
    cloze, cloze_last = "", False
    wh = re.search(r"多少|哪|什么|几|谁", text) if language == "zh" else None
    if wh:
        before = re.findall(r"[\u4e00-\u9fff]+", text[: wh.start()])
        run = before[-1].rstrip("了的是") if before else ""  # "发布了什么" -> "发布", "面临的是什么" -> "面临"
        if len(run) >= 2 and not set(run[-2:]) & set("是有的了在为对"):
            cloze = run[-2:]
            cloze_last = not re.search(r"[\u4e00-\u9fffA-Za-z0-9]", re.sub(r"^(多少|哪[一个些几家项种类]*|什么|几[个家项种]?|谁)", "", text[wh.start():]))
    lowered = text.lower()
    return Question(
        text, language, terms, answer_kind_of(text), extreme_of(text), query, numbers,
        wants_name=bool(re.match(r"\s*(who|whom|whose)\b", lowered) or "谁" in text),
        wants_website=bool(re.search(r"\b(website|site|url|domain|web address)\b|网站|网址", lowered)),
        wants_source=bool(re.search(r"\b(what|which) (is|are|was|were) the sources?\b|\bsources? of (the )?(data|information|"
                                    r"figures?|numbers?|chart|table|statistics)\b|\b(data|figures?|numbers?|information|"
                                    r"statistics)\b.*\bcomes? from\b|数据来源|来源是|出处", lowered)),
        wants_email=bool(re.search(r"\be-?mail\b|邮箱|电子邮件", lowered)),
        wants_phone=bool(re.search(r"\b(?:phone|telephone|tel|mobile number|contact number)\b|电话|手机", lowered)),
        wants_stage=bool(re.search(r"\b(?:which|what) (?:stage|step|phase|period|era|layer|level)s?\b"
                                   r"|(?:哪个|哪一个|哪一|什么)(?:阶段|步|步骤|环节|时期|层|层级)", lowered)),
        aliases=aliases, cloze=cloze, cloze_last=cloze_last, count=count, document_part=part,
        rank=_rank_asked(lowered),
        excluded=tuple(m.strip(" '\"‘’“”") for m in re.findall(
            r"(?:apart from|except(?: for)?|other than|excluding|besides|除了)\s*(['\"‘“][^'\"’”]+['\"’”]|[^,，?？]+?)(?=[,，?？]|$)",
            lowered)),
        asks_rank=bool(re.search(r"\brank(?:ed|s|ing)?\b|排名|排第", lowered)) and answer_kind_of(text) == "number",
        also_value=bool(re.search(r"\band (?:how (?:much|many)|what (?:is|was|were|are) (?:it|its|their|the (?:amount|value|figure)))\b"
                                  r"|(?:以及|和|并且?).{0,4}(?:多少|几)", lowered)),
    )


# --- matching OCR lines against the question -----------------------------------------------------


def fuzzy_equal(a: str, b: str) -> bool:
    """Tolerate OCR slips and suffixes on longer English words ("aspiration" ~ "aspirational")."""
    if a == b:
        return True
    if not (a.isascii() and b.isascii() and a.isalpha() and b.isalpha()):
        return False
    short, long_ = sorted((a, b), key=len)
    if len(short) >= 5 and long_.startswith(short) and len(long_) - len(short) <= 2:
        return True  # "aspiration" ~ "aspirational" (not "travel" ~ "traveller")
    common = len(os.path.commonprefix([a, b]))
    if len(short) >= 8 and common >= 0.8 * len(short):  # "individualism" ~ "individualistic"
        return True
    if len(short) >= 6 and len(long_) - len(short) <= 1 and _edit_distance_at_most_one(short, long_):
        return True
    # one word with two endings: "capture" ~ "capturing", "inflect" ~ "inflection" (not "travel" ~ "traveller")
    ra, rb = _SUFFIX.sub("", a), _SUFFIX.sub("", b)
    return len(ra) >= 5 and ra == rb


_SUFFIX = re.compile(r"(?:ing|ed|es|e|ion|ions)$")


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
        if term in line_terms or any(fuzzy_equal(term, t) for t in line_terms):
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
