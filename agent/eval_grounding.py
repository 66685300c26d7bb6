"""Grounding metrics (SATORI-R1's view): did the model's crops land on the evidence?

Where a dataset gives gold evidence boxes (page pixels of the gold page, one or more per page),
each crop turn is scored against the gold boxes of the page it cropped:
- `iou`: IoU of the model's box (mapped to the page as its profile maps it, before padding and
  clamped to the page) with the union of the gold boxes on that page (SATORI-R1's union-IoU; with
  one gold box it is the plain IoU);
- `cover`: the share of the gold region inside the crop actually cut (padding included): did the
  zoomed image the model saw hold the evidence?
The episode gets its best `iou` and best `cover` over its crop turns (0.0 when it never cropped a
gold page), and the mean of the attention share inside the gold boxes (`Turn.scores
["attention_gold_share"]`, agent/attention.py) over the turns where attention maps were computed.

Gold boxes are read from `meta_info["bbox"]` (the reference datasets) or `meta_info["evidence_box"]`
(bench/questions) in any of these shapes; a shape that does not say which page a box is on is refused
with the reason (`GoldBoxError`), never guessed:
    [x1, y1, x2, y2]                                     one box on the only gold page
    [[x1, y1, x2, y2], ...]                              boxes on the only gold page
    [[[x1, y1, x2, y2], ...], [[...]], ...]              boxes per gold page, in gold-page order
    {"page id" or 1-based page number: box or [boxes]}   boxes by page
    [{"page" or "page_id": ..., "bbox" or "box": box or [boxes]}, ...]
They are kept on the trajectory as `gold["boxes"] = {page_id: [[x1, y1, x2, y2], ...]}` (the
shape agent/attention.py reads), so every metric is computed from the saved trajectory alone.
"""
from __future__ import annotations

import math
from itertools import pairwise

from agent.protocol import bbox_on_page, profile_of
from agent.trajectory import Box, Trajectory, Turn

BOX_KEYS = ("bbox", "evidence_box")  # meta_info keys holding gold boxes, first found wins


class GoldBoxError(ValueError):
    """Gold boxes that cannot be read, or whose page cannot be told; the message says why."""


# --- rectangles ------------------------------------------------------------------------------------------


def area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def intersect(a: Box, b: Box) -> Box | None:
    box = [max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])]
    return box if box[2] > box[0] and box[3] > box[1] else None


def union_area(boxes: list[Box]) -> float:
    """Area covered by any of `boxes` (overlaps counted once), by coordinate compression."""
    boxes = [b for b in boxes if area(b) > 0]
    if not boxes:
        return 0.0
    xs = sorted({v for b in boxes for v in (b[0], b[2])})
    ys = sorted({v for b in boxes for v in (b[1], b[3])})
    total = 0.0
    for x0, x1 in pairwise(xs):
        for y0, y1 in pairwise(ys):
            if any(b[0] <= x0 and x1 <= b[2] and b[1] <= y0 and y1 <= b[3] for b in boxes):
                total += (x1 - x0) * (y1 - y0)
    return total


def overlap_with_union(box: Box, gold: list[Box]) -> float:
    """Area of `box` inside the union of `gold`."""
    return union_area([c for g in gold if (c := intersect(box, g)) is not None])


def iou_with_union(box: Box, gold: list[Box]) -> float:
    """IoU of `box` with the union of `gold` (0.0 when either is empty)."""
    inter = overlap_with_union(box, gold)
    union = area(box) + union_area(gold) - inter
    return inter / union if union > 0 else 0.0


def cover_of_union(box: Box, gold: list[Box]) -> float:
    """Share of the union of `gold` inside `box` (0.0 when there is no gold area)."""
    gold_area = union_area(gold)
    return overlap_with_union(box, gold) / gold_area if gold_area > 0 else 0.0


# --- reading gold boxes ------------------------------------------------------------------------------------


def _is_box(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def _box(value, where: str) -> Box:
    box = [float(v) for v in value]
    if not all(math.isfinite(v) for v in box) or min(box) < 0 or box[2] <= box[0] or box[3] <= box[1]:
        raise GoldBoxError(f"{where}: {list(value)} is not a box [x1, y1, x2, y2] of page pixels with x1 < x2 and y1 < y2")
    return box


def _boxes(value, where: str) -> list[Box]:
    """One box or a list of boxes."""
    if _is_box(value):
        return [_box(value, where)]
    if isinstance(value, (list, tuple)) and value and all(_is_box(v) for v in value):
        return [_box(v, where) for v in value]
    raise GoldBoxError(f"{where}: expected a box [x1, y1, x2, y2] or a list of boxes, got {str(value)[:80]}")


def _page_of(key, gold_pages: list[str], numbers: list[int], where: str) -> str:
    """A gold page named by its id or by its 1-based page number (meta_info.reference_page)."""
    if isinstance(key, str) and key in gold_pages:
        return key
    try:
        number = int(key)
    except (TypeError, ValueError):
        number = None
    if number is not None and number in numbers and len(numbers) == len(gold_pages):
        return gold_pages[numbers.index(number)]
    raise GoldBoxError(f"{where}: {key!r} is not one of the gold pages {gold_pages}")


def gold_boxes(meta: dict, gold_pages: list[str]) -> dict[str, list[Box]]:
    """The gold evidence boxes of one example by page id ({} when the dataset gives none)."""
    key = next((k for k in BOX_KEYS if meta.get(k) is not None), None)
    if key is None:
        return {}
    value, where = meta[key], f"meta_info.{key}"
    numbers = []
    for p in meta.get("reference_page") or []:
        try:
            numbers.append(int(p))
        except (TypeError, ValueError):
            pass
    out: dict[str, list[Box]] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.setdefault(_page_of(k, gold_pages, numbers, where), []).extend(_boxes(v, f"{where}[{k!r}]"))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            page = item.get("page_id", item.get("page"))
            boxes = item.get("bbox", item.get("box"))
            if page is None or boxes is None:
                raise GoldBoxError(f"{where}[{i}]: expected {{'page' or 'page_id': ..., 'bbox': box or [boxes]}}")
            out.setdefault(_page_of(page, gold_pages, numbers, where), []).extend(_boxes(boxes, f"{where}[{i}]"))
        return out
    if isinstance(value, list) and value and all(isinstance(v, list) and v and all(_is_box(b) for b in v) for v in value):
        if len(value) != len(gold_pages):  # boxes per page: one list per gold page
            raise GoldBoxError(f"{where}: {len(value)} lists of boxes for {len(gold_pages)} gold pages")
        return {page: _boxes(v, f"{where}[{i}]") for i, (page, v) in enumerate(zip(gold_pages, value))}
    boxes = _boxes(value, where)
    if len(gold_pages) != 1:
        raise GoldBoxError(f"{where}: {len(boxes)} box(es) but {len(gold_pages)} gold pages, so the page of each box "
                           "is unknown; give boxes per page ([[box, ...], [box, ...]]) or by page ({page: box})")
    return {gold_pages[0]: boxes}


def trajectory_gold_boxes(trajectory: Trajectory) -> dict[str, list[Box]]:
    """`trajectory.gold["boxes"]` as {page_id: [boxes]} (a single box per page is accepted too)."""
    out = {}
    for page_id, value in ((trajectory.gold or {}).get("boxes") or {}).items():
        try:
            out[page_id] = _boxes(value, f"gold.boxes[{page_id!r}]")
        except GoldBoxError:
            continue
    return out


# --- scoring a trajectory ----------------------------------------------------------------------------------


def _page_size(trajectory: Trajectory, page_id: str) -> tuple[float, float] | None:
    """The full page's size, from the search turn that showed it (its view's region is the whole page)."""
    for turn in trajectory.turns:
        if turn.shown_page_id == page_id and turn.observation is not None:
            return turn.observation.region[2], turn.observation.region[3]
    return None


def crop_grounding(trajectory: Trajectory, turn: Turn, gold: dict[str, list[Box]]) -> dict | None:
    """{"turn", "page_id", "iou", "cover"} of one crop turn against the gold boxes of its page (None if not a crop)."""
    if turn.action != "bbox" or turn.observation is None or turn.bbox_model is None or turn.acted_on is None:
        return None
    page_id = turn.observation.page_id
    boxes = gold.get(page_id)
    if not boxes:
        return {"turn": turn.index, "page_id": page_id, "iou": 0.0, "cover": 0.0}
    size = _page_size(trajectory, page_id)
    if size is None:
        return {"turn": turn.index, "page_id": page_id, "iou": 0.0, "cover": 0.0}
    box = bbox_on_page(profile_of(trajectory).crop, turn.bbox_model, turn.acted_on, size)
    box = [max(0.0, box[0]), max(0.0, box[1]), min(size[0], box[2]), min(size[1], box[3])]
    return {"turn": turn.index, "page_id": page_id, "iou": iou_with_union(box, boxes),
            "cover": cover_of_union(turn.bbox_page or turn.observation.region, boxes)}


def grounding_scores(trajectory: Trajectory) -> dict[str, float]:
    """The episode's grounding metrics (module docstring); {} when it has no gold boxes and no attention scores.

    Keys: grounding_iou, grounding_cover, crops, crops_on_gold (with gold boxes);
    attention_gold_share (where attention maps were computed).
    """
    out: dict[str, float] = {}
    gold = trajectory_gold_boxes(trajectory)
    if gold:
        crops = [c for t in trajectory.turns if (c := crop_grounding(trajectory, t, gold)) is not None]
        on_gold = [c for c in crops if c["page_id"] in gold]
        out["grounding_iou"] = max((c["iou"] for c in on_gold), default=0.0)
        out["grounding_cover"] = max((c["cover"] for c in on_gold), default=0.0)
        out["crops"] = float(len(crops))
        out["crops_on_gold"] = float(len(on_gold))
    shares = [t.scores["attention_gold_share"] for t in trajectory.turns if isinstance(t.scores.get("attention_gold_share"), (int, float))]
    if shares:
        out["attention_gold_share"] = sum(shares) / len(shares)
    return out
