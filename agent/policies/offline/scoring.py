"""Scoring candidate spans: support from the lines holding question terms, times named features.

A candidate is supported by the lines that hold question terms and read together with it: on the
same row (a table row label), in the same column (a header, a bar's category), close by, or on its
own line. `support_score` adds that up line by line, so the cell at the crossing of the row and
the column the question names wins. Features of the candidate itself (a slide title, a number a
change starts from, the shape the question asks for) then multiply the score by their weights
(weights.py), and the candidate keeps the list of what fired, to explain itself.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .layout import Box, SHAPES, adjacent, is_number, label_likeness, labels_a_row, number_between, relation, short
from .layout import similar_height, word_count
from .page import Page
from .prose import Phrase, phrase_box
from .spans import LEADING_MARK, Span, cloze_spans
from .terms import ALIASES, CJK, content_terms, fuzzy_equal, matched_terms, terms_of
from .weights import Weights

Factors = tuple[tuple[str, float], ...]  # (feature name, its factor), for the features that fired
_BULLET = re.compile(r"^\s*[•·●○■□◆▪‣∙*]")
_RANKED = re.compile(r"\s*[#]?(\d{1,2})[.)、]?\s*(?=[^\W\d_])")  # a ranked list's line: "4 Hawaii", "3London-UK"
_BASELINE = re.compile(r"(?:\b(?:up|down|rising|falling|rose|fell|increased|decreased)?\s*from|\bvs\.?|\bversus|\bcompared "
                       r"(?:with|to)|\bprevious(?:ly)?|从|比)\s*$", re.IGNORECASE)
_BASELINE_ASKED = re.compile(r"\bfrom\b|\bprevious|\bbefore\b|\boriginal|\bstart|从|之前|原来|此前")
KINDS_FOR = {  # which span kinds answer each kind of question, in order of preference
    "percent": [("percent",), ("number",)], "date": [("date", "year"), ("number",)], "year": [("year",), ("number",)],
    "number": [("number",), ("percent",), ("year",)], "rank": [("number",), ("percent",), ("year",)],
    "value": [("number", "percent"), ("year",)], "text": [("text",)],
}
_HOW = {"row": "same row as", "column": "same column as", "near": "near", "same line": "on the line", "same sentence": "in the sentence"}


@dataclass(frozen=True)
class Support:
    """One question term's best evidence for a candidate: the line holding it and how they relate."""

    term: str
    line: int
    text: str
    box: Box
    strength: float
    how: str  # "row", "column", "near", "same line" or "same sentence"
    factors: Factors = ()


@dataclass(frozen=True)
class Candidate:
    span: Span
    score: float
    support: tuple[Support, ...] = ()
    features: Factors = ()
    note: str = ""  # how a special reader found it (readers/)
    extent: Box | None = None  # the area its evidence covers, if wider than its supports
    reader: str = ""  # the special reader that found it (readers/), "" for support scoring

    def explain(self, limit: int = 3) -> str:
        """E.g. 'support 1.62: same row as "Japan" 0.90, same column as "2014" 0.72; x0.7 inside a label'."""
        parts, seen = [], set()
        for s in sorted(self.support, key=lambda s: -s.strength):
            if s.line not in seen and s.strength >= 0.15 and len(seen) < limit:
                seen.add(s.line)
                parts.append(f'{_HOW.get(s.how, s.how)} "{short(s.text)}" {s.strength:.2f}' + "".join(
                    f" (x{f:g} {n.replace('_', ' ')})" for n, f in s.factors))
        text = f"the {self.reader} reader: {self.note}" if self.reader else self.note or (f"support {self.score / _product(self.features):.2f}: " + (", ".join(parts) or "no question term near it"))
        if self.features:
            text += "; " + ", ".join(f"x{f:.2g} {n.replace('_', ' ')}" for n, f in self.features)
        return f"{text}; score {self.score:.2f}"


def _product(factors: Factors) -> float:
    return math.prod(f for _, f in factors) or 1.0


def fired(w: Weights, conditions: list[tuple[str, bool]]) -> Factors:
    return tuple((name, getattr(w, name)) for name, on in conditions if on)


def support_score(support: tuple[Support, ...], weights: dict[str, float]) -> float:
    """Sum over supporting lines of strength x sqrt(weight of the terms that line supplies): one line
    repeating many question words (a title) does not outvote the row label holding the one word that
    names the row."""
    by_line: dict[int, list[Support]] = {}
    for s in support:
        by_line.setdefault(s.line, []).append(s)
    return sum(max(s.strength for s in items) * math.sqrt(sum(weights[s.term] for s in items)) for items in by_line.values())


def _in_sentence(line: str, span: Span, term: str) -> tuple[float, bool]:
    """In a sentence: characters from the number to the nearest spelling of the term (a number before
    the term counts half as far again), and whether the number is a bracketed note of another word
    ("Okinawa (#7), Kyoto (#12)": a note belongs to the word before it)."""
    lowered, best = line.lower(), len(line) / 2.0
    for form in (term, *ALIASES.get(term, ())):
        for m in re.finditer(re.escape(form), lowered):
            best = min(best, float(max(0, span.start - m.end() if span.start >= m.end() else 1.5 * (m.start() - span.end))))
    m = re.search(r"([^\W\d_][\w'-]*)\s*[(（]\s*#?\s*$", line[: span.start])
    noted = m.group(1) if m and re.match(r"\s*[)）]", line[span.end:]) else None
    other = noted is not None and not any(fuzzy_equal(term, t) or t in ALIASES.get(term, ()) for t in terms_of(noted))
    return best, other


def _strength(page: Page, span: Span, i: int, term: str, quality: list[float], row_labels: list[bool], w: Weights) -> Support:
    """How line i, which holds `term`, supports `span`."""
    b, q = page.boxes[i], page.question
    if i == span.line:  # a sentence states its number ("21 are domestic"); a label's number is part of the name
        sentence = word_count(b.text) >= 5
        distance, other = _in_sentence(b.text, span, term) if span.kind != "text" and sentence else (0.0, False)
        ranked = _RANKED.match(b.text)
        at_rank = ranked is not None and ((span.kind != "text" and span.start == ranked.start(1) and q.kind == "rank")
                                          or (span.kind == "text" and term == ranked.group(1)))
        factors = () if at_rank else fired(w, [("label_on_same_line", span.kind != "text" and not sentence),
                                               ("note_of_another_word", other), ("mentioned_in_title", page.tall[i])])
        s = 1.0 if at_rank else 1.0 / (1.0 + distance / 30.0)
        return Support(term, i, b.text, b.box, s * _product(factors), "same line", factors)
    s, how = relation(span.box, b.box, page.size)
    text = span.kind == "text"
    factors = fired(w, [
        ("label_right_of_value", how == "row" and b.box[0] > span.box[2]),
        ("row_label_above_or_below", how == "column" and row_labels[i]),
        ("rank_in_between", how == "row" and text and is_number(b.text)
         and number_between(page.boxes, b.box, span.box, (i, span.line))),
        ("sibling_label", text and how != "near" and bool(content_terms(span.text) & content_terms(b.text))
         and similar_height(span.box, b.box)),
        ("sibling_bullet", text and bool(_BULLET.match(page.boxes[span.line].text)) and bool(_BULLET.match(b.text))),
        ("right_under_its_label", text and how != "near" and adjacent(span.box, b.box)),
    ])
    return Support(term, i, b.text, b.box, s * quality[i] * _product(factors), how, factors)


def _support(page: Page, span: Span, quality: list[float], row_labels: list[bool], paragraph: dict[int, int],
             w: Weights) -> tuple[Support, ...]:
    """For each question term on the page, the line holding it that reads best with `span`; for a
    piece of a paragraph, not the rest of that paragraph (prose.py reads it as a sentence)."""
    own = set(terms_of(span.text))
    out = []
    for term, lines in page.anchors.items():
        best = None
        for i in lines:
            if i == span.line and (term in own or any(fuzzy_equal(term, t) for t in own)):
                continue  # the candidate repeats the question: no support
            s = _strength(page, span, i, term, quality, row_labels, w)
            if best is None or s.strength > best.strength:
                best = s
        if best is not None and not (span.kind == "text" and best.line != span.line and span.line in paragraph
                                     and paragraph.get(best.line) == paragraph[span.line]):
            out.append(best)
    return tuple(out)


def _features(page: Page, span: Span, support: tuple[Support, ...], cloze: list[Span], w: Weights) -> Factors:
    q, line = page.question, page.boxes[span.line].text
    named = [s.strength for s in support if s.term in q.numbers]
    common = [("far_from_named_number", bool(named) and max(named) < 0.3)]
    if span.kind != "text":
        leads = q.cloze and re.sub(r"[\s了为]", "", line[: span.start]).replace("至", "到").endswith(q.cloze.replace("至", "到"))
        return fired(w, common + [
            ("full_date", span.kind == "date"), ("completes_question", bool(leads)),
            ("change_starts_from", bool(_BASELINE.search(line[max(0, span.start - 14): span.start])) and not _BASELINE_ASKED.search(q.text)),
            ("inside_a_label", word_count(line) - word_count(span.text) >= 2
             and not (word_count(line) >= 5 and any(s.how == "same line" for s in support)))])
    own = content_terms(span.text)
    echo = max(0.0, len(matched_terms(own, q.terms)) / max(1, len(own)) - 0.25) / 0.75
    columns = [s for s in support if s.how == "column" and s.strength >= 0.3]
    heads = all(span.box[3] <= s.box[1] for s in columns)
    factors = fired(w, common + [
        ("slide_title", page.titles[span.line]),
        ("has_asked_shape", q.wants in SHAPES and SHAPES[q.wants](span.text)),
        ("lacks_asked_shape", q.wants in SHAPES and not SHAPES[q.wants](span.text)),
        ("heads_its_column", q.wants == "stage" and bool(columns) and heads),
        ("not_a_heading", q.wants == "stage" and bool(columns) and not heads),
        ("at_named_rank", bool(set(terms_of(LEADING_MARK.match(line).group())) & set(q.numbers))),
        ("completes_question_text", span in cloze)])
    if echo > 0:
        factors += (("echoes_question", 1.0 - (1.0 - w.echoes_question) * echo),)
    if word_count(span.text) > 5:
        factors += (("long_phrase_per_word", 1.0 / (1.0 + w.long_phrase_per_word * (word_count(span.text) - 5))),)
    return factors


def phrase_candidate(page: Page, ph: Phrase, w: Weights) -> Candidate:
    """A phrase a sentence says where the question leaves a gap (prose.py)."""
    q = page.question
    factors = fired(w, [("from_a_sentence", True),
                        ("has_asked_shape", q.wants in SHAPES and SHAPES[q.wants](ph.text)),
                        ("lacks_asked_shape", q.wants in SHAPES and not SHAPES[q.wants](ph.text)),
                        ("restates_the_rest", ph.restates >= 0.75 and q.wants not in SHAPES),
                        ("claim_in_title", ph.block.heading and not (ph.restates >= 0.75 and q.wants not in SHAPES))])
    if word_count(ph.text) > 8:
        factors += (("long_sentence_phrase_per_word", 1.0 / (1.0 + w.long_sentence_phrase_per_word * (word_count(ph.text) - 8))),)
    line = ph.block.lines[0]
    support = (Support("sentence", line, ph.block.text, ph.block.box, min(1.0, ph.context), "same sentence"),)
    base = math.sqrt(ph.context) * (0.5 + ph.coverage)
    return Candidate(Span(ph.text, "text", phrase_box(ph, page.boxes), line), base * _product(factors), support, factors,
                     extent=ph.block.box)


def rank_candidates(page: Page, w: Weights, kind: str | None = None) -> list[Candidate]:
    """Candidates of the kind the question asks for (or `kind`), best first (ties in reading order)."""
    q, boxes = page.question, page.boxes
    quality = [label_likeness(b.text) * (0.5 + 0.5 * len(page.matched[i] & content_terms(b.text)) / max(1, len(content_terms(b.text))))
               * (w.big_type_label if page.tall[i] else 1.0) for i, b in enumerate(boxes)]
    row_labels = [bool(page.matched[i]) and labels_a_row(boxes, i) for i in range(len(boxes))]
    paragraph = {i: n for n, block in enumerate(page.blocks) for i in block.lines}
    cloze = cloze_spans(boxes, q.cloze, q.cloze_last) if (kind or q.kind) == "text" else []
    spans = [s for s in page.spans if s.kind == "text" or s.text.rstrip("%") not in q.numbers] + cloze
    pool = next(([s for s in spans if s.kind in kinds] for kinds in KINDS_FOR[kind or q.kind] if any(s.kind in kinds for s in spans)), [])
    ranked = []
    for span in pool:
        support = _support(page, span, quality, row_labels, paragraph, w)
        features = _features(page, span, support, cloze, w)
        ranked.append(Candidate(span, support_score(support, page.weights) * _product(features), support, features))
    if (kind or q.kind) == "text":
        ranked += [phrase_candidate(page, ph, w) for ph in page.phrases if ph.coverage >= 0.5]
    return sorted(ranked, key=lambda c: (-c.score, c.span.line, c.span.box[0]))
