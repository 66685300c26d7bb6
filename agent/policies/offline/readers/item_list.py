"""Reads a list the question asks for by its length: "which three groups ...", "两个关键词".

Support scoring finds one label; the question wants that label and the ones stacked with it in its
column (same type size, aligned left, right or centre, no question words), as one answer.
"""
from __future__ import annotations

import re

from ..layout import height, union
from ..page import Page
from ..scoring import Candidate, rank_candidates
from ..spans import LEADING_MARK, Span
from ..weights import Weights


def read(page: Page, w: Weights) -> Candidate | None:
    ranked = rank_candidates(page, w)
    if not ranked:
        return None
    cand, q, boxes = ranked[0], page.question, page.boxes
    if any(s.how == "same sentence" for s in cand.support) or len(re.split(r"[,，、/]| and ", cand.span.text)) >= q.count:
        return None  # read from a sentence, or the line already lists enough items ("智能、成本")
    me, tol = boxes[cand.span.line].box, 0.02 * page.size[0]
    near = []
    for j, b in enumerate(boxes):
        h = height(b.box)
        if j == cand.span.line or h <= 0 or max(h, height(me)) / min(h, height(me)) > 1.25 or page.matched[j]:
            continue
        aligned = abs(b.box[0] - me[0]) < tol or abs(b.box[2] - me[2]) < tol or abs(b.box[0] + b.box[2] - me[0] - me[2]) / 2 < tol
        gap = abs(b.box[1] + b.box[3] - me[1] - me[3]) / 2
        if aligned and gap <= 3 * height(me) * (q.count - 1) and sum(c.isalpha() for c in b.text) >= 2:
            near.append((gap, j))
    if len(near) < q.count - 1:
        return None
    lines = sorted([cand.span.line] + [j for _, j in sorted(near)[: q.count - 1]], key=lambda j: boxes[j].box[1])
    text = ("、" if q.language == "zh" else ", ").join(LEADING_MARK.sub("", boxes[j].text).strip() for j in lines)
    extent = union([boxes[j].box for j in lines])
    return Candidate(Span(text, "text", extent, cand.span.line), cand.score, cand.support, cand.features,
                     note=f'"{cand.span.text}" and the {q.count - 1} labels stacked with it', extent=extent)


def applies(question) -> bool:
    return question.kind == "text" and question.count >= 2
