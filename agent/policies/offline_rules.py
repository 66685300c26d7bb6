"""The rules behind the offline policy: which span answers, and which region to zoom into.

No model is involved anywhere in this file. Everything is plain functions over OCR text boxes
(`search_engine.types.TextBox`, pixel coordinates of the image that was OCR'd), so each rule can be
checked on a hand-made list of boxes (tests/test_offline_policy.py).

The idea, in three steps:
1. `analyse_question` (offline_question.py) turns the question into weighted key terms and the
   kind of answer it asks for.
2. Every OCR line is cut into candidate spans (offline_layout.py). A candidate is supported by the
   lines that contain question terms and read together with it: on the same row (a table row
   label), in the same column (a table header, a bar's category label), or simply close by.
   `rank_candidates` adds that support up, term by term, so the cell at the crossing of the row
   and the column the question names wins. Prose (and slide titles, which on these decks state
   claims) is read by offline_sentences.py: the words a sentence has beside the question's words.
   Questions for an extreme ("which country has the highest ...") compare a series of numbers, or
   measure bars in pixels (offline_charts.py).
3. `choose_region` returns the best candidate together with the lines that support it; the policy
   crops that region and `answer_on_crop` runs step 2 again on the sharper crop.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field, replace

import numpy as np

from agent.policies.offline_charts import bar_ends, label_column, swatch_color
from agent.policies.offline_document import cover_likeness, document_answer
from agent.policies.offline_layout import (
    LEADING_MARK, SOURCE, Box, Span, adjacent, cloze_spans, content_terms, is_number, label_likeness, labels_a_row,
    looks_like_email, looks_like_name, looks_like_website, number_between, relation, short, spans_of, tall_lines,
    title_lines, word_count,
)
from agent.policies.offline_values import labelled_values
from agent.policies.offline_sentences import blocks_of, phrase_box, sentence_phrases
from agent.policies.offline_question import (
    CJK, NUMBER_KINDS, SUPERLATIVE, Question, fuzzy_equal, matched_terms, page_match, terms_of,
)
from search_engine.types import TextBox

# --- ranking -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Support:
    """One question term's best evidence for a candidate: the line holding it and how they relate."""

    term: str
    line: int
    text: str
    box: Box
    strength: float
    how: str  # "row", "column", "near", "same line" or "same sentence"


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
            label = {"row": "same row as", "column": "same column as", "near": "near", "same line": "on the line",
                     "same sentence": "in the sentence"}[s.how]
            parts.append(f'{label} "{short(s.text)}"')
            if len(parts) == limit:
                break
        return ", ".join(parts) if parts else "no question term near it"



def _kinds_for(answer_kind: str) -> list[tuple[str, ...]]:
    """Which span kinds to try, in order of preference, for an expected answer kind."""
    return {
        "percent": [("percent",), ("number",)],
        "date": [("date", "year"), ("number",)],  # a year stands in when the page gives no full date
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
                if term in span_terms or any(fuzzy_equal(term, t) for t in span_terms):
                    continue  # the candidate itself repeats the question: no support
                # a sentence that names a question term states its number ("21 are domestic"); a short
                # line that does is usually a label, its number part of the name ("Top 20 destinations")
                sentence = word_count(boxes[i].text) >= 5
                s, how = (1.0 if span.kind == "text" or sentence else 0.5), "same line"
                if span.kind != "text" and sentence:
                    # in a sentence, the number beside the term ("Kyoto (#12)") is the one it states
                    s /= 1.0 + _char_distance(boxes[i].text, span, term, question) / 30.0
                    note_of = _noted_word(boxes[i].text, span)
                    if note_of is not None:  # "Okinawa (#7), Kyoto (#12)": a note in brackets belongs to the word before it
                        s *= 1.0 if any(fuzzy_equal(term, t) or t in question.aliases.get(term, ()) for t in terms_of(note_of)) else 0.4
                ranked_line = _leading_rank(boxes[i].text)
                if ranked_line is not None and (
                        (span.kind != "text" and span.start == ranked_line[0] and question.asks_rank)
                        or (span.kind == "text" and term == ranked_line[1])):
                    s = 1.0  # "4 Hawaii": the rank a ranked list writes before the name, and the name at a rank
                elif titles[i]:
                    s *= 0.5  # a slide title mentions things in passing
            else:
                s, how = relation(span.box, boxes[i].box, size)
                s *= quality[i]
                if how == "row" and boxes[i].box[0] > span.box[2]:
                    s *= 0.8  # row labels sit left of their values
                if how == "column" and row_labels[i]:
                    s *= 0.3  # a table's row label names its row, not the labels above and below it
                if how == "row" and span.kind == "text" and is_number(boxes[i].text) and number_between(boxes, i, span):
                    s *= 0.3  # a rank labels the phrase right after it, not the one after the next rank
                if (span.kind == "text" and how != "near" and content_terms(span.text) & content_terms(boxes[i].text)
                        and _similar_height(span.box, boxes[i].box)):
                    s *= 0.5  # two parallel labels sharing words ("IT系统上云", "全量系统上云"): siblings, not label and value
                if span.kind == "text" and _BULLET.match(boxes[span.line].text) and _BULLET.match(boxes[i].text):
                    s *= 0.4  # two bullet points of one list are siblings: neither labels the other
                if span.kind == "text" and how != "near" and adjacent(span.box, boxes[i].box):
                    s *= 1.15  # a phrase right under / beside its label is its description
            if best is None or s > best.strength:
                best = Support(term, i, boxes[i].text, boxes[i].box, s, how)
        if best is not None:
            support.append(best)
    return support


# What comes right before a number that is only the starting point of a change.
BASELINE = re.compile(r"(?:\b(?:up|down|rising|falling|rose|fell|increased|decreased)?\s*from|\bvs\.?|\bversus|"
                      r"\bcompared (?:with|to)|\bprevious(?:ly)?|从|比)\s*$", re.IGNORECASE)
BASELINE_ASKED = re.compile(r"\bfrom\b|\bprevious|\bbefore\b|\boriginal|\bstart|从|之前|原来|此前")
_SAME_MEANING = str.maketrans({"至": "到"})  # "降至" and "降到" both mean "fell to"


def _leads_into(before: str, cloze: str) -> bool:
    """The text before a number ends with the question's words before its question word."""
    return re.sub(r"[\s了为]", "", before).translate(_SAME_MEANING).endswith(cloze.translate(_SAME_MEANING))


_BULLET = re.compile(r"^\s*[•·●○■□◆▪‣∙*]")


def _leading_rank(text: str) -> tuple[int, str] | None:
    """For a line of a ranked list ("4 Hawaii", "3London-UK"): where its rank starts and the rank as a term."""
    m = re.match(r"\s*[#]?(\d{1,2})[.)、]?\s*(?=[^\W\d_])", text)
    return (m.start(1), m.group(1)) if m else None


def _noted_word(text: str, span: Span) -> str | None:
    """For a number in brackets right after a word ("Kyoto (#12)"), that word; else None."""
    m = re.search(r"([^\W\d_][\w'-]*)\s*[(（]\s*#?\s*$", text[: span.start])
    return m.group(1) if m and re.match(r"\s*[)）]", text[span.end:]) else None


def _char_distance(text: str, span: Span, term: str, question: Question) -> float:
    """Characters between a span and the nearest spelling of a question term in the same line; a span
    before the term counts half as far again ("Kyoto (#12)": a note follows what it is about)."""
    lowered = text.lower()
    best = len(text) / 2.0
    for form in (term, *question.aliases.get(term, ())):
        for m in re.finditer(re.escape(form), lowered):
            gap = span.start - m.end() if span.start >= m.end() else 1.5 * max(0, m.start() - span.end)
            best = min(best, float(max(0, gap)))
    return best


def _similar_height(a: Box, b: Box) -> bool:
    ha, hb = a[3] - a[1], b[3] - b[1]
    return min(ha, hb) > 0 and max(ha, hb) / min(ha, hb) < 1.2


def anchor_quality(line_terms: list[str], matched: set[str]) -> float:
    """How well a line containing question terms can label something: short labels made mostly of
    question terms ("Japan", "CAGR (2014-20)") are good; sentences and lines that mention a term in
    passing ("China (ex. HK/Macau)" for "China") less so."""
    distinct = {t for t in line_terms if not (CJK.match(t) and len(t) == 1)}  # as in the question's terms
    coverage = len(matched & distinct) / len(distinct) if distinct else 0.0
    return 0.5 + 0.5 * coverage


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
    # big-font lines: as anchors they say what the slide or section is about, not which cell answers
    titles = tall_lines(boxes)
    slide_titles = title_lines(boxes, size)
    quality = [q * (0.5 if t else 1.0) for q, t in zip(quality, titles)]
    row_labels = [i in anchor_lines and labels_a_row(boxes, i) for i in range(len(boxes))]
    paragraph = {i: n for n, block in enumerate(blocks_of(boxes, size)) for i in block.lines}
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
        if span.kind == "text" and span.line in paragraph:
            # a piece of a paragraph: its neighbours are the rest of its sentence, read by _sentence_candidates
            support = [s for s in support if s.line == span.line or paragraph.get(s.line) != paragraph[span.line]]
        score = support_score(support, weights)
        named = [s.strength for s in support if s.term in question.numbers]
        if named and max(named) < 0.3:
            score *= 0.5  # the question names a number (a year, a rank) on the page, and this is far from it
        line = boxes[span.line].text
        if span.kind == "date":
            score *= 1.2  # a full date says more than the bare year inside it, on the same evidence
        if span.kind != "text" and question.cloze and _leads_into(line[: span.start], question.cloze):
            score *= 2.0  # the number the question's own words lead into ("漏损率降至9.8%" for "降到了多少")
        if span.kind != "text" and BASELINE.search(line[max(0, span.start - 14): span.start]) and not BASELINE_ASKED.search(question.text):
            score *= 0.5  # "up from EUR 1.98", "从14.2%降至": the old value a change starts from, not the one asked for
        if span.kind != "text" and word_count(line) - word_count(span.text) >= 2 and not (
                word_count(line) >= 5 and any(s.how == "same line" for s in support)):
            score *= 0.7  # a number inside a label or an unrelated sentence, rather than a value standing alone
        if span.kind == "text":
            if slide_titles[span.line]:
                score *= 0.3  # a slide title is the topic, rarely the answer
            span_terms = content_terms(span.text)
            echoed = matched_terms(span_terms, question)
            # an answer made mostly of the question's own words is rarely the answer (one sharing a word can be:
            # "经典网络" for "网络形态是什么"); nor is a long sentence
            score *= 1.0 - 0.8 * max(0.0, len(echoed) / max(1, len(span_terms)) - 0.25) / 0.75
            score /= 1.0 + 0.3 * max(0, word_count(span.text) - 5)
            if question.wants_name:
                score *= 1.5 if looks_like_name(span.text) else 0.6
            if question.wants_website:
                score *= 1.5 if looks_like_website(span.text) else 0.6
            if question.wants_email:
                score = (score + 1.0) * 2.0 if looks_like_email(span.text) else score * 0.5
            if question.wants_stage:  # a stage's name heads its column: above the lines that match the question
                columns = [sp for sp in support if sp.how == "column" and sp.strength >= 0.3]
                if columns:
                    score *= 1.5 if all(span.box[3] <= sp.box[1] for sp in columns) else 0.7
            line = boxes[span.line].text
            if question.wants_source:
                score = (score + 1.0) * 2.0 if SOURCE.match(line) and not SOURCE.match(span.text) else score * 0.5
            lead = LEADING_MARK.match(line)
            if lead and set(terms_of(lead.group())) & set(question.numbers):
                score *= 1.3  # the rank the question names is written on this very line ("3 Rome-Italy")
            if span in cloze:
                score *= 1.5  # the page completes the question's own sentence
        ranked.append(Candidate(span, score, tuple(support)))
    if question.answer_kind == "text":
        ranked += _sentence_candidates(boxes, question, size)
    ranked.sort(key=lambda c: (-c.score, c.span.line, c.span.box[0]))
    return ranked


def _sentence_candidates(boxes: list[TextBox], question: Question, size: tuple[int, int]) -> list[Candidate]:
    """Phrases a sentence of the page says where the question leaves a gap (offline_sentences.py)."""
    found = []
    for ph in sentence_phrases(boxes, question, size):
        if ph.coverage < 0.5:
            continue  # the sentence must restate most of the question
        score = 1.3 * math.sqrt(ph.context) * (0.5 + ph.coverage) / (1.0 + 0.1 * max(0.0, word_count(ph.text) - 8))
        score *= _format_fit(ph.text, question)
        if ph.restates >= 0.75 and not (question.wants_name or question.wants_website or question.wants_email):
            score *= 1.5  # "DOMESTIC TRAVEL IS THE SHORT-TERM GROWTH ENGINE" for "what is the short-term growth engine"
        elif ph.block.heading:
            score *= 0.6  # a slide title's claim answers only when nothing on the slide's body does
        line = ph.block.lines[0]
        support = (Support("sentence", line, ph.block.text, ph.block.box, min(1.0, ph.context), "same sentence"),)
        span = Span(ph.text, "text", phrase_box(ph, boxes), line)
        found.append(Candidate(span, score, support, extent=ph.block.box))
    return found


def _format_fit(text: str, question: Question) -> float:
    """Questions that ask for a name, a website or an email address prefer text of that shape."""
    fit = 1.0
    if question.wants_name:
        fit *= 1.5 if looks_like_name(text) else 0.6
    if question.wants_website:
        fit *= 1.5 if looks_like_website(text) else 0.6
    if question.wants_email:
        fit *= 2.0 if looks_like_email(text) else 0.5
    return fit


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
    if len(series) < 3 or word_count(axis.text) > 6:
        return None  # not a table column or a chart's series (a sentence is not an axis)
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
    note = f'the {word} of {len(series)} values along "{short(axis.text)}" is {pick.span.text}'
    span = Span(phrase.text, "text", phrase.box, i)
    support = (Support("extreme", pick.span.line, pick.span.text, pick.span.box, s, how),) + tuple(pick.support)
    return Candidate(span, pick.score, support, note)


def _union(xs: list[Box]) -> Box:
    return (min(b[0] for b in xs), min(b[1] for b in xs), max(b[2] for b in xs), max(b[3] for b in xs))


def _column_candidate(boxes: list[TextBox], question: Question) -> Candidate | None:
    """For "which X has the largest Y" over a column chart that prints its values: the category whose
    printed value is the extreme one (offline_values.py); with its value if the question asks for both."""
    pairs = [p for p in labelled_values(boxes) if not excluded_label(boxes[p[0]].text, question)]
    if not pairs:
        return None
    label, line, _ = (max if question.extreme == "max" else min)(pairs, key=lambda p: (p[2], -p[0]))
    value = boxes[line].text.strip()
    text = boxes[label].text.strip() + (f", {value}" if question.also_value else "")
    word = "highest" if question.extreme == "max" else "lowest"
    note = f"{value} is the {word} of the {len(pairs)} values printed above the categories"
    extent = _union([boxes[i].box for p in pairs for i in p[:2]])
    support = (Support("extreme", line, value, boxes[line].box, 1.0, "column"),)
    return Candidate(Span(text, "text", boxes[label].box, label), 1.0, support, note, extent)


def _column_lookup(boxes: list[TextBox], question: Question) -> Candidate | None:
    """For "what is the growth for India" over a column chart that prints its values: the value printed
    above the one category label the question names (offline_values.py)."""
    pairs = labelled_values(boxes)
    # a label that OCR ran together with its neighbour ("Indonesia Japan") names two columns: not this one
    named = [p for p in pairs if matched_terms(terms_of(boxes[p[0]].text), question)
             and all(matched_terms([t], question) for t in terms_of(boxes[p[0]].text))]
    if len(named) != 1:
        return None  # no category named, or several: the usual ranking decides
    label, line, _ = named[0]
    note = f'printed above the category "{short(boxes[label].text)}" of a column chart'
    extent = _union([boxes[i].box for p in pairs for i in p[:2]])
    span = next((sp for sp in spans_of([boxes[line]]) if sp.kind != "text"), None)
    if span is None:
        return None
    span = replace(span, box=boxes[line].box, line=line)
    support = (Support("category", label, boxes[label].text, boxes[label].box, 1.0, "column"),)
    return Candidate(span, 1.5, support, note, extent)


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
    labels = [i for i in labels if not excluded_label(boxes[i].text, question)]
    bars = bar_ends(pixels, boxes, labels, right, color)
    lengths = sorted((b.end - boxes[b.label].box[2] for b in bars), reverse=True)
    line_h = min(boxes[i].box[3] - boxes[i].box[1] for i in labels)
    if question.rank:  # "which app ranks second": the n-th longest bar, if it is clearly apart from its neighbours
        n = question.rank
        if len(lengths) < n or sum(1 for v in lengths if v > 2 * line_h) < n or any(
                abs(lengths[n - 1] - lengths[k]) < 2 for k in (n - 2, n) if 0 <= k < len(lengths)):
            return None
        pick = sorted(bars, key=lambda b: (-b.end, boxes[b.label].box[1]))[n - 1]
        word = f"number {n} by length"
    else:
        if sum(1 for v in lengths if v > 2 * line_h) < 2 or lengths[0] - lengths[1] < 2:
            return None  # no measurable bars, or no clear winner
        pick = (max if question.extreme == "max" else min)(bars, key=lambda b: (b.end, -boxes[b.label].box[1]))
        word = "longest" if question.extreme == "max" else "shortest"
    label = boxes[pick.label]
    series = f' in the colour of the legend "{short(legend_text)}"' if legend_text else ""
    note = f"its bar is the {word} of {len(bars)}{series}, measured in pixels"
    support = (Support("chart title", title, boxes[title].text, tb, 1.0, "column"),)
    extent = (labels_box[0], tb[1], max(b.end for b in bars), labels_box[3])
    if legend_box is not None:  # keep the legend in view, so a crop measures the same series
        extent = (min(extent[0], legend_box[0]), extent[1], max(extent[2], legend_box[2]), max(extent[3], legend_box[3]))
    return Candidate(Span(label.text.strip(), "text", label.box, pick.label), 1.0, support, note, extent)


PHONE = re.compile(r"\+?\(?\d[\d ()-]{6,}\d")


def _phone_candidate(boxes: list[TextBox], question: Question) -> Candidate | None:
    """For "what phone number ...": a telephone number as printed, on the line nearest a question term."""
    phones = [(i, m) for i, b in enumerate(boxes) for m in PHONE.finditer(b.text) if sum(c.isdigit() for c in m.group()) >= 7]
    if not phones:
        return None
    anchors = [b.box for b in boxes if matched_terms(terms_of(b.text), question)]
    i, m = min(phones, key=lambda p: (min((_distance(boxes[p[0]].box, a) for a in anchors), default=0.0), p[0]))
    span = Span(m.group().strip(), "text", boxes[i].box, i, None, m.start(), m.end())
    return Candidate(span, 1.5, (), "the telephone number printed nearest the question's words")


_CATCH_ALL = re.compile(r"^\s*(?:others?|other \w+|misc\.?|miscellaneous|n/?a|其他|其它)\s*$", re.IGNORECASE)


def excluded_label(text: str, question: Question) -> bool:
    """A label an extreme question cannot mean: one it sets aside ("apart from 'Other'"), or a catch-all
    ("Other", "其他") that lumps categories together, unless the question names it."""
    t = " ".join(text.lower().split())
    if any(x and (x == t or x in t) for x in question.excluded):
        return True
    return bool(_CATCH_ALL.match(t)) and not re.search(r"\bothers?\b|其他|其它", question.text.lower())


def _same_superlative(question: str, sentence: str) -> bool:
    """The sentence uses the question's own superlative ("most" for "the most"): it states the answer."""
    asked = {m.group() for m in SUPERLATIVE.finditer(question.lower())}
    return bool(asked & {m.group() for m in SUPERLATIVE.finditer(sentence.lower())})


def _distance(a: Box, b: Box) -> float:
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return math.hypot(dx, dy)


def best_answer(boxes: list[TextBox], question: Question, size: tuple[int, int],
                pixels: np.ndarray | None = None) -> Candidate | None:
    """The best answer on one image. `pixels` (the image as an RGB array) lets bar charts be measured."""
    if question.document_part:  # its title or presenter: read from the layout (offline_document.py)
        found = document_answer(boxes, question.document_part)
        if found is not None:
            span, how = found
            return Candidate(span, 1.0 + cover_likeness(boxes, question.document_part), (), how)
    if question.wants_phone:
        found = _phone_candidate(boxes, question)
        if found is not None:
            return found
    if question.rank and question.answer_kind == "text" and pixels is not None:
        found = _chart_candidate(boxes, question, size, pixels)  # "ranks second" over a bar chart
        if found is not None:
            return found
    if question.extreme and question.answer_kind == "text":
        # a sentence that states most of the question ("India has the lowest ratio of ...") answers it
        # better than comparing numbers or bars would, unless a chart's title restates more of it
        stated = max((ph.coverage for ph in sentence_phrases(boxes, question, size)
                      if _same_superlative(question.text, ph.block.text)), default=0.0)
        found = _chart_candidate(boxes, question, size, pixels) if pixels is not None else None
        if found is not None and page_match([boxes[found.support[0].line]], question) <= stated:
            found = None  # the sentence restates more of the question than the chart's title does
        if found is None and stated < 0.6:
            found = _column_candidate(boxes, question) or _extreme_candidate(boxes, question, size)
        if found is not None:
            return found
    if question.answer_kind in ("percent", "number", "value") and not question.extreme:
        found = _column_lookup(boxes, question)
        if found is not None:
            return found
    ranked = rank_candidates(boxes, question, size)
    if not ranked:
        return None
    return _as_list(ranked[0], boxes, question, size) if question.count >= 2 else ranked[0]


def _as_list(cand: Candidate, boxes: list[TextBox], question: Question, size: tuple[int, int]) -> Candidate:
    """For "which three groups ...": the chosen label and the labels stacked with it in its column
    (same font size, aligned left, right or centre, no question words), as one answer."""
    if cand.span.kind != "text" or any(s.how == "same sentence" for s in cand.support):
        return cand
    if len(re.split(r"[,，、/]| and ", cand.span.text)) >= question.count:
        return cand  # the line already lists enough items ("智能、成本")
    me = boxes[cand.span.line].box
    h = me[3] - me[1]
    tol = 0.02 * size[0]
    near = []
    for j, b in enumerate(boxes):
        bh = b.box[3] - b.box[1]
        if j == cand.span.line or bh <= 0 or max(h, bh) / min(h, bh) > 1.25 or matched_terms(terms_of(b.text), question):
            continue
        aligned = (abs(b.box[0] - me[0]) < tol or abs(b.box[2] - me[2]) < tol
                   or abs((b.box[0] + b.box[2]) - (me[0] + me[2])) / 2 < tol)
        gap = abs((b.box[1] + b.box[3]) - (me[1] + me[3])) / 2
        if aligned and gap <= 3 * h * (question.count - 1) and sum(c.isalpha() for c in b.text) >= 2:
            near.append((gap, j))
    if len(near) < question.count - 1:
        return cand
    lines = sorted([cand.span.line] + [j for _, j in sorted(near)[: question.count - 1]], key=lambda j: boxes[j].box[1])
    sep = "、" if question.language == "zh" else ", "
    text = sep.join(LEADING_MARK.sub("", boxes[j].text).strip() for j in lines)
    xs = [boxes[j].box for j in lines]
    extent = (min(b[0] for b in xs), min(b[1] for b in xs), max(b[2] for b in xs), max(b[3] for b in xs))
    note = f"with the {question.count - 1} labels stacked with it"
    return Candidate(Span(text, "text", extent, cand.span.line), cand.score, cand.support, note, extent)


def _same_reading(a: str, b: str) -> bool:
    """Two OCR readings of the same text (case, spaces and punctuation aside; one may be cut)."""
    na, nb = (re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", t).lower()) for t in (a, b))
    return bool(na and nb) and (na == nb or (min(len(na), len(nb)) >= 4 and (na in nb or nb in na)))


def answer_on_crop(boxes: list[TextBox], question: Question, size: tuple[int, int], expected: str | None,
                   pixels: np.ndarray | None = None, keep_ratio: float = 0.5, structural: bool = False) -> Candidate | None:
    """The answer read from a zoomed crop, given the candidate the crop was chosen for.

    A crop cuts away context (the title, far headers), so its own ranking is less sure than the
    page's. If the crop still reads the expected candidate with a score close to its best
    (`keep_ratio`), that sharper reading wins; otherwise the crop's best does. When the page's pick
    came from the page's structure (`structural`: a chart measured, a value read above its column),
    which a crop may cut or OCR may run together, any sharper reading of that same text keeps it.
    """
    best = best_answer(boxes, question, size, pixels)
    if best is None or expected is None:
        return best
    if structural and not _same_reading(best.span.text, expected):
        same = [sp for sp in spans_of(boxes) if _same_reading(sp.text, expected)]
        if same:
            return Candidate(same[0], best.score, (), "the page's pick, read again on the zoomed region")
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
