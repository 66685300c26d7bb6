"""Question analysis: what the offline policy reads from a question before it looks at any page.

`analyse_question` gives the weighted key terms (see terms.py) and the search query made of them,
the kind of answer the wording asks for, and the few things a question can say about its answer:
an extreme ("highest", "最低"), a place in a ranking ("ranks second"), a number of items ("which
three groups"), labels set aside ("apart from 'Other'"), a shape (a person's name, a website, the
document's own title...), and for Chinese the words just before the question word, which a page
often completes ("围绕" in "...围绕哪几个方面").
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from search_engine.tokenize import CJK_STOPCHARS

from .terms import CJK, NUMBER_WORDS, ZH_DIGITS, terms_of

MAX_QUERY = 300  # characters: a search query is keywords, not a pasted document
KINDS = ("percent", "date", "year", "number", "rank", "value", "text")  # value: a number or a percentage

# Words that shape the question but name nothing on the page.
QUESTION_WORDS = frozenset("""how many much what which who whom whose when where why according page slide chart
    table figure graph diagram shown show shows given listed mentioned value values number numbers percentage percent
    proportion year years rank ranked ranks ranking highest lowest largest smallest least most biggest greatest top
    bottom best worst there name named called respectively between among amount total do does did can could would
    should about approximately around roughly than more less fewer make made give given get has have had use used
    expected projected forecast""".split())
# Words that only say a question is about the document itself; its cover does not print them.
DOCUMENT_WORDS = frozenset("""author presenter speaker title topic theme subject name presentation talk deck slide
    slideshow document speech lecture keynote webinar present presented gave give deliver delivered wrote written
    prepared authored spoke made called about 演讲 讲者 讲人 主讲 标题 主题 题目 作者 报告 告人 分享 享人 享者 讲座 演示
    幻灯 灯片 文档 名称""".split())
_ZH_QUESTION = re.compile(r"是多少|有多少|多少|哪一年|哪年|哪一个|哪几个|哪个|哪些|哪家|哪项|哪种|什么时候|什么|几个|几家|几项|几种|几|"
                          r"是否|请问|分别|吗|呢|是谁|谁|？|\?")
_MEASURE = (r"score|scores|rate|penetration|share|number|value|income|size|growth|population|index|count|total|amount|"
            r"price|cost|revenue|ratio|age|figure|level|volume|spend|spending|trips|departures|visitors|forecast|cagr|"
            r"percentage|proportion|sales|users|households|cities|average|median|multiple|times|increase|decline|"
            r"tariffs?|fees?|fares?|budget|salary|wage|rent|profit|investment|expenditure|turnover|margin|capacity|"
            r"output|production|consumption|demand|supply|length|height|weight|distance|duration|speed")
# The kind of answer, by the first pattern that matches (so "which country has the highest CAGR" is text).
_KIND_PATTERNS = [
    ("date", r"\bwhen\b|\b(which|what) (day|date)\b|\bon what date\b|什么时候|何时|哪一?天|什么日期|日期"),
    ("year", r"\b(which|what) years?\b|\bin what year\b|哪一?年|年份"),
    ("rank", r"\brank\b(?! (\d|first|second|third|\w+th)\b)|排名第几|排第几"),
    ("text", r"\b(which|who|whom|whose|where)\b|^what ((is|was|are|were) )?(the )?([\w-]+ ){0,2}(name|reason|title|type|"
             r"kind|purpose|method|term|theme|topic|country|destination|city|company|market|product|region|app|segment|"
             r"tier|service|brand|channel|step|website)s?\b|哪个|哪几个|哪些|哪家|哪项|哪种|哪类|谁|什么"),
    ("percent", r"\b(percent|percentage|share|proportion|cagr|growth rate|rate)\b|%|百分比|占比|比例|比重|百分之|率|增速"),
    ("number", r"\bhow (many|much|large|big|high|low|long|old)\b|\bnumber of\b|多少|几"),
]
# What shape the answer has, when the wording says (the first that matches).
_WANTS = [
    ("phone", r"\b(phone|telephone|tel|mobile number|contact number)\b|电话|手机"),
    ("email", r"\be-?mail\b|邮箱|电子邮件"),
    ("website", r"\b(website|site|url|domain|web address)\b|网站|网址"),
    ("source", r"\b(what|which) (is|are|was|were) the sources?\b|\bsources? of (the )?(data|information|figures?|numbers?|"
               r"chart|table|statistics)\b|\b(data|figures?|numbers?|information|statistics)\b.*\bcomes? from\b|数据来源|来源是|出处"),
    ("stage", r"\b(which|what) (stage|step|phase|period|era|layer|level)s?\b|(哪个|哪一个|哪一|什么)(阶段|步|步骤|环节|时期|层|层级)"),
    ("name", r"^\s*(who|whom|whose)\b|谁"),
]
_DOC = r"(?:presentation|talk|deck|slides?|slideshow|document|speech|lecture|keynote|webinar)"
_DOC_ZH = r"(?:演讲|报告|分享|讲座|演示|幻灯片|PPT|ppt|文档)"
_MADE_EN = (r"\bwho\b.*\b(present(ed|s|ing)?|gave|gives|giving|deliver(ed|s)?|wrote|written|prepared|authored|spoke|"
            r"speaks)\b")
_PRESENTER_ZH = rf"演讲者|演讲人|主讲|讲者|作者|报告人|分享人|分享者|{_DOC_ZH}"
_TITLE_EN = (rf"\b(title|topic|theme|subject|name)\b.*\b{_DOC}\b|\bwhat is (this|the) {_DOC} (about|called)\b"
             rf"|\b{_DOC}\b.*\b(titled|called|title|topic|theme)\b")
_TITLE_ZH = rf"{_DOC_ZH}.{{0,6}}(标题|主题|题目|名称)|(标题|主题|题目).{{0,6}}{_DOC_ZH}"
_PART = r"\b(section|chapter|part|chart|table|figure|slide \d+|title (slide|page))\b|章|部分|节|图|表"
_EXTREME = {"min": r"\b(lowest|smallest|least|fewest|minimum|worst)\b|最低|最小|最少",
            "max": r"\b(highest|largest|biggest|greatest|most|maximum|best)\b|最高|最大|最多"}
_PLACE = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4, "5th": 5}
_RANK_ASKED = re.compile(r"\branks? (?:as )?(?:the )?(first|second|third|fourth|fifth|1st|2nd|3rd|4th|5th)\b"
                         r"|\b(second|third|fourth|fifth|2nd|3rd|4th|5th)[- ](?:most|largest|highest|biggest|greatest)\b")
_COUNT = re.compile(r"\b(two|three|four|five|six)\s+(?!times\b|years?\b|percent\b)[a-z-]+s\b|([两二三四五六])[个项类种点大]", re.I)
_CATCH_ALL = re.compile(r"^\s*(?:others?|other \w+|misc\.?|miscellaneous|n/?a|其他|其它)\s*$")
_ALSO_VALUE = re.compile(r"\band (?:how (?:much|many)|what (?:is|was|were|are) (?:it|its|their|the (?:amount|value|figure)))\b"
                         r"|(?:以及|和|并且?).{0,4}(?:多少|几)")
_EXCLUDED = re.compile(r"(?:apart from|except(?: for)?|other than|excluding|besides|除了)\s*(['\"‘“][^'\"’”]+['\"’”]|[^,，?？]+?)(?=[,，?？]|$)")


@dataclass(frozen=True)
class Question:
    """What the rules read from a question."""

    text: str
    language: str  # "zh" if it has Chinese characters, else "en"
    terms: dict[str, float]  # key term -> weight (a number the question names weighs double)
    kind: str  # one of KINDS
    query: str  # what the policy types into the search engine
    extreme: str | None = None  # "max" / "min": "which country has the highest ..."
    place: int = 0  # "which app ranks second", "the third largest": the place asked for
    wants: str = ""  # the answer's shape: "name", "website", "email", "phone", "source", "stage", or the
    # document's own "title" / "presenter"
    count: int = 0  # "which three groups", "两个关键词": how many items to list
    excluded: tuple[str, ...] = ()  # "apart from 'Other'", "除了X": labels the answer must not be
    cloze: str = ""  # Chinese: the two characters before the question word ("发布" in "2020年发布了什么")
    cloze_last: bool = False  # ... and the question word ends the question
    also_value: bool = False  # "which project ..., and how much was it?": the label and its value, both

    @property
    def numbers(self) -> tuple[str, ...]:
        """Numbers the question names (a year, a rank): anchors on the page, never the answer."""
        return tuple(t for t in self.terms if t[0].isdigit())

    def excludes(self, label: str) -> bool:
        """A label an extreme question cannot mean: one it sets aside, or a catch-all ("Other", "其他")
        that lumps categories together, unless the question names it."""
        t = " ".join(label.lower().split())
        return any(x and x in t for x in self.excluded) or bool(_CATCH_ALL.match(t) and not re.search(
            r"\bothers?\b|其他|其它", self.text.lower()))


def _first(patterns: list[tuple[str, str]], text: str, default: str) -> str:
    return next((name for name, p in patterns if re.search(p, text)), default)


def answer_kind(question: str) -> str:
    """The kind of answer the wording asks for; for "what is the X of Y" the head noun X decides
    ("what is the penetration ..." asks for a figure, "what are the barriers ..." for words)."""
    q = unicodedata.normalize("NFKC", question).lower().strip()
    kind = _first(_KIND_PATTERNS, q, "")
    if kind:
        return kind
    m = re.search(r"\bwhat (is|are|was|were|will be)( the)? ([^?]*?)(\s(of|for|in|among|by|on|at|to|from|between|across|"
                  r"with|that|does|do|did)\b|\?|$)", q)
    words = m.group(3).split() if m else []
    if not words:  # "above what household income does ...": the words between "what" and the verb
        m = re.search(r"\bwhat ((?:[\w$'-]+ ){0,3}?)(does|do|did|is|are|was|were|will|would|can|could|should|has|have)\b", q)
        words = m.group(1).split() if m else []
    if m:
        return "value" if words and re.fullmatch(_MEASURE, words[-1]) else "text"
    return "value" if re.search(r"\bwhat\b", q) and re.search(rf"\b({_MEASURE})\b", q) else "text"


def document_part(question: str) -> str:
    """"title" or "presenter" when the question asks for that of the document itself, else ""
    (not "the presenter's email address", "第01章的标题", "the title of the chart")."""
    q = unicodedata.normalize("NFKC", question).lower()
    if CJK.search(q):
        person = re.search(r"谁|哪位|名字|叫什么", q) and re.search(_PRESENTER_ZH, q)
    else:
        person = re.search(r"\bwho\b|\bname of the (author|presenter|speaker)", q) and (
            re.search(r"\b(author|presenter|speaker)s?\b", q) or re.search(_MADE_EN, q) and re.search(rf"\b{_DOC}\b", q))
    if person:
        return "presenter"
    return "title" if re.search(_TITLE_ZH if CJK.search(q) else _TITLE_EN, q) and not re.search(_PART, q) else ""


def _cloze(text: str) -> tuple[str, bool]:
    """The two characters before a Chinese question word ("发布" in "发布了什么"), and whether the
    question ends with that question word."""
    wh = re.search(r"多少|哪|什么|几|谁", text)
    if not wh:
        return "", False
    before = re.findall(r"[\u4e00-\u9fff]+", text[: wh.start()])
    run = before[-1].rstrip("了的是") if before else ""  # "面临的是什么" -> "面临"
    if len(run) < 2 or set(run[-2:]) & set("是有的了在为对"):
        return "", False
    rest = re.sub(r"^(多少|哪[一个些几家项种类]*|什么|几[个家项种]?|谁)", "", text[wh.start():])
    return run[-2:], not re.search(r"[\u4e00-\u9fffA-Za-z0-9]", rest)


def analyse_question(question: str) -> Question:
    text = " ".join(question.split())
    lowered = unicodedata.normalize("NFKC", text).lower()
    language = "zh" if CJK.search(text) else "en"
    part = document_part(text)
    stripped = _ZH_QUESTION.sub(" ", text) if language == "zh" else text
    if language == "zh":  # a unit ends its number: "2009年阿里云" holds no word "年阿"
        stripped = re.sub(r"(\d\s?[年月日号个次项家])", r"\1 ", stripped)
    count = 0
    m = _COUNT.search(text)
    if m:  # "which three groups": a number of items, not a number to find on the page
        word = m.group(1) or m.group(2)
        count = int(NUMBER_WORDS.get(word.lower()) or ZH_DIGITS.get(word, "0"))
        stripped = stripped.replace(m.group(0), m.group(0)[len(word):], 1)
    ranked = stripped  # ranks as numbers: "the top destination" is rank 1, "第三部分" is "3 部分"
    if not re.search(r"\b(are|were) the top\b|\b(two|three|four|five|six|seven|eight|nine|ten|\d+)\b", ranked, re.I):
        ranked = re.sub(r"\bthe top\b", " the 1 ", ranked, flags=re.I)
    ranked = re.sub(r"第([一二三四五六七八九十])", lambda m: f" {ZH_DIGITS[m.group(1)]} ", ranked)
    terms: dict[str, float] = {}
    for term in terms_of(ranked):
        if term in QUESTION_WORDS or (part and term in DOCUMENT_WORDS):
            continue
        if CJK.match(term) and (len(term) == 1 or set(term) & CJK_STOPCHARS):
            continue  # Chinese: single characters and pairs such as "的作" are noise
        terms[term] = 2.0 if term[0].isdigit() else 1.0
    if language == "zh":
        query = " ".join(stripped.split()) or text
    else:
        words = re.findall(r"[A-Za-z0-9][A-Za-z0-9.%$'&/-]*", text)
        query = " ".join(w for w in words if set(terms_of(w)) & set(terms)) or text
    place = _RANK_ASKED.search(lowered)
    extreme = next((k for k, p in _EXTREME.items() if re.search(p, lowered)), None)
    cloze, cloze_last = _cloze(text) if language == "zh" else ("", False)
    return Question(
        text, language, terms, answer_kind(text), query[:MAX_QUERY], extreme,
        place=_PLACE[place.group(1) or place.group(2)] if place else 0,
        wants=part or _first(_WANTS, lowered, ""), count=count,
        excluded=tuple(x.strip(" '\"‘’“”") for x in _EXCLUDED.findall(lowered)), cloze=cloze, cloze_last=cloze_last,
        also_value=bool(_ALSO_VALUE.search(lowered)))
