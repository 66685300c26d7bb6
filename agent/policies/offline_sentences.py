"""Reading prose on a slide, for the offline policy's rules (no model): the answer inside a sentence.

Many slide questions restate a sentence of the slide and leave out the part they ask for:
"Which country is the largest source market for the Maldives?" against "China is the largest
source market for Maldives, ...". So: join OCR lines into paragraphs, mark the words that belong to
the question, and offer as candidates the runs of words the question does NOT contain, next to the
words it does ("China is the" -> "China"). The more question weight sits right beside a run, in the
same sentence, the better the candidate. Chinese has no spaces, so the unit there is the clause:
a clause with few question words beside one made of them ("随着IPv4地址耗尽，VPC开始支持IPv6地址"
for "VPC为什么开始支持IPv6地址").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from agent.policies.offline_layout import Box, in_capitals, title_lines
from agent.policies.offline_question import CJK, QUESTION_WORDS, Question, matched_terms, terms_of
from search_engine.tokenize import STOPWORDS
from search_engine.types import TextBox

# Words trimmed from the edges of an answer ("China is the largest" -> "China"); they never end a run.
_EDGE_WORDS = STOPWORDS | QUESTION_WORDS | {"such", "as", "be", "been", "being", "has", "have", "had", "on", "into", "onto", "than", "its",
                            "their", "these", "those", "there", "they", "also", "only", "both", "all", "very", "more",
                            "most", "about", "per", "while", "whereas", "but", "so", "including", "like", "e.g", "via", "however", "still"}
_SENTENCE_END = set(".!?。！？\n")  # "\n" marks where one paragraph's sentence ended at a line break
_TOKEN = re.compile(r"[A-Za-z0-9$%#@&+'’./-]*[A-Za-z0-9%$#]|[\u3400-\u9fff]|[,;:.!?，。；：、()（）\"“”\n]|(?<=\s)[-–—](?=\s)")
_COPULAS = {"is", "are", "was", "were", "will", "would", "should", "becomes", "become", "remains", "remain"}
# A sentence has a verb; a heading ("Proportion of travellers over 65 years of age") does not.
_VERBS = {"is", "are", "was", "were", "be", "been", "has", "have", "had", "will", "would", "can", "could", "may",
          "make", "makes", "made", "account", "accounts", "constitute", "constitutes", "grow", "grows", "grew",
          "grown", "rise", "rises", "rising", "include", "includes", "use", "uses", "become", "becomes", "remain",
          "remains", "reach", "reaches", "reached", "lead", "leads", "drive", "drives", "show", "shows", "need",
          "needs", "represent", "represents", "increase", "increases", "increasing", "decline", "declines"}
_CONNECTORS = {"and", "or", "of", "the", "a", "an", "to", "for", "in", "with", "by", "on", "at", "as", "from", "than"}


@dataclass(frozen=True)
class Block:
    """A paragraph: consecutive OCR lines of one text block, joined."""

    lines: tuple[int, ...]
    text: str
    box: Box
    starts: tuple[int, ...]  # where each line's text starts in `text`
    heading: bool = False  # a slide title: on these slides, often a whole claim ("X WILL BE THE KEY DIFFERENTIATOR")


def _joinable(upper: TextBox, lower: TextBox) -> bool:
    h1, h2 = upper.box[3] - upper.box[1], lower.box[3] - lower.box[1]
    if min(h1, h2) <= 0 or max(h1, h2) / min(h1, h2) > 1.2:
        return False
    gap = lower.box[1] - upper.box[3]
    if not -0.3 * h1 <= gap <= 0.8 * h1:
        return False
    w1, w2 = upper.box[2] - upper.box[0], lower.box[2] - lower.box[0]
    overlap = max(0.0, min(upper.box[2], lower.box[2]) - max(upper.box[0], lower.box[0]))
    centres = abs((upper.box[0] + upper.box[2]) - (lower.box[0] + lower.box[2])) / 2
    return overlap >= 0.5 * min(w1, w2) or centres <= 0.25 * max(w1, w2)


def _join(a: str, b: str) -> str:
    if a and b and CJK.match(a[-1]) and CJK.match(b[0]):
        return a + b
    last = a.split()[-1].lower() if a.split() else ""
    if b[:1].isupper() and a[-1:].isalnum() and last not in _CONNECTORS and not a.isupper():
        return a + "\n" + b  # a capital after a finished line: a new sentence without a full stop
    return a + " " + b


def blocks_of(boxes: list[TextBox], size: tuple[int, int] | None = None) -> list[Block]:
    """Paragraphs of prose: lines stacked closely at the same size, with some words per line.
    (A table's column of one-word cells also stacks, but is not prose and is left out.)
    Headings (slide titles, lines in capitals) form their own blocks, never mixed with body text."""
    titles = title_lines(boxes, size)
    heading = [titles[i] or in_capitals(b.text) for i, b in enumerate(boxes)]
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i].box[1], boxes[i].box[0]))
    groups: list[list[int]] = []
    for i in order:
        home = None
        for g in groups:
            if (heading[g[-1]] == heading[i] and _joinable(boxes[g[-1]], boxes[i])
                    and (home is None or boxes[g[-1]].box[3] > boxes[home[-1]].box[3])):
                home = g
        if home is None:
            groups.append([i])
        else:
            home.append(i)
    blocks = []
    for g in groups:
        text, starts = "", []
        for i in g:
            text = _join(text, boxes[i].text.strip()) if text else boxes[i].text.strip()
            starts.append(len(text) - len(boxes[i].text.strip()))
        words = len(re.findall(r"[A-Za-z0-9]+", text)) + len(CJK.findall(text)) / 2
        if words < 5 or words / len(g) < (2.5 if heading[g[0]] else 4):
            continue  # too few words per line: a table column or a list of labels, not prose
        xs = [boxes[i].box for i in g]
        box = (min(b[0] for b in xs), min(b[1] for b in xs), max(b[2] for b in xs), max(b[3] for b in xs))
        blocks.append(Block(tuple(g), text, box, tuple(starts), heading[g[0]]))
    return blocks


@dataclass(frozen=True)
class Phrase:
    """A candidate answer read from a paragraph."""

    text: str
    block: Block
    start: int  # character offsets in block.text
    end: int
    context: float  # question weight beside it, in its sentence (decayed with distance)
    coverage: float  # share of the question's weight found in its sentence
    restates: float = 0.0  # for "Y IS THE X": the share of question words in "THE X" (0 if not so found)


def _marks(block: Block, question: Question, tokens: list[re.Match]) -> list[str | None]:
    """For each token, the question term it belongs to (None if none)."""
    marks: list[str | None] = [None] * len(tokens)
    for k, t in enumerate(tokens):
        word = t.group()
        if not CJK.match(word) and any(c.isalnum() for c in word):
            found = matched_terms(terms_of(word), question)
            if found:
                marks[k] = max(found, key=lambda x: question.terms[x])
    # Chinese terms are bigrams: mark both characters of every occurrence
    starts = {t.start(): k for k, t in enumerate(tokens)}
    for term in question.terms:
        if CJK.match(term):
            for m in re.finditer(re.escape(term), block.text):
                for pos in (m.start(), m.start() + 1):
                    if pos in starts:
                        marks[starts[pos]] = term
    return marks


def _sentences(tokens: list[re.Match]) -> list[tuple[int, int]]:
    spans, start = [], 0
    for k, t in enumerate(tokens):
        if t.group() == "." and k > 0 and len(tokens[k - 1].group()) < 3:
            continue  # an abbreviation: "S. Korea", "Mn."
        if t.group() in _SENTENCE_END:
            spans.append((start, k))
            start = k + 1
    spans.append((start, len(tokens)))
    return [(a, b) for a, b in spans if b > a]


def _trim(tokens: list[re.Match], a: int, b: int, extra: frozenset = frozenset()) -> tuple[int, int]:
    """Drop edge words (and `extra` ones) and punctuation from tokens[a:b]."""
    def edge(k: int) -> bool:
        w = tokens[k].group().lower()
        if 0 < k < len(tokens) - 1 and tokens[k - 1].group() in "“\"'‘" and tokens[k + 1].group() in "”\"'’":
            return False  # a word in quotes is a name ('GENERATION "S"'), even a one-letter one
        return w in _EDGE_WORDS or w in extra or not any(c.isalnum() for c in w)
    while a < b and edge(a):
        a += 1
    while b > a and edge(b - 1):
        b -= 1
    if b < len(tokens) and tokens[b].group() in "”\"’" and any(t.group() in "“\"‘" for t in tokens[a:b]):
        b += 1  # keep the closing quote of a quote the phrase opens
    return a, b


def _clean(text: str) -> str:
    """Drop parenthesised notes ("Okinawa (#7), Kyoto (#12)" -> "Okinawa, Kyoto") and stray spaces."""
    cleaned = re.sub(r"\s*[(（][^()（）]{0,12}[)）]", "", text)
    cleaned = re.sub(r"\s*[(（][^()（）]{0,12}$", "", cleaned)  # a note cut open by the trim: "Hokkaido (#18"
    cleaned = re.sub(r"^[^()（）]{0,12}[)）]\s*", "", cleaned)
    cleaned = re.sub(r"\s+([,，])", r"\1", cleaned)
    return " ".join((cleaned if cleaned.strip() else text).split())


def sentence_phrases(boxes: list[TextBox], question: Question, size: tuple[int, int] | None = None,
                     decay: float = 0.75) -> list[Phrase]:
    """Runs of words the question does not contain, beside words it does, in every paragraph
    (Chinese: clauses beside clauses, see `_clauses`)."""
    total = sum(question.terms.values()) or 1.0
    phrases = []
    for block in blocks_of(boxes, size):
        tokens = list(_TOKEN.finditer(block.text))
        marks = _marks(block, question, tokens)
        for a, b in _sentences(tokens):
            present = {m for m in marks[a:b] if m}
            if not present:
                continue
            if question.language == "en" and not block.heading and not any(t.group().lower() in _VERBS for t in tokens[a:b]):
                continue  # a caption ("Proportion of travellers over 65"), not a sentence (titles state claims)
            coverage = sum(question.terms[m] for m in present) / total
            runs, k = [], a
            while k < b:  # maximal runs of unmarked tokens, within one clause
                if marks[k] is None:
                    j = k
                    while j < b and marks[j] is None and not (j > k and _clause_break(tokens, j - 1, b, "en")):
                        j += 1
                    runs.append((k, j))
                    k = j
                else:
                    k += 1
            for r0, r1 in runs if question.language == "en" else []:
                context: dict[str, float] = {}
                for k in range(a, b):
                    if marks[k]:
                        dist = (r0 - k) if k < r0 else (k - r1 + 1)
                        context[marks[k]] = max(context.get(marks[k], 0.0), decay ** (dist - 1))
                # "the 3 top" for "which three places": the count the question gives is not part of the answer
                s0, s1 = _trim(tokens, r0, r1, frozenset({str(question.count)}) if question.count else frozenset())
                if s1 <= s0:
                    continue
                start, end = tokens[s0].start(), tokens[s1 - 1].end()
                weight = sum(question.terms[t] * v for t, v in context.items())
                phrases.append(Phrase(_clean(block.text[start:end]), block, start, end, weight, coverage))
            phrases += _clauses(block, tokens, marks, a, b, question, coverage)
    return phrases


def _share(tokens: list[re.Match], marks: list[str | None], a: int, b: int) -> float:
    """Share of the content tokens in tokens[a:b] that belong to the question."""
    content = [k for k in range(a, b) if any(c.isalnum() for c in tokens[k].group())
               and tokens[k].group().lower() not in _EDGE_WORDS]
    return sum(1 for k in content if marks[k]) / len(content) if content else 0.0


def _clause_break(tokens: list[re.Match], k: int, end: int, language: str) -> bool:
    """tokens[k] ends a clause. English lists run across commas ("Hong Kong, Macau and Korea"): there,
    semicolons, dashes before a word ("JAPAN - SOLO ...", not "TIER - 2") and commas before
    "while/but/however" cut clauses; Chinese clauses end at any comma or colon."""
    w, nxt = tokens[k].group(), tokens[k + 1].group().lower() if k + 1 < end else ""
    if language == "zh":
        return w in "，,：:;；"
    return (w in ";；" or (w in "-–—" and nxt[:1].isalpha())
            or (w in ",，" and nxt in ("while", "whereas", "but", "however", "although", "though")))


def _clauses(block: Block, tokens: list[re.Match], marks: list[str | None], a: int, b: int,
             question: Question, coverage: float) -> list[Phrase]:
    """A clause with few question words beside a clause made mostly of them ("随着IPv4地址耗尽，VPC开始
    支持IPv6地址"; "FEMALE TRAVELLERS, WILL EMERGE AS A BIG SEGMENT"), and the two sides of a clause's
    "is/are/will be" ("DOMESTIC TRAVEL IS THE SHORT-TERM GROWTH ENGINE" for "what is the short-term
    growth engine")."""
    cuts = [a] + [k + 1 for k in range(a, b) if _clause_break(tokens, k, b, question.language)] + [b + 1]
    clauses = [(cuts[n], cuts[n + 1] - 1) for n in range(len(cuts) - 1) if cuts[n + 1] - 1 > cuts[n]]
    share = [_share(tokens, marks, c0, c1) for c0, c1 in clauses]
    weight = sum(question.terms[m] for m in {marks[k] for k in range(a, b) if marks[k]})
    pieces = []  # (token range, how much of the question sits beside it, and across a copula)
    # an English clause that holds its own gap ("... STILL RELY ON TRADITIONAL TRAVEL AGENTS") answers
    # within itself; only a clause made almost wholly of question words points to the next one
    neighbour_share = 0.5 if question.language == "zh" else 0.75
    for n, (c0, c1) in enumerate(clauses):
        neighbours = [share[m] for m in (n - 1, n + 1) if 0 <= m < len(clauses)]
        if share[n] < 0.6 and neighbours and max(neighbours) >= neighbour_share:
            pieces.append((c0, c1, max(neighbours), 0.0))
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
        while c0 < c1 and (marks[c0] or tokens[c0].group().lower() in _EDGE_WORDS
                           or not any(ch.isalnum() for ch in tokens[c0].group())):
            c0 += 1  # "Urban destinations, such as Hong Kong": what the question already says comes first
        s0, s1 = _trim(tokens, c0, c1, frozenset({str(question.count)}) if question.count else frozenset())
        if s1 > s0:
            start, end = tokens[s0].start(), tokens[s1 - 1].end()
            out.append(Phrase(_clean(block.text[start:end]), block, start, end, weight * beside, coverage, restates))
    return out


def phrase_box(phrase: Phrase, boxes: list[TextBox]) -> Box:
    """The union of the line boxes the phrase runs through."""
    lines = [i for i, s in zip(phrase.block.lines, phrase.block.starts)
             if s < phrase.end and s + len(boxes[i].text.strip()) > phrase.start]
    xs = [boxes[i].box for i in lines] or [phrase.block.box]
    return (min(b[0] for b in xs), min(b[1] for b in xs), max(b[2] for b in xs), max(b[3] for b in xs))
