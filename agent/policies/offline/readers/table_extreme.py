"""Reads "which X has the highest Y" from a table or a chart's series of printed numbers.

The answer is a label, but what decides it is a comparison of numbers no single line states: the
extreme of the numbers along the best-supported row or column (the series the question names),
then the text that labels that number: in a table the label on the other axis (the row label of a
cell picked down a column), in a bar chart the one on the same axis (the category beside its value).
"""
from __future__ import annotations

from ..layout import relation, short, word_count
from ..page import Page
from ..prose import superlative_statement
from ..scoring import Candidate, Support, rank_candidates
from ..spans import Span
from ..terms import matched_terms, terms_of
from ..weights import Weights


def read(page: Page, w: Weights) -> Candidate | None:
    q = page.question
    if superlative_statement(page.phrases, q) >= 0.6:
        return None  # a sentence states the answer
    numbers = [c for c in rank_candidates(page, w, kind="value") if c.span.value is not None and c.span.kind != "year"]
    axis = max(numbers[0].support, key=lambda s: s.strength, default=None) if numbers else None
    if axis is None or axis.how not in ("row", "column") or word_count(axis.text) > 6:
        return None  # no series to compare (a sentence is not an axis)
    series = [c for c in numbers if any(s.line == axis.line and s.how == axis.how for s in c.support)]
    values = sorted(c.span.value for c in series)
    if len(series) < 3 or len({round(b - a, 6) for a, b in zip(values, values[1:])}) == 1:
        return None  # too few, or evenly spaced: axis ticks, not data
    pick = (max if q.extreme == "max" else min)(series, key=lambda c: (c.span.value, -c.span.line))
    other = "column" if axis.how == "row" else "row"
    labels = []  # (not on the other axis, -strength, line, phrase, how): text that does not repeat the question
    for i, b in enumerate(page.boxes):
        s, how = relation(pick.span.box, b.box, page.size)
        phrase = next((sp for sp in page.spans if sp.line == i and sp.kind == "text"), None)
        if i not in (pick.span.line, axis.line) and how in ("row", "column") and s > 0.2 and phrase and not matched_terms(terms_of(phrase.text), q.terms):
            labels.append((how != other, -s, i, phrase, how))
    if not labels:
        return None
    _, s, i, phrase, how = min(labels, key=lambda t: t[:3])
    note = f'the {"highest" if q.extreme == "max" else "lowest"} of {len(series)} values along "{short(axis.text)}" is {pick.span.text}'
    support = (Support("extreme", pick.span.line, pick.span.text, pick.span.box, -s, how),) + pick.support
    return Candidate(Span(phrase.text, "text", phrase.box, i), pick.score, support, note=note)


def applies(question) -> bool:
    return question.kind == "text" and question.extreme is not None
