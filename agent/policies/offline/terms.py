"""Terms: the normalised words the offline policy matches between a question and a page's OCR lines.

English words are lightly stemmed ("travellers" -> "traveller"), numbers lose leading zeros ("03"
-> "3"), number words become digits ("second" -> "2"), Chinese runs become character bigrams
(search_engine.tokenize). `matched_terms` tolerates OCR slips and suffixes on longer English words
and the codes charts print for countries ("SG" for Singapore).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from search_engine.tokenize import tokenize

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
NUMBER_WORDS = {w: str(n) for n, ws in enumerate(
    [("one", "first"), ("two", "second"), ("three", "third"), ("four", "fourth"), ("five", "fifth"), ("six", "sixth"),
     ("seven", "seventh"), ("eight", "eighth"), ("nine", "ninth"), ("ten", "tenth")], start=1) for w in ws}
ZH_DIGITS = {c: str(n) for n, c in enumerate("一二三四五六七八九十", start=1)} | {"两": "2"}
# Other spellings of a term on the pages: ISO country codes on charts, and the country of an adjective.
ALIASES = {
    "singapore": ("sg",), "malaysia": ("my",), "indonesia": ("id",), "philippine": ("ph",), "thailand": ("th",),
    "vietnam": ("vn",), "china": ("cn",), "japan": ("jp",), "korea": ("kr",), "australia": ("au",),
    "india": ("ind",), "taiwan": ("tw",), "hong": ("hk",), "usa": ("us",), "us": ("usa",), "uk": ("britain",),
    "japanese": ("japan",), "chinese": ("china",), "indian": ("india",), "korean": ("korea",),
}
_SUFFIX = re.compile(r"(?:ing|ed|es|e|ion|ions)$")


def stem(word: str) -> str:
    """Plurals and possessives: "travellers" -> "traveller", "cities" -> "city"."""
    word = word.removesuffix("'s")
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def terms_of(text: str) -> list[str]:
    """The terms of any text, question or OCR line, in order."""
    out = []
    for token in tokenize(text):
        if token in ("st", "nd", "rd", "th"):  # the suffix of "3rd"
            continue
        if token.isdigit() and len(token) > 1:
            token = token.lstrip("0") or "0"  # "03", a numbered section, is 3
        elif token.isascii() and token[0].isalpha():
            token = stem(token)
        out.append(NUMBER_WORDS.get(token, token))
    return out


def content_terms(text: str) -> set[str]:
    """A line's terms without single Chinese characters (a question's Chinese terms are bigrams)."""
    return {t for t in terms_of(text) if not (CJK.match(t) and len(t) == 1)}


def fuzzy_equal(a: str, b: str) -> bool:
    """The same English word despite an OCR slip or another ending ("aspiration" ~ "aspirational",
    "capture" ~ "capturing"), but not a different word ("travel" / "traveller", "rate" / "rating")."""
    if a == b:
        return True
    if not (a.isascii() and b.isascii() and a.isalpha() and b.isalpha()):
        return False
    short, long_ = sorted((a, b), key=len)
    if len(short) >= 5 and long_.startswith(short) and len(long_) - len(short) <= 2:
        return True
    if len(short) >= 8 and len(os.path.commonprefix([a, b])) >= 0.8 * len(short):  # "individualism" ~ "individualistic"
        return True
    if len(short) >= 6 and len(long_) - len(short) <= 1 and _one_edit(short, long_):
        return True
    root = _SUFFIX.sub("", a)
    return len(root) >= 5 and root == _SUFFIX.sub("", b)


def _one_edit(a: str, b: str) -> bool:
    """b is a with one letter changed or inserted (len(b) is len(a) or len(a) + 1)."""
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) <= 1
    i = len(os.path.commonprefix([a, b]))
    return a[i:] == b[i + 1:]


def matched_terms(line_terms: Iterable[str], terms: Mapping[str, float]) -> set[str]:
    """The question terms among a line's terms: exactly, fuzzily, or by an alias ("SG")."""
    line = set(line_terms)
    return {t for t in terms if t in line or any(fuzzy_equal(t, x) for x in line)
            or any(a in line for a in ALIASES.get(t, ()))}
