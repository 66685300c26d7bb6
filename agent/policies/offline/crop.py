"""Where to zoom, and what to believe after zooming.

`choose_region` is the best answer on a page together with the lines that justify it (its row
label and column header), widened to keep some context, so that the same rules can run again on
the sharper crop. `answer_on_crop` reads the crop: a crop cuts away context (the title, far
headers), so its own ranking is less sure than the page's, and the page's pick wins when the crop
still reads it about as well.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import replace

from .layout import Box
from .page import Page
from .readers import best_answer
from .scoring import Candidate, rank_candidates
from .weights import Weights


def same_reading(a: str, b: str) -> bool:
    """Two OCR readings of the same text (case, spaces and punctuation aside; one may be cut)."""
    na, nb = (re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", t).lower()) for t in (a, b))
    return bool(na and nb) and (na == nb or (min(len(na), len(nb)) >= 4 and (na in nb or nb in na)))


def answer_on_crop(page: Page, w: Weights, expected: Candidate | None, keep_ratio: float = 0.5) -> Candidate | None:
    """The answer read from a zoomed crop of the page whose pick was `expected`.

    The crop's best wins, unless the crop also reads the expected text with at least `keep_ratio`
    of the best score. A pick a special reader made from the page's structure (a chart measured, a
    value above its column), which a crop may cut or OCR may run together, is kept if any span of
    the crop reads the same text."""
    best = best_answer(page, w)
    if best is None or expected is None:
        return best
    text = expected.span.text
    if same_reading(best.span.text, text):  # a zoomed OCR may drop the spaces between words ("SUSHANTSHARMA")
        return replace(best, span=replace(best.span, text=text)) if " " in text.strip() and " " not in best.span.text.strip() else best
    if expected.reader:
        same = [s for s in page.spans if same_reading(s.text, text)]
        if same:
            return Candidate(same[0], best.score, note="the page's pick, read again on the zoomed region", reader=expected.reader)
    return next((c for c in rank_candidates(page, w)[:10] if same_reading(c.span.text, text) and c.score >= keep_ratio * best.score), best)


def choose_region(page: Page, w: Weights, min_fraction: tuple[float, float] = (0.3, 0.2), max_support: int = 3) -> tuple[Candidate, Box] | None:
    """The best candidate and the region around it and its strongest supporting lines, at least
    `min_fraction` of the image wide and high, in the image's pixels."""
    cand = best_answer(page, w)
    if cand is None:
        return None
    x1, y1, x2, y2 = cand.extent or cand.span.box
    by_line = {}
    for s in sorted(cand.support, key=lambda s: -s.strength):
        if s.strength >= 0.2 and s.line not in by_line:
            by_line[s.line] = s
    for s in list(by_line.values())[:max_support]:
        x1, y1, x2, y2 = min(x1, s.box[0]), min(y1, s.box[1]), max(x2, s.box[2]), max(y2, s.box[3])
    return cand, _widen((x1, y1, x2, y2), page.size, min_fraction)


def _widen(box: Box, size: tuple[int, int], min_fraction: tuple[float, float]) -> Box:
    """Grow the box about its centre to the minimum size, then shift it back inside the image."""
    out = []
    for lo, hi, side, fraction in ((box[0], box[2], size[0], min_fraction[0]), (box[1], box[3], size[1], min_fraction[1])):
        need = fraction * side
        if hi - lo < need:
            lo, hi = (lo + hi - need) / 2, (lo + hi + need) / 2
        if lo < 0:
            lo, hi = 0.0, min(side, hi - lo)
        if hi > side:
            lo, hi = max(0.0, lo - (hi - side)), float(side)
        out.append((lo, hi))
    (x1, x2), (y1, y2) = out
    return (float(int(x1)), float(int(y1)), float(math.ceil(x2)), float(math.ceil(y2)))
