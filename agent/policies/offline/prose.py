"""Reading prose: the answer inside a sentence that restates the question.

Many questions restate a sentence of the page and leave out what they ask for: "Which country is
the largest source market for the Maldives?" against "China is the largest source market for
Maldives, ...". So OCR lines are joined into paragraphs, the words that belong to the question are
marked, and the runs of unmarked words beside marked ones are the candidates ("China"), weighed by
how much of the question sits right beside them. Slide titles on these decks are claims ("DOMESTIC
TRAVEL IS THE SHORT-TERM GROWTH ENGINE"), so a copula splits a clause into what the question
restates and what it asks for. Chinese has no spaces: the unit is the clause, one with few question
words beside one made of them ("随着IPv4地址耗尽，VPC开始支持IPv6地址" for "VPC为什么开始支持IPv6地址").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from search_engine.tokenize import STOPWORDS
from search_engine.types import TextBox

from .layout import Box, in_capitals, similar_height, title_lines, union
from .question import QUESTION_WORDS, Question
from .terms import CJK, matched_terms, terms_of

# words trimmed from the edges of an answer ("China is the largest" -> "China")
EDGE_WORDS = STOPWORDS | QUESTION_WORDS | set("""such as be been being has have had on into onto than its their these
    those there they also only both all very more most about per while whereas but so including like e.g via however
    still""".split())
_TOKEN = re.compile(r"[A-Za-z0-9$%#@&+'’./-]*[A-Za-z0-9%$#]|[\u3400-\u9fff]|[,;:.!?，。；：、()（）\"“”\n]|(?<=\s)[-–—](?=\s)")
_COPULAS = {"is", "are", "was", "were", "will", "would", "should", "becomes", "become", "remains", "remain"}
_VERBS = _COPULAS | set("""be been has have had can could may make makes made account accounts constitute constitutes grow
    grows grew grown rise rises rising include includes use uses reach reaches reached lead leads drive drives show shows
    need needs represent represents increase increases increasing decline declines""".split())  # a heading has none
SUPERLATIVE = re.compile(r"\b(highest|largest|biggest|greatest|most|maximum|best|lowest|smallest|least|fewest|minimum|worst|"
                         r"top)\b|最")
_CONNECTORS = {"and", "or", "of", "the", "a", "an", "to", "for", "in", "with", "by", "on", "at", "as", "from", "than"}


@dataclass(frozen=True)
class Block:
    """A paragraph: OCR lines of one text block joined; a heading block holds only title lines."""

    lines: tuple[int, ...]
    text: str
    box: Box
    starts: tuple[int, ...]  # where each line's text starts in `text`
    heading: bool


@dataclass(frozen=True)
class Phrase:
    """A candidate answer read from a paragraph."""

    text: str
    block: Block
    start: int  # character offsets in block.text
    end: int
    context: float  # question weight beside it in its sentence, decayed with distance
    coverage: float  # share of the question's weight in its sentence
    restates: float = 0.0  # for "Y IS THE X": the share of question words in "THE X"


def _joinable(upper: TextBox, lower: TextBox) -> bool:
    """The next line of the same paragraph: same type size, just below, sharing its extent or centre."""
    a, b = upper.box, lower.box
    if not similar_height(a, b, 1.2 + 1e-9) or not -0.3 * (a[3] - a[1]) <= b[1] - a[3] <= 0.8 * (a[3] - a[1]):
        return False
    shared = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    return shared >= 0.5 * min(a[2] - a[0], b[2] - b[0]) or abs(a[0] + a[2] - b[0] - b[2]) / 2 <= 0.25 * max(a[2] - a[0], b[2] - b[0])


def _join(a: str, b: str) -> str:
    if CJK.match(a[-1:]) and CJK.match(b[:1]):
        return a + b
    last = a.split()[-1].lower() if a.split() else ""
    if b[:1].isupper() and a[-1:].isalnum() and last not in _CONNECTORS and not a.isupper():
        return a + "\n" + b  # a capital after a finished line: a new sentence without a full stop
    return a + " " + b


def blocks_of(boxes: list[TextBox], size: tuple[int, int]) -> list[Block]:
    """Paragraphs: lines stacked closely at one type size with some words per line (a table's column
    of one-word cells stacks too, but is not prose). Headings never mix with body text."""
    heading = [t or in_capitals(b.text) for t, b in zip(title_lines(boxes, size), boxes)]
    groups: list[list[int]] = []
    for i in sorted(range(len(boxes)), key=lambda i: (boxes[i].box[1], boxes[i].box[0])):
        homes = [g for g in groups if heading[g[-1]] == heading[i] and _joinable(boxes[g[-1]], boxes[i])]
        home = max(homes, key=lambda g: boxes[g[-1]].box[3], default=None)
        groups.append([i]) if home is None else home.append(i)
    blocks = []
    for g in groups:
        text, starts = "", []
        for i in g:
            text = _join(text, boxes[i].text.strip()) if text else boxes[i].text.strip()
            starts.append(len(text) - len(boxes[i].text.strip()))
        words = len(re.findall(r"[A-Za-z0-9]+", text)) + len(CJK.findall(text)) / 2
        if words >= 5 and words / len(g) >= (2.5 if heading[g[0]] else 4):
            blocks.append(Block(tuple(g), text, union([boxes[i].box for i in g]), tuple(starts), heading[g[0]]))
    return blocks


def _marks(block: Block, tokens: list[re.Match], question: Question) -> list[str | None]:
    """For each token, the question term it belongs to (Chinese terms are bigrams: both characters)."""
    marks: list[str | None] = [None] * len(tokens)
    for k, t in enumerate(tokens):
        found = matched_terms(terms_of(t.group()), question.terms) if not CJK.match(t.group()) else set()
        if found:
            marks[k] = max(sorted(found), key=lambda x: question.terms[x])
    starts = {t.start(): k for k, t in enumerate(tokens)}
    for term in (t for t in question.terms if CJK.match(t)):
        for m in re.finditer(re.escape(term), block.text):
            for pos in (m.start(), m.start() + 1):
                if pos in starts:
                    marks[starts[pos]] = term
    return marks


def _sentences(tokens: list[re.Match]) -> list[tuple[int, int]]:
    spans, start = [], 0
    for k, t in enumerate(tokens):
        if t.group() in ".!?。！？\n" and not (t.group() == "." and k > 0 and len(tokens[k - 1].group()) < 3):
            spans.append((start, k))  # (not after an abbreviation: "S. Korea", "Mn.")
            start = k + 1
    return [(a, b) for a, b in spans + [(start, len(tokens))] if b > a]


def _clause_break(tokens: list[re.Match], k: int, end: int, language: str) -> bool:
    """tokens[k] ends a clause: in Chinese any comma or colon; English lists run across commas, so
    there only semicolons, dashes before a word ("JAPAN - SOLO ...") and commas before "while", "but"."""
    w, nxt = tokens[k].group(), tokens[k + 1].group().lower() if k + 1 < end else ""
    if language == "zh":
        return w in "，,：:;；"
    return w in ";；" or (w in "-–—" and nxt[:1].isalpha()) or (w in ",，" and nxt in ("while", "whereas", "but", "however", "although", "though"))


def _edge(tokens: list[re.Match], k: int, extra: frozenset) -> bool:
    w = tokens[k].group().lower()
    if 0 < k < len(tokens) - 1 and tokens[k - 1].group() in "“\"'‘" and tokens[k + 1].group() in "”\"'’":
        return False  # a word in quotes is a name ('GENERATION "S"')
    return w in EDGE_WORDS or w in extra or not any(c.isalnum() for c in w)


def _phrase(block: Block, tokens: list[re.Match], a: int, b: int, question: Question, context: float, coverage: float,
            restates: float = 0.0) -> Phrase | None:
    """tokens[a:b] without edge words and brackets ("Okinawa (#7), Kyoto (#12)" -> "Okinawa, Kyoto")."""
    extra = frozenset({str(question.count)} if question.count else ())  # "the 3 top" for "which three places"
    while a < b and _edge(tokens, a, extra):
        a += 1
    while b > a and _edge(tokens, b - 1, extra):
        b -= 1
    if b <= a:
        return None
    if b < len(tokens) and tokens[b].group() in "”\"’" and any(t.group() in "“\"‘" for t in tokens[a:b]):
        b += 1  # keep the closing quote of a quote the phrase opens
    start, end = tokens[a].start(), tokens[b - 1].end()
    text = re.sub(r"\s*[(（][^()（）]{0,12}([)）]|$)", "", block.text[start:end])
    text = re.sub(r"\s+([,，])", r"\1", re.sub(r"^[^()（）]{0,12}[)）]\s*", "", text))
    return Phrase(" ".join((text if text.strip() else block.text[start:end]).split()), block, start, end, context, coverage, restates)


def _share(tokens: list[re.Match], marks: list[str | None], a: int, b: int) -> float:
    """Share of the content tokens in tokens[a:b] that belong to the question."""
    content = [k for k in range(a, b) if any(c.isalnum() for c in tokens[k].group()) and tokens[k].group().lower() not in EDGE_WORDS]
    return sum(1 for k in content if marks[k]) / len(content) if content else 0.0


def phrases_of(blocks: list[Block], question: Question, decay: float = 0.75) -> list[Phrase]:
    """Runs of words the question does not contain beside words it does, in every paragraph, and the
    clauses beside clauses made of the question's words."""
    total = sum(question.terms.values()) or 1.0
    found = []
    for block in blocks:
        tokens = list(_TOKEN.finditer(block.text))
        marks = _marks(block, tokens, question)
        for a, b in _sentences(tokens):
            present = {m for m in marks[a:b] if m}
            if not present or (question.language == "en" and not block.heading
                               and not any(t.group().lower() in _VERBS for t in tokens[a:b])):
                continue  # no question word, or a caption ("Proportion of travellers over 65"), not a sentence
            coverage = sum(question.terms[m] for m in present) / total
            k = a
            while k < b and question.language == "en":  # maximal runs of unmarked tokens within one clause
                if marks[k]:
                    k += 1
                    continue
                j = k + 1
                while j < b and marks[j] is None and not _clause_break(tokens, j - 1, b, "en"):
                    j += 1
                context: dict[str, float] = {}
                for n in range(a, b):
                    if marks[n]:
                        context[marks[n]] = max(context.get(marks[n], 0.0), decay ** ((k - n - 1) if n < k else (n - j)))
                found.append(_phrase(block, tokens, k, j, question, sum(question.terms[t] * v for t, v in context.items()), coverage))
                k = j
            found += _clauses(block, tokens, marks, a, b, question, coverage)
    return [p for p in found if p is not None]


def _clauses(block: Block, tokens: list[re.Match], marks: list[str | None], a: int, b: int, question: Question,
             coverage: float) -> list[Phrase | None]:
    """A clause with few question words beside a clause made mostly of them, and the two sides of a
    clause's copula ("DOMESTIC TRAVEL IS THE SHORT-TERM GROWTH ENGINE" for "what is the short-term
    growth engine")."""
    cuts = [a] + [k + 1 for k in range(a, b) if _clause_break(tokens, k, b, question.language)] + [b + 1]
    clauses = [(cuts[n], cuts[n + 1] - 1) for n in range(len(cuts) - 1) if cuts[n + 1] - 1 > cuts[n]]
    share = [_share(tokens, marks, c0, c1) for c0, c1 in clauses]
    weight = sum(question.terms[m] for m in {marks[k] for k in range(a, b) if marks[k]})
    # an English clause holding its own gap answers within itself; only one made almost wholly of
    # question words points to the next
    needed = 0.5 if question.language == "zh" else 0.75
    pieces = []  # (token range, share of question beside it, and across a copula)
    for n, (c0, c1) in enumerate(clauses):
        beside = [share[m] for m in (n - 1, n + 1) if 0 <= m < len(clauses)]
        if share[n] < 0.6 and beside and max(beside) >= needed:
            pieces.append((c0, c1, max(beside), 0.0))
        copula = next((k for k in range(c0, c1) if tokens[k].group().lower() in _COPULAS), None)
        if copula is not None and question.language == "en":
            rest = copula + 1 + (copula + 1 < c1 and tokens[copula + 1].group().lower() == "be")
            left, right = _share(tokens, marks, c0, copula), _share(tokens, marks, rest, c1)
            if right >= 0.5 and left < 0.6:
                pieces.append((c0, copula, right, right))
            if left >= 0.5 and right < 0.6:
                pieces.append((rest, c1, left, left))
    out = []
    for c0, c1, beside, restates in pieces:
        while c0 < c1 and (marks[c0] or tokens[c0].group().lower() in EDGE_WORDS or not any(ch.isalnum() for ch in tokens[c0].group())):
            c0 += 1  # "Urban destinations, such as Hong Kong": what the question already says comes first
        out.append(_phrase(block, tokens, c0, c1, question, weight * beside, coverage, restates))
    return out


def phrase_box(phrase: Phrase, boxes: list[TextBox]) -> Box:
    """The union of the line boxes the phrase runs through."""
    lines = [i for i, s in zip(phrase.block.lines, phrase.block.starts) if s < phrase.end and s + len(boxes[i].text.strip()) > phrase.start]
    return union([boxes[i].box for i in lines]) if lines else phrase.block.box


def superlative_statement(phrases: list[Phrase], question: Question) -> float:
    """The largest share of the question restated by a sentence that uses the question's own
    superlative ("India has the lowest ratio of ..."): such a sentence states the answer."""
    def used(text: str) -> set[str]:
        return {m.group() for m in SUPERLATIVE.finditer(text.lower())}
    return max((p.coverage for p in phrases if used(question.text) & used(p.block.text)), default=0.0)
