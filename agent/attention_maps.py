"""Attention-map maths: arrays in, arrays out. No torch, no model, no files.

The chain from a turn's reply to a map over page pixels, one pure step per function:

1. which tokens: `selection_span` picks characters of the reply (the <bbox> coordinates, the
   <answer> text, the action argument, or the whole reply); `tokens_in_span` turns characters into
   token positions through the tokenizer's offsets; `producing_rows` gives the query rows that
   chose those tokens (token p is sampled from the step at position p-1).
2. which columns: `image_token_spans` finds each image's run of `<|image_pad|>` tokens.
3. grid: `token_grid` reshapes one image's values to (grid_h/2, grid_w/2): Qwen2.5-VL merges 2x2
   patches of 14 px into one token, in row-major order over the merged grid.
4. page pixels: the grid covers the whole image the model saw, and that image is a plain resize of
   `ImageView.region` (the processor's rounding to multiples of 28 is another plain resize), so the
   grid's extent in page pixels is exactly the view's region: cell (i, j) covers
   x in [x0 + j*dx, x0 + (j+1)*dx), y in [y0 + i*dy, y0 + (i+1)*dy), dx = (x1-x0)/cols, dy = (y1-y0)/rows
   (the convention agent/figures.py draws).
5. scores: `mass_inside` / `region_share`: attention mass inside a page box, each cell weighted by
   the fraction of its area inside the box (mass is taken as uniform within a cell).
6. attention sinks: `correct_sinks` (off by default) removes what a content-free query would look
   at anyway, given that query's map of the same image (the per-image baseline).

A per-head map is a stack (heads, rows, cols): `token_grid` and `correct_sinks` keep the leading
axis, `per_head_share` scores each head apart.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

Box = Sequence[float]  # [x1, y1, x2, y2] in page pixels
Extent = Sequence[float]  # (x0, y0, x1, y1) in page pixels: what a whole grid covers

SELECTIONS = ("action", "bbox", "answer", "search", "reply")
REDUCTIONS = ("mean", "max")  # over heads and over layers
SINK_MODES = ("none", "drop", "baseline")
SINK_FACTOR = 10.0  # a baseline cell holding >= 10x the uniform share (1 / cells) of its mass is a sink
_ACTION_RE = re.compile(r"<(search|answer|bbox)>(.*?)</\1>", re.DOTALL)  # the reference's first-match rule


# --- 1. which tokens -----------------------------------------------------------------------------

def selection_span(reply: str, select: str) -> tuple[int, int] | None:
    """Characters [start, end) of `reply` whose attention we want, or None if the reply has none.

    - "reply": the whole reply (thinking included);
    - "action": the argument of the action the reference executes (first <search|bbox|answer>);
    - "bbox" / "answer" / "search": the argument of the first tag of that kind.
    Arguments are trimmed of surrounding whitespace; an empty argument gives None.
    """
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {SELECTIONS}, got {select!r}")
    if select == "reply":
        return (0, len(reply)) if reply else None
    pattern = _ACTION_RE if select == "action" else re.compile(rf"<({select})>(.*?)</{select}>", re.DOTALL)
    match = pattern.search(reply)
    if match is None:
        return None
    start, end = match.span(2)
    content = reply[start:end]
    stripped = content.strip()
    if not stripped:
        return None
    start += len(content) - len(content.lstrip())
    return start, start + len(stripped)


def tokens_in_span(offsets: np.ndarray, start: int, end: int) -> np.ndarray:
    """Positions of the tokens whose character range [a, b) overlaps [start, end).

    `offsets` is the tokenizer's offset mapping, shape (n_tokens, 2). Zero-width tokens never match.
    A token straddling an edge counts: Qwen's BPE writes "<bbox>[" as "<", "bbox", ">[", so the
    step that opened the coordinates is kept, and a one-word answer merged with ">" is never lost.
    """
    offsets = np.asarray(offsets)
    a, b = offsets[:, 0], offsets[:, 1]
    return np.flatnonzero((a < end) & (b > start) & (b > a))


def producing_rows(token_positions: np.ndarray) -> np.ndarray:
    """The query rows whose attention produced these tokens: token p came out of the step at p-1."""
    positions = np.asarray(token_positions, dtype=np.int64)
    if positions.size and positions.min() < 1:
        raise ValueError("the first token of a sequence is not produced by any step")
    return positions - 1


def expand_image_pads(text: str, counts: Sequence[int], pad: str = "<|image_pad|>") -> str:
    """The prompt as the processor tokenises it: the i-th `pad` repeated counts[i] times, in order."""
    parts = text.split(pad)
    if len(parts) - 1 != len(counts):
        raise ValueError(f"the text has {len(parts) - 1} image placeholders but {len(counts)} images")
    return parts[0] + "".join(pad * int(n) + part for n, part in zip(counts, parts[1:]))


def reply_spans(text: str, replies: Sequence[str], start: str = "<|im_start|>assistant\n", end: str = "<|im_end|>") -> list[tuple[int, int]]:
    """Characters [start, end) of each assistant reply inside the rendered chat, in order.

    Each reply is looked up whole, between its chat-template markers, after the previous one.
    """
    spans, cursor = [], 0
    for i, reply in enumerate(replies):
        at = text.find(start + reply + end, cursor)
        if at < 0:
            raise ValueError(f"reply {i} ({reply[:40]!r}) is not in the rendered chat; was it rendered with another template?")
        first = at + len(start)
        spans.append((first, first + len(reply)))
        cursor = first + len(reply)
    return spans

# --- 2. which columns ----------------------------------------------------------------------------

def tokens_per_image(grid_thw: Sequence[int], merge: int = 2) -> int:
    t, h, w = (int(v) for v in grid_thw)
    return t * h * w // (merge * merge)


def image_token_spans(input_ids: np.ndarray, image_token_id: int, grids_thw: Sequence[Sequence[int]], merge: int = 2) -> list[tuple[int, int]]:
    """[start, end) of each image's `<|image_pad|>` run, checked against `image_grid_thw`."""
    ids = np.asarray(input_ids).reshape(-1)
    is_pad = np.concatenate([[False], ids == image_token_id, [False]])
    starts = np.flatnonzero(~is_pad[:-1] & is_pad[1:])
    ends = np.flatnonzero(is_pad[:-1] & ~is_pad[1:])
    spans = [(int(s), int(e)) for s, e in zip(starts, ends)]
    if len(spans) != len(grids_thw):
        raise ValueError(f"{len(spans)} runs of image tokens but {len(grids_thw)} images in image_grid_thw")
    for (s, e), grid in zip(spans, grids_thw):
        if e - s != tokens_per_image(grid, merge):
            raise ValueError(f"image token run [{s}, {e}) has {e - s} tokens, image_grid_thw {list(grid)} needs {tokens_per_image(grid, merge)}")
    return spans


# --- 3. grid -------------------------------------------------------------------------------------

def token_grid(values: np.ndarray, grid_thw: Sequence[int], merge: int = 2) -> np.ndarray:
    """One image's per-token values as its (grid_h/merge, grid_w/merge) grid, row 0 at the top.

    `values` is (tokens,) or, per head, (heads, tokens) -> (heads, rows, cols). An image has
    grid_t == 1; a (never used here) multi-frame grid is averaged over time.
    """
    t, h, w = (int(v) for v in grid_thw)
    values = np.asarray(values)
    lead = values.shape[:-1]
    rows, cols = h // merge, w // merge
    if values.shape[-1] != t * rows * cols:
        raise ValueError(f"{values.shape[-1]} values do not fill a {t}x{rows}x{cols} token grid (image_grid_thw {list(grid_thw)})")
    return values.reshape(*lead, t, rows, cols).mean(axis=-3)


# --- 4. page pixels ------------------------------------------------------------------------------

def cell_box(extent: Extent, shape: tuple[int, int], row: int, col: int) -> list[float]:
    """The page-pixel box of grid cell (row, col)."""
    x0, y0, x1, y1 = (float(v) for v in extent)
    rows, cols = shape
    dx, dy = (x1 - x0) / cols, (y1 - y0) / rows
    return [x0 + col * dx, y0 + row * dy, x0 + (col + 1) * dx, y0 + (row + 1) * dy]


def cell_at(extent: Extent, shape: tuple[int, int], x: float, y: float) -> tuple[int, int] | None:
    """(row, col) of the cell holding page point (x, y), or None outside the extent."""
    x0, y0, x1, y1 = (float(v) for v in extent)
    rows, cols = shape
    if not (x0 <= x < x1 and y0 <= y < y1):
        return None
    return min(int((y - y0) / (y1 - y0) * rows), rows - 1), min(int((x - x0) / (x1 - x0) * cols), cols - 1)


def _overlap_1d(edges: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fraction of each interval [edges[i], edges[i+1]) that lies inside [lo, hi]."""
    inside = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, None)
    return inside / np.diff(edges)


def box_weights(extent: Extent, shape: tuple[int, int], box: Box) -> np.ndarray:
    """(rows, cols) array: the fraction of each cell's area inside `box` (page pixels)."""
    x0, y0, x1, y1 = (float(v) for v in extent)
    rows, cols = shape
    wx = _overlap_1d(np.linspace(x0, x1, cols + 1), float(box[0]), float(box[2]))
    wy = _overlap_1d(np.linspace(y0, y1, rows + 1), float(box[1]), float(box[3]))
    return np.outer(wy, wx)


# --- 5. scores -----------------------------------------------------------------------------------

def mass_inside(values: np.ndarray, extent: Extent, box: Box) -> float:
    """Attention mass of a map inside a page box (area-weighted at cell edges)."""
    values = np.asarray(values, dtype=np.float64)
    return float((values * box_weights(extent, values.shape, box)).sum())


def region_share(maps: Sequence[tuple[np.ndarray, Extent]], boxes: Sequence[Sequence[Box]]) -> float | None:
    """Share of the total mass of `maps` that falls inside their boxes.

    `boxes[i]` lists the page boxes that count for map i (none: the map only adds to the total);
    overlapping boxes on one map are counted once per cell, up to the cell's whole area.
    Returns None when the maps hold no mass at all.
    """
    total = inside = 0.0
    for (values, extent), map_boxes in zip(maps, boxes, strict=True):
        values = np.asarray(values, dtype=np.float64)
        total += float(values.sum())
        if map_boxes:
            weight = np.minimum(sum(box_weights(extent, values.shape, b) for b in map_boxes), 1.0)
            inside += float((values * weight).sum())
    return None if total <= 0 else inside / total


def per_head_share(maps: Sequence[tuple[np.ndarray, Extent]], boxes: Sequence[Sequence[Box]]) -> list[float | None]:
    """`region_share` for each head of per-head maps, each (heads, rows, cols)."""
    heads = {np.asarray(values).shape[0] for values, _ in maps}
    if len(heads) != 1:
        raise ValueError(f"per-head maps disagree on the number of heads: {sorted(heads)}")
    return [region_share([(np.asarray(values)[h], extent) for values, extent in maps], boxes) for h in range(heads.pop())]


# --- 6. attention sinks --------------------------------------------------------------------------

def sink_cells(baseline: np.ndarray, factor: float = SINK_FACTOR) -> np.ndarray:
    """Boolean mask of the sink cells of one image: where its baseline map piles up.

    A cell is a sink when it holds at least `factor` times the uniform share (1 / cells) of the
    baseline's mass. A baseline without mass has no sinks.
    """
    baseline = np.asarray(baseline, dtype=np.float64)
    total = baseline.sum()
    if total <= 0:
        return np.zeros(baseline.shape, dtype=bool)
    return baseline / total >= factor / baseline.size


def correct_sinks(values: np.ndarray, baseline: np.ndarray, mode: str, factor: float = SINK_FACTOR) -> np.ndarray:
    """A map of one image with its attention sinks corrected; `baseline` is the same image's map
    from a content-free query, same shape, same layers and heads. agent/attention.py takes the
    tokens between the image and the next reply as that query: `<|vision_end|><|im_end|>\n
    <|im_start|>assistant` (plus any feedback text sent with the image): template tokens, not words
    the model wrote, so their attention shows where the image draws attention whatever is being
    written, its sinks first of all.

    - "none": unchanged.
    - "drop": the sink cells (`sink_cells` of the baseline) are set to zero and the rest is scaled
      back to the map's own total, so the mass a sink took is shared out in proportion.
    - "baseline": the baseline, scaled to the map's total, is subtracted and negatives clipped:
      what is left is where this query looked MORE than the content-free one. The total shrinks.
    Per-head stacks (heads, rows, cols) are corrected head by head.
    """
    if mode not in SINK_MODES:
        raise ValueError(f"sink must be one of {SINK_MODES}, got {mode!r}")
    values = np.asarray(values)
    baseline = np.asarray(baseline)
    if values.shape != baseline.shape:
        raise ValueError(f"map {values.shape} and baseline {baseline.shape} differ in shape")
    if mode == "none":
        return values.copy()
    if values.ndim == 3:
        return np.stack([correct_sinks(v, b, mode, factor) for v, b in zip(values, baseline)])
    v = values.astype(np.float64)
    total, base_total = v.sum(), float(np.asarray(baseline, dtype=np.float64).sum())
    if mode == "drop":
        kept = np.where(sink_cells(baseline, factor), 0.0, v)
        out = kept * (total / kept.sum()) if kept.sum() > 0 else kept
    else:
        out = v if base_total <= 0 else np.clip(v - baseline.astype(np.float64) * (total / base_total), 0.0, None)
    return out.astype(values.dtype)
