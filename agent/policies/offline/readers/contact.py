"""Reads what a pattern gives away: a phone number, an email address, the source of the data.

"What phone number does X list?", "What is the presenter's email address?" and "Where does the data
come from?" rarely share a word with the answer's line ("M:+852 6571 1590", "E: ...@GMAIL.COM",
"Source: MasterCard Intelligence"), so support scoring finds nothing; but the answer has a shape
of its own. The printed text of that shape nearest the question's words answers.
"""
from __future__ import annotations

import re

from ..layout import EMAIL, distance
from ..page import Page
from ..scoring import Candidate
from ..spans import SOURCE, Span
from ..weights import Weights

_PHONE = re.compile(r"\+?\(?\d[\d ()-]{6,}\d")
FINDERS = {  # the question's `wants` -> (where that shape is in a line, what the answer is)
    "phone": (lambda t: [m.span() for m in _PHONE.finditer(t) if sum(c.isdigit() for c in m.group()) >= 7], "telephone number"),
    "email": (lambda t: [m.span() for m in EMAIL.finditer(t)], "email address"),
    "source": (lambda t: [(SOURCE.match(t).end(), len(t))] if SOURCE.match(t) and SOURCE.match(t).end() < len(t) else [], "source line"),
}


def read(page: Page, w: Weights) -> Candidate | None:
    find, what = FINDERS[page.question.wants]
    found = [(i, a, z) for i, b in enumerate(page.boxes) for a, z in find(b.text)]
    if not found:
        return None
    anchors = [page.boxes[i].box for i, terms in enumerate(page.matched) if terms]
    i, a, z = min(found, key=lambda f: (min((distance(page.boxes[f[0]].box, x) for x in anchors), default=0.0), f[0]))
    span = Span(page.boxes[i].text[a:z].strip(), "text", page.boxes[i].box, i, None, a, z)
    return Candidate(span, 1.5, note=f"the {what} printed nearest the question's words")


def applies(question) -> bool:
    return question.wants in FINDERS
