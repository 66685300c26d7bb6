"""Reads a horizontal bar chart that prints no values, by measuring its bars in pixels.

"Which country has the largest share of X" over a bar chart that labels its categories but prints
no numbers has no span to score: the answer is the label whose bar is longest (or shortest, or the
n-th longest for "which app ranks second"). Categories sit in a column of right-aligned labels
under the chart's title and each bar runs right from its label; if the question names a legend
entry ("leisure"), only pixels of that entry's swatch colour count, so the right series is measured.
A sentence that restates more of the question with its superlative than the chart's title does
answers instead (prose.py).
"""
from __future__ import annotations

import numpy as np

from search_engine.types import TextBox

from ..layout import Box, distance, height, short
from ..page import Page
from ..prose import superlative_statement
from ..scoring import Candidate, Support
from ..spans import Span
from ..weights import Weights


def label_column(boxes: list[TextBox], title: int, size: tuple[int, int], max_words: int = 4) -> list[int]:
    """The category labels under `boxes[title]`: the longest run of short lines below it whose right
    edges line up, stacked without big gaps (at least three)."""
    w, h = size
    tx1, _, tx2, ty2 = boxes[title].box
    below = [i for i, b in enumerate(boxes) if i != title and b.box[1] >= ty2 - 2 and len(b.text.split()) <= max_words
             and tx1 - 0.35 * w <= b.box[2] <= tx2 and any(c.isalpha() for c in b.text)]
    best: list[int] = []
    for i in below:
        run = []
        for j in sorted((j for j in below if abs(boxes[j].box[2] - boxes[i].box[2]) <= 0.015 * w), key=lambda j: boxes[j].box[1]):
            if boxes[j].box[1] - (boxes[run[-1]].box[3] if run else ty2) > max(4 * height(boxes[j].box), 0.12 * h):
                break
            run.append(j)
        if len(run) > len(best) or (len(run) == len(best) and run and boxes[run[0]].box[1] < boxes[best[0]].box[1]):
            best = run
    return best if len(best) >= 3 else []


def swatch_color(pixels: np.ndarray, legend: Box) -> np.ndarray | None:
    """The colour of a legend swatch: the median of the saturated pixels just left of the legend text."""
    x1, y1, _, y2 = (int(round(v)) for v in legend)
    area = pixels[max(0, y1): max(0, y2), max(0, x1 - 3 * max(2, y2 - y1)): max(0, x1 - 1)].reshape(-1, 3).astype(float)
    strong = area[area.max(axis=1) - area.min(axis=1) > 60]
    return np.median(strong, axis=0) if len(strong) >= 4 else None


def hue_saturation(px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360) and saturation (max-min)/max in [0, 1] of RGB pixels (..., 3)."""
    px = px.astype(float)
    mx, mn = px.max(axis=-1), px.min(axis=-1)
    delta = np.where(mx == mn, 1.0, mx - mn)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    hue = np.where(mx == r, ((g - b) / delta) % 6, np.where(mx == g, (b - r) / delta + 2, (r - g) / delta + 4)) * 60.0
    return hue, np.where(mx == 0, 0.0, (mx - mn) / np.where(mx == 0, 1.0, mx))


def bar_ends(pixels: np.ndarray, boxes: list[TextBox], labels: list[int], right: float, color: np.ndarray | None = None) -> list[tuple[int, float]]:
    """(label, x where its bar ends) for each label: the first coloured run (of `color`'s hue, if
    given) starting within a few line heights right of the label, in the band reaching halfway to
    the neighbouring labels (grouped bars sit above and below their label's centre)."""
    h, w = pixels.shape[:2]
    centres = sorted((boxes[i].box[1] + boxes[i].box[3]) / 2 for i in labels)
    spacing = float(np.median(np.diff(centres))) if len(centres) > 1 else 0.0
    ref_hue = hue_saturation(np.asarray(color, dtype=float))[0] if color is not None else None
    ends = []
    for i in labels:
        x1, y1, x2, y2 = boxes[i].box
        half, centre = 0.45 * spacing if spacing > 0 else max(2.0, y2 - y1), (y1 + y2) / 2
        top, bottom, left, stop = int(max(0, centre - half)), int(min(h, centre + half)), int(min(w - 1, x2 + 1)), int(min(w, right))
        end = float(left)
        if stop - left >= 2 and bottom > top:
            band = pixels[top:bottom, left:stop]
            hue, sat = hue_saturation(band)
            mask = (sat > 0.3) & (band.max(axis=-1) > 40)  # not the white or grey background and grid lines
            if ref_hue is not None:  # a legend swatch is often darker or lighter than its bars: compare hues
                mask &= np.minimum(np.abs(hue - float(ref_hue)), 360 - np.abs(hue - float(ref_hue))) < 30
            for row in mask:
                xs = np.flatnonzero(row)
                if xs.size and xs[0] <= 4 * max(2.0, y2 - y1):
                    gaps = np.flatnonzero(np.diff(xs) > 3)
                    run_end = xs[gaps[0]] if gaps.size else xs[-1]
                    if run_end - xs[0] >= 1:
                        end = max(end, float(left + run_end))
        ends.append((i, end))
    return ends


def measure(page: Page) -> Candidate | None:
    """The label whose bar is the longest, shortest or n-th longest, if the bars are measurable and
    the pick is clear."""
    boxes, q, size = page.boxes, page.question, page.size
    lines = sorted((i for i, m in enumerate(page.matched) if m), key=lambda i: (-page.line_weight(i), boxes[i].box[1]))
    title, labels = next(((i, found) for i in lines[:4] if (found := label_column(boxes, i, size))), (None, []))
    if title is None:
        return None
    tb = boxes[title].box
    right = min(float(size[0]), tb[2] + 0.05 * size[0])  # a chart is about as wide as its title
    area = (min(boxes[i].box[0] for i in labels), tb[1], right, max(boxes[i].box[3] for i in labels))
    legends = [i for i in lines if i != title and i not in labels and len(boxes[i].text.split()) <= 2
               and area[0] <= (boxes[i].box[0] + boxes[i].box[2]) / 2 <= area[2]]
    legend, color = next(((i, c) for i in sorted(legends, key=lambda i: distance(boxes[i].box, area))
                          if (c := swatch_color(page.pixels, boxes[i].box)) is not None), (None, None))
    labels = [i for i in labels if not q.excludes(boxes[i].text)]
    bars = bar_ends(page.pixels, boxes, labels, right, color)
    lengths = sorted((end - boxes[i].box[2] for i, end in bars), reverse=True)
    clear = sum(1 for v in lengths if v > 2 * min((height(boxes[i].box) for i in labels), default=0.0))
    n = q.place or 1
    if clear < max(n, 2) or any(abs(lengths[n - 1] - lengths[k]) < 2 for k in (n - 2, n) if 0 <= k < len(lengths)):
        return None  # no measurable bars, or no clear pick
    if q.place or q.extreme == "max":
        label, end = sorted(bars, key=lambda b: (-b[1], boxes[b[0]].box[1]))[n - 1]
    else:
        label, end = min(bars, key=lambda b: (b[1], -boxes[b[0]].box[1]))
    word = f"number {n} by length" if q.place else "longest" if q.extreme == "max" else "shortest"
    series = f' in the colour of the legend "{short(boxes[legend].text)}"' if legend is not None else ""
    extent = (area[0], tb[1], max(end for _, end in bars), area[3])
    if legend is not None:  # keep the legend in view, so a crop measures the same series
        lb = boxes[legend].box
        extent = (min(extent[0], lb[0]), extent[1], max(extent[2], lb[2]), max(extent[3], lb[3]))
    support = (Support("chart title", title, boxes[title].text, tb, 1.0, "column"),)
    note = f"its bar is the {word} of {len(bars)}{series}, measured in pixels"
    return Candidate(Span(boxes[label].text.strip(), "text", boxes[label].box, label), 1.0, support, note=note, extent=extent)


def read(page: Page, w: Weights) -> Candidate | None:
    found = measure(page) if page.pixels is not None else None
    if found is not None and not page.question.place:
        title_share = sum(page.question.terms[t] for t in page.matched[found.support[0].line]) / sum(page.question.terms.values())
        if title_share <= superlative_statement(page.phrases, page.question):
            return None  # a sentence restates more of the question than the chart's title does
    return found


def applies(question) -> bool:
    return question.kind == "text" and bool(question.place or question.extreme)
