"""Reading a horizontal bar chart that prints no values: measure the bars in pixels.

Part of the offline policy's rules (no model): for "which country has the largest share of X", a
bar chart often labels its categories but not its values. Categories sit in a column of
right-aligned labels under the chart's title; each label's bar runs to the right of it. We find
that label column from the OCR boxes, then measure, in the image's pixels, how far the coloured
bar beside each label reaches. If the question names a legend entry ("leisure"), only pixels of
that entry's swatch colour count, so the right series is measured.

Arrays in, numbers out: `pixels` is an (H, W, 3) uint8 RGB array of the same image the boxes were
read from.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from search_engine.types import TextBox

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Bar:
    label: int  # index of the label's TextBox
    end: float  # x where the bar ends (pixels); bars share their start, so a larger end is a longer bar


def label_column(boxes: list[TextBox], title: int, size: tuple[int, int], max_words: int = 4) -> list[int]:
    """Indices of the category labels of the chart under `boxes[title]`: short lines below the
    title whose right edges line up (a right-aligned column), nearest such column to the title."""
    w, h = size
    tx1, ty1, tx2, ty2 = boxes[title].box
    below = [i for i, b in enumerate(boxes)
             if i != title and b.box[1] >= ty2 - 2 and len(b.text.split()) <= max_words
             and tx1 - 0.35 * w <= b.box[2] <= tx2 and any(c.isalpha() for c in b.text)]
    tolerance = 0.015 * w
    best: list[int] = []
    for i in below:
        group = sorted((j for j in below if abs(boxes[j].box[2] - boxes[i].box[2]) <= tolerance), key=lambda j: boxes[j].box[1])
        # keep the run of labels that starts near the title and is stacked without big gaps
        run = []
        for j in group:
            top = boxes[run[-1]].box[3] if run else ty2
            line_h = boxes[j].box[3] - boxes[j].box[1]
            if boxes[j].box[1] - top > max(4 * line_h, 0.12 * h):
                break
            run.append(j)
        if len(run) > len(best) or (len(run) == len(best) and run and best and boxes[run[0]].box[1] < boxes[best[0]].box[1]):
            best = run
    return best if len(best) >= 3 else []


def swatch_color(pixels: np.ndarray, legend: Box) -> np.ndarray | None:
    """The colour of a legend swatch: the most saturated pixels just left of the legend text."""
    x1, y1, x2, y2 = (int(round(v)) for v in legend)
    lh = max(2, y2 - y1)
    area = pixels[max(0, y1): max(0, y2), max(0, x1 - 3 * lh): max(0, x1 - 1)]
    if area.size == 0:
        return None
    flat = area.reshape(-1, 3).astype(float)
    sat = flat.max(axis=1) - flat.min(axis=1)
    strong = flat[sat > 60]
    if len(strong) < 4:
        return None
    return np.median(strong, axis=0)


def hue_saturation(px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360) and saturation (max-min)/max in [0, 1] of RGB pixels (..., 3)."""
    px = px.astype(float)
    mx, mn = px.max(axis=-1), px.min(axis=-1)
    delta = mx - mn
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    safe = np.where(delta == 0, 1.0, delta)
    hue = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60.0
    sat = np.where(mx == 0, 0.0, delta / np.where(mx == 0, 1.0, mx))
    return hue, sat


def _bar_mask(band: np.ndarray, color: np.ndarray | None) -> np.ndarray:
    """Bar pixels: coloured (not the white or grey background and grid lines), and, when a legend
    colour is given, of its hue (a legend swatch is often darker or lighter than its bars)."""
    hue, sat = hue_saturation(band)
    mask = (sat > 0.3) & (band.max(axis=-1) > 40)
    if color is not None:
        ref_hue, _ = hue_saturation(np.asarray(color, dtype=float))
        diff = np.abs(hue - float(ref_hue))
        mask &= np.minimum(diff, 360 - diff) < 30
    return mask


def bar_ends(pixels: np.ndarray, boxes: list[TextBox], labels: list[int], right_limit: float,
             color: np.ndarray | None = None) -> list[Bar]:
    """For each label, where the longest coloured run to its right ends (within its row band).

    The band reaches halfway to the neighbouring labels, since grouped bars sit above and below
    their label's centre. A run must start within a few line heights of the label (the axis).
    """
    h, w = pixels.shape[:2]
    centres = sorted((boxes[i].box[1] + boxes[i].box[3]) / 2 for i in labels)
    spacing = float(np.median(np.diff(centres))) if len(centres) > 1 else 0.0
    bars = []
    for i in labels:
        x1, y1, x2, y2 = boxes[i].box
        lh = max(2.0, y2 - y1)
        # a label owns the rows up to halfway to its neighbours (grouped bars sit above and below it)
        half = 0.45 * spacing if spacing > 0 else lh
        centre = (y1 + y2) / 2
        top, bottom = int(max(0, centre - half)), int(min(h, centre + half))
        left, right = int(min(w - 1, x2 + 1)), int(min(w, right_limit))
        if right - left < 2 or bottom <= top:
            bars.append(Bar(i, left))
            continue
        mask = _bar_mask(pixels[top:bottom, left:right], color)
        end = float(left)
        max_start = 4 * lh  # the axis is just right of the labels
        for row in mask:
            xs = np.flatnonzero(row)
            if xs.size == 0 or xs[0] > max_start:
                continue
            # the first run: from its first pixel up to the first gap wider than 2 pixels
            gaps = np.flatnonzero(np.diff(xs) > 3)
            run_end = xs[gaps[0]] if gaps.size else xs[-1]
            if run_end - xs[0] >= 1:
                end = max(end, float(left + run_end))
        bars.append(Bar(i, end))
    return bars
