"""Lexical tokens for English and Chinese, shared by the BM25 index and the relevance maps.

English: NFKC-normalised, lower-cased words ("q3", "covid19" stay whole) and numbers. Numbers keep their decimal point and lose
thousands separators ("1,234.5" -> "1234.5", "12.5%" -> "12.5"), so a question written "12.5 percent"
or "12.5%" matches a slide printing "12.5%". A short stop-word list drops words that carry no topic.
Chinese has no spaces: each run of CJK characters gives its overlapping character bigrams (a run of
one character gives that character), as Lucene's CJKAnalyzer does. On the 18 Chinese tuning questions
(bench/questions dev + bench/retrieval_own_questions.json) BM25 ranked the gold page first for 18 with
bigrams, 18 with jieba's word segmentation (an extra dependency and dictionary), and 17 with unigrams
plus bigrams: unigrams let a common multi-character name (阿里云: 5 terms) outweigh the rarer words.
"""
from __future__ import annotations

import re
import unicodedata

# Words, numbers (with inner . or , between digits), or runs of CJK ideographs.
_TOKEN = re.compile(
    r"[0-9]+(?:[.,][0-9]+)*"
    r"|[a-z][a-z0-9]*(?:'[a-z]+)?"
    r"|[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+"
)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

STOPWORDS = frozenset(
    """a an and are as at be by did do does for from has have how in is it its of on or that the their
    this to was were what when where which who whom why will with s""".split()
)
# Function characters that appear in almost every Chinese sentence (dropped when they stand alone).
CJK_STOPCHARS = frozenset("的了是在和与及或吗呢吧么哪些什这那个")


def _number(token: str) -> str:
    # "1,234" is a thousands separator; "3,5" (European decimal) is rare in our corpora.
    return token.replace(",", "")


def _cjk_tokens(run: str, stopwords: bool) -> list[str]:
    if len(run) == 1:
        return [] if stopwords and run in CJK_STOPCHARS else [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


def tokenize(text: str, stopwords: bool = True) -> list[str]:
    """Split text into lexical tokens. `stopwords=False` keeps every word (for highlighting)."""
    text = unicodedata.normalize("NFKC", text).lower()
    tokens: list[str] = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token[0].isdigit():
            tokens.append(_number(token))
        elif _CJK.match(token):
            tokens.extend(_cjk_tokens(token, stopwords))
        else:
            # A possessive is the word itself: "Japan's" must match a slide that prints "Japan"
            # (a curly "China’s" already splits into "china" + the stop word "s").
            token = token.removesuffix("'s")
            if not stopwords or token not in STOPWORDS:
                tokens.append(token)
    return tokens
