"""Where the model looked: attention maps of a finished trajectory, per turn and per page image.

    run = compute_attention_maps("runs/20260101-...", "/models/Qwen2.5-VL-7B-VRAG", MapRequest(select="bbox"))
    for m in run.maps:                      # one per (turn, image in context)
        m.values, m.extent                  # (rows, cols) grid over page pixels (x0, y0, x1, y1)

How: the trajectory's chat is rebuilt with `build_messages` (the exact messages the model was sent,
whether a vLLM server or this process answered; only the same weights are needed) and run through
Qwen2.5-VL as ONE forward pass. For each turn, the query rows that produced the selected tokens of
its reply (agent/attention_maps.py) attend over the `<|image_pad|>` tokens of every image already in
context; heads and the chosen layers are combined as the `MapRequest` says
(agent/attention_request.py), rows by mean (agent/attention_hooks.py captures only those rows of
only those layers).

Where it runs: `compute_maps(loaded, trajectory, images, request)` does the work from memory alone
(the trajectory record and the exact JPEG bytes; no file is read), in this process or inside the
attention service (agent/attention_service.py); `compute_attention_maps(folder, model_or_backend)`
reads a saved folder, computes here or through a service (agent/attention_client.py), and stores
the result with `store_maps`, so both ways write the same files from the same arrays.

What is stored, in the trajectory folder, per choice (`key = request.key()`):
- `attention-<key>-turnTT-<view stem>.npy`: float32 (grid_h/2, grid_w/2), or (heads, grid_h/2,
  grid_w/2) for a per-head request; row 0 at the top, one cell per visual token. Values are
  attention probabilities (mean over the selected rows: with reduce="mean" and no sink correction a
  map sums to the share of attention that went to that image). The grid covers the view's region,
  so its extent in page pixels is `view.region` (the figures.py convention).
- `attention-<key>.json`: the request, its words (`description`, naming a sink correction), model,
  device, timing, skipped turns, and per turn the map files and region scores: "attention_bbox_share"
  (bbox turns: share of the acted-on image's mass inside the crop the model chose, `bbox_page`),
  "attention_gold_share" (when `trajectory.gold["boxes"]` = {page_id: box or [boxes]} covers a page
  in context: share of all image mass inside gold boxes), "attention_image_mass" (reduce="mean"
  without baseline subtraction: share of the rows' attention on any image). Per-head requests score
  every head: lists, one number per head.
- `attention-tokens.json`: each turn's reply as the model's tokens, `[text, start, end]` with
  character offsets into `Turn.raw_text` (what `MapRequest.token` indexes; the UI shows them).
A request covering every turn with 2-D maps is also made the trajectory's current maps:
`Turn.maps["attention:" + view.file]` names its files, `Turn.scores` holds its scores and
`attention.json` copies its record (what the turn view draws without knowing about choices).
Every name read back is checked to be a plain file name inside the folder.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from agent import attention_maps as am
from agent.attention_cost import ReforwardEstimate, estimate_reforward, up_to_turn  # noqa: F401  (the panel imports estimate_reforward from here)
from agent.attention_request import KEY_RE, TOKEN, MapRequest
from agent.conversation import build_messages, reply_segments, sent_reply
from agent.protocol import profile_of
from agent.qwen_model import LoadedQwenVL, load_qwen_vl
from agent.trajectory import ImageView, Trajectory, Turn, UnsafePathError, member_path

log = logging.getLogger(__name__)

MAP_PREFIX = "attention:"
SETTINGS_FILE = "attention.json"  # the record of the current choice
TOKENS_FILE = "attention-tokens.json"
SCORE_KEYS = ("attention_bbox_share", "attention_gold_share", "attention_image_mass")
_FILE_RE = re.compile(r"^attention(-[A-Za-z0-9_.-]+)?\.(npy|json)$")
_VIEW_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

Progress = Callable[[str, float], None]  # (stage for people, fraction done 0..1); may raise to cancel

AttentionSettings = MapRequest  # the earlier name


class AttentionError(ValueError):
    """The trajectory cannot be re-run for attention (no replies, reply not found in the chat, ...)."""


@dataclass
class AttentionMap:
    turn: int
    view: ImageView
    values: np.ndarray  # (rows, cols) float32, row 0 at the top; (heads, rows, cols) per head

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in page pixels covered by the whole grid: the view's region."""
        return tuple(float(v) for v in self.view.region)  # type: ignore[return-value]

    @property
    def per_head(self) -> bool:
        return self.values.ndim == 3


ReplyTokens = dict[int, list[tuple[str, int, int]]]  # turn -> [(text, start, end)] in Turn.raw_text


@dataclass
class MapsResult:
    """What one computation gives, wherever it ran: the same arrays in this process or a service."""

    request: MapRequest
    maps: list[AttentionMap]
    seconds: float  # the forward pass and capture (model loading and queueing excluded)
    tokens: int  # sequence length of the re-forward
    skipped: dict[int, str] = field(default_factory=dict)  # turn index -> why it has no maps
    reply_tokens: ReplyTokens = field(default_factory=dict)
    sink_cells: dict[str, int] = field(default_factory=dict)  # view file -> sink cells found (sink != "none")
    model: str = ""
    device: str = ""

    # --- over HTTP (agent/attention_service.py) --------------------------------------------------

    def to_wire(self) -> dict:
        """JSON-safe; arrays travel as base64 of their little-endian float32 bytes (exact)."""
        return {
            "request": self.request.to_dict(), "seconds": self.seconds, "tokens": self.tokens,
            "skipped": {str(k): v for k, v in self.skipped.items()},
            "reply_tokens": {str(k): [list(t) for t in v] for k, v in self.reply_tokens.items()},
            "sink_cells": self.sink_cells, "model": self.model, "device": self.device,
            "maps": [{"turn": m.turn, "view": m.view.file, "shape": list(m.values.shape),
                      "data": base64.b64encode(np.ascontiguousarray(m.values, dtype="<f4").tobytes()).decode()} for m in self.maps],
        }

    @classmethod
    def from_wire(cls, d: dict, trajectory: Trajectory) -> "MapsResult":
        """Read a service's answer; every map must name an image of `trajectory` (the caller's own)."""
        views = {v.file: v for v in _context_views(trajectory.turns)}
        maps = []
        for m in d["maps"]:
            if m["view"] not in views:
                raise AttentionError(f"the service sent a map of {m['view']!r}, which this trajectory never showed")
            values = np.frombuffer(base64.b64decode(m["data"]), dtype="<f4").astype(np.float32).reshape(m["shape"])
            maps.append(AttentionMap(turn=int(m["turn"]), view=views[m["view"]], values=values))
        return cls(
            request=MapRequest.from_dict(d["request"]), maps=maps, seconds=float(d["seconds"]), tokens=int(d["tokens"]),
            skipped={int(k): v for k, v in d.get("skipped", {}).items()},
            reply_tokens={int(k): [(str(t), int(a), int(b)) for t, a, b in v] for k, v in d.get("reply_tokens", {}).items()},
            sink_cells=dict(d.get("sink_cells", {})), model=str(d.get("model", "")), device=str(d.get("device", "")),
        )


@dataclass
class AttentionRun:
    """A computed and (normally) stored choice of a trajectory folder."""

    trajectory: Trajectory
    result: MapsResult
    key: str
    scores: dict[int, dict] = field(default_factory=dict)  # turn -> its region scores for this choice

    @property
    def maps(self) -> list[AttentionMap]:
        return self.result.maps

    @property
    def request(self) -> MapRequest:
        return self.result.request

    settings = request

    @property
    def seconds(self) -> float:
        return self.result.seconds

    @property
    def tokens(self) -> int:
        return self.result.tokens

    @property
    def skipped(self) -> dict[int, str]:
        return self.result.skipped


# --- plan: which rows, which columns -------------------------------------------------------------

@dataclass
class _Plan:
    inputs: dict  # model inputs (input_ids, pixel_values, image_grid_thw, ...)
    image_spans: list[tuple[int, int]]  # per image in the chat
    grids: list[list[int]]
    views: list[ImageView]  # per image in the chat, same order
    turns: list[int]  # analysed turns
    rows: list[np.ndarray]  # per analysed turn
    context: list[int]  # per analysed turn: how many images precede it
    skipped: dict[int, str]
    reply_tokens: ReplyTokens
    baseline_rows: list[np.ndarray]  # per image: the rows between it and the next reply (sink != "none")

    @property
    def tokens(self) -> int:
        return int(self.inputs["input_ids"].shape[1])


def _context_views(turns: list[Turn]) -> list[ImageView]:
    """The images these turns showed the model, in the order they entered the chat."""
    return [t.observation for t in turns if t.observation is not None]


def read_images(folder: Path, trajectory: Trajectory) -> dict[str, bytes]:
    """The JPEG bytes of every image the trajectory shows, from its folder (and nothing else)."""
    images = {}
    for view in _context_views(trajectory.turns):
        images[view.file] = _inside(folder, view.file, _VIEW_FILE_RE).read_bytes()
    return images


def _inside(folder: Path, name: str, pattern: re.Pattern = _FILE_RE) -> Path:
    """`folder / name` after checking that `name` is a plain file name of the expected kind that stays
    inside the folder, links followed (agent/trajectory.py member_path)."""
    if not isinstance(name, str) or not pattern.match(name):
        raise AttentionError(f"{name!r} is not a file name this trajectory folder may hold")
    try:
        return member_path(folder, name)
    except UnsafePathError as e:
        raise AttentionError(str(e)) from None


def _reply_pieces(raw: str, sent: str, segments: list[tuple[int, int, int]], offsets: np.ndarray,
                  start: int) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """Token positions of one reply in the chat, and for each its (text, start, end): the text as the
    model saw it, and the characters of the RECORDED reply it covers.

    `sent` is the reply as the chat holds it, starting at character `start`; `segments` say where its
    characters come from in `raw` (agent/conversation.reply_segments): the whole reply when replies
    are sent verbatim (then text == raw[start:end]), its tag pairs joined by newlines under the training
    profile. A token made only of a joining newline covers no recorded character: (text, k, k) at the
    end of the tag before it. One piece per position, so `MapRequest.token` indexes both.
    """
    positions = am.tokens_in_span(offsets, start, start + len(sent))
    pieces, last = [], 0
    for p in positions:
        a, b = max(int(offsets[p, 0]) - start, 0), min(int(offsets[p, 1]) - start, len(sent))
        covered = [(raw_at + max(a, at) - at, raw_at + min(b, at + n) - at) for at, raw_at, n in segments if a < at + n and b > at]
        ra, rb = (covered[0][0], covered[-1][1]) if covered else (last, last)
        pieces.append((sent[a:b], ra, rb))
        last = rb
    return positions, pieces


def plan_reforward(trajectory: Trajectory, images: Mapping[str, bytes] | Path | str, processor, request: MapRequest) -> _Plan:
    """Tokenise the trajectory's chat and pick the query rows and image columns of each turn.

    `images`: the JPEG bytes by ImageView.file (or a trajectory folder to read them from).
    """
    from agent.qwen_processor import render_chat

    if not trajectory.turns:
        raise AttentionError("the trajectory has no turns")
    if isinstance(images, (str, os.PathLike)):
        images = read_images(Path(images), trajectory)
    if request.turn is not None and request.turn not in {t.index for t in trajectory.turns}:
        raise AttentionError(f"the trajectory has no turn {request.turn} (turns 0..{len(trajectory.turns) - 1})")
    trajectory = up_to_turn(trajectory, request.turn)  # one turn: the pass ends at its reply

    def read_image(name: str) -> bytes:
        if name not in images:
            raise AttentionError(f"the image {name!r} the model saw is missing")
        return images[name]

    messages = build_messages(trajectory, read_image)
    last_reply = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    messages = messages[: last_reply + 1]  # later messages cannot change earlier attention
    text, pil_images = render_chat(processor, messages, add_generation_prompt=False)
    inputs = processor(text=[text], images=pil_images or None, return_tensors="pt", return_offsets_mapping=True)
    offsets = inputs.pop("offset_mapping")[0].numpy()
    input_ids = inputs["input_ids"][0].numpy()
    grids = inputs["image_grid_thw"].tolist() if pil_images else []
    merge = processor.image_processor.merge_size
    spans = am.image_token_spans(input_ids, processor.image_token_id, grids, merge)
    expanded = am.expand_image_pads(text, [e - s for s, e in spans], processor.image_token)
    context = profile_of(trajectory).context  # the chat holds each reply as the profile sent it back
    sent = [sent_reply(t.raw_text, context) for t in trajectory.turns]
    replies = am.reply_spans(expanded, sent)

    shown = [t for t in trajectory.turns[:-1] if t.observation is not None]  # the last observation comes after every reply
    if len(shown) != len(spans):
        raise AttentionError(f"the chat has {len(spans)} images but the trajectory records {len(shown)} observations")
    plan = _Plan(inputs=dict(inputs), image_spans=spans, grids=grids, views=[t.observation for t in shown], turns=[], rows=[],
                 context=[], skipped={}, reply_tokens={}, baseline_rows=[])
    seen = 0
    reply_start: dict[int, int] = {}  # turn -> the first token at or after its reply's first character
    real = offsets[:, 1] > offsets[:, 0]
    for turn, text, (start, _) in zip(trajectory.turns, sent, replies):
        positions, plan.reply_tokens[turn.index] = _reply_pieces(turn.raw_text, text, reply_segments(turn.raw_text, context), offsets, start)
        reply_start[turn.index] = int(np.flatnonzero(real & (offsets[:, 0] >= start))[0])  # an empty reply: its <|im_end|>
        wanted = request.turn is None or turn.index == request.turn
        if wanted:
            tokens = _selected_tokens(turn, text, positions, offsets, start, request)
            if seen == 0:
                plan.skipped[turn.index] = "no image in context yet"
            elif tokens is None:
                plan.skipped[turn.index] = f"the reply has no {request.select} text"
            else:
                plan.turns.append(turn.index)
                plan.rows.append(am.producing_rows(tokens))
                plan.context.append(seen)
        if turn.observation is not None:
            seen += 1
    if request.sink != "none":
        for (_, end), turn in zip(spans, shown):
            first = reply_start[turn.index + 1]  # the next reply's first token; the row before it produced it
            rows = np.arange(end, first - 1, dtype=np.int64)
            if rows.size == 0:
                raise AttentionError(f"no chat-template tokens follow the image of turn {turn.index} to serve as its sink baseline")
            plan.baseline_rows.append(rows)
    return plan


def _selected_tokens(turn: Turn, sent: str, positions: np.ndarray, offsets: np.ndarray, start: int,
                     request: MapRequest) -> np.ndarray | None:
    """Token positions of the request's selection in one reply (`sent`, as the chat holds it), or None
    when the reply has none."""
    if request.select == TOKEN:
        if request.token >= positions.size:
            raise AttentionError(f"turn {turn.index}'s reply has {positions.size} tokens; there is no token {request.token}")
        return positions[request.token: request.token + 1]
    span = am.selection_span(sent, request.select)
    if span is None:
        return None
    tokens = am.tokens_in_span(offsets, start + span[0], start + span[1])
    if tokens.size == 0:
        raise AttentionError(f"turn {turn.index}: no tokens found for the selected text")
    return tokens


# --- run -----------------------------------------------------------------------------------------

def _capture(loaded: LoadedQwenVL, plan: _Plan, request: MapRequest, progress: Progress | None) -> np.ndarray:
    """One forward pass; (groups, [heads,] image tokens) attention via row hooks. Groups: the
    analysed turns, then the per-image baselines."""
    import torch

    from agent.attention_hooks import RowAttentionRecorder, layer_progress, run_until_stop

    columns = np.concatenate([np.arange(s, e) for s, e in plan.image_spans])
    layers = request.layer_list(loaded.num_layers)
    recorder = RowAttentionRecorder(layers, plan.rows + plan.baseline_rows, columns, reduce=request.reduce, heads=request.heads)
    inputs = {k: v.to(loaded.model.device) for k, v in plan.inputs.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(loaded.model.dtype)
    decoder = loaded.model.model.language_model.layers

    def on_layer(layer: int, total: int) -> None:
        if progress:
            progress(f"language layer {layer + 1}/{total}", 0.1 + 0.9 * layer / total)

    visual = loaded.model.model.visual.register_forward_pre_hook(lambda *_: progress and progress("vision encoder", 0.05))
    try:
        with loaded.lock, torch.inference_mode(), recorder.attached(decoder), layer_progress(decoder, layers[-1], on_layer):
            run_until_stop(loaded.model.model, **inputs, use_cache=False)
    finally:
        visual.remove()
    return recorder.result()


def _maps_for(plan: _Plan, captured: np.ndarray, merge: int, sink: str) -> tuple[list[AttentionMap], dict[str, int]]:
    bounds = [0]
    for s, e in plan.image_spans:
        bounds.append(bounds[-1] + e - s)

    def grid(group: int, image: int) -> np.ndarray:
        return am.token_grid(captured[group][..., bounds[image]: bounds[image + 1]], plan.grids[image], merge).astype(np.float32)

    baselines = [grid(len(plan.turns) + i, i) for i in range(len(plan.baseline_rows))]
    sink_cells = {}
    for view, baseline in zip(plan.views, baselines):  # per head: a cell that is a sink in any head
        mask = am.sink_cells(baseline) if baseline.ndim == 2 else np.any([am.sink_cells(b) for b in baseline], axis=0)
        sink_cells[view.file] = int(mask.sum())
    maps = []
    for k, turn in enumerate(plan.turns):
        for i in range(plan.context[k]):
            values = grid(k, i)
            if sink != "none":
                values = am.correct_sinks(values, baselines[i], sink).astype(np.float32)
            maps.append(AttentionMap(turn=turn, view=plan.views[i], values=values))
    return maps, sink_cells


def compute_maps(loaded: LoadedQwenVL, trajectory: Trajectory, images: Mapping[str, bytes], request: MapRequest,
                 progress: Progress | None = None, plan: _Plan | None = None) -> MapsResult:
    """The maps of `request` over `trajectory`, from memory alone (no file is read or written).

    `plan`: the `plan_reforward` of these same arguments when the caller already made it (the
    service does, to refuse a job that would not fit before queueing it).
    """
    request.check(loaded.num_layers, loaded.model.config.text_config.num_attention_heads)
    if progress:
        progress("preparing the chat", 0.0)
    plan = plan or plan_reforward(trajectory, images, loaded.processor, request)
    maps: list[AttentionMap] = []
    sink_cells: dict[str, int] = {}
    started = time.perf_counter()
    if plan.turns:
        captured = _capture(loaded, plan, request, progress)
        maps, sink_cells = _maps_for(plan, captured, loaded.processor.image_processor.merge_size, request.sink)
    seconds = time.perf_counter() - started
    log.info("attention maps %s: %d maps over %d turns, %d tokens, %.1f s", request.key(), len(maps), len(plan.turns), plan.tokens, seconds)
    if progress:
        progress("done", 1.0)
    return MapsResult(request=request, maps=maps, seconds=seconds, tokens=plan.tokens, skipped=plan.skipped,
                      reply_tokens=plan.reply_tokens, sink_cells=sink_cells, model=loaded.name, device=loaded.device)


# --- scores --------------------------------------------------------------------------------------

def _gold_boxes(trajectory: Trajectory) -> dict[str, list[list[float]]]:
    boxes = (trajectory.gold or {}).get("boxes") or {}
    out = {}
    for page_id, value in boxes.items():
        value = list(value)
        out[page_id] = [list(b) for b in value] if value and isinstance(value[0], (list, tuple)) else [value]
    return out


def turn_scores(turn: Turn, maps: list[AttentionMap], gold: dict[str, list[list[float]]], request: MapRequest) -> dict:
    """Region attention scores of one turn from its maps (see the module docstring); per-head maps
    give one number per head."""
    per_head = bool(maps) and maps[0].per_head
    share = am.per_head_share if per_head else am.region_share
    scores: dict = {}
    if turn.action == "bbox" and turn.bbox_page is not None and turn.acted_on is not None:
        acted = [m for m in maps if m.view.file == turn.acted_on.file]
        if acted:
            value = share([(acted[0].values, acted[0].extent)], [[turn.bbox_page]])
            if value is not None:
                scores["attention_bbox_share"] = value
    if gold and any(m.view.page_id in gold for m in maps):
        value = share([(m.values, m.extent) for m in maps], [gold.get(m.view.page_id, []) for m in maps])
        if value is not None:
            scores["attention_gold_share"] = value
    if request.reduce == "mean" and request.sink != "baseline":
        mass = sum(m.values.sum(axis=(-2, -1), dtype=np.float64) for m in maps)
        scores["attention_image_mass"] = [float(v) for v in mass] if per_head else float(mass)
    return scores


def result_scores(trajectory: Trajectory, result: MapsResult) -> dict[int, dict]:
    """turn -> its region scores, for every turn with maps."""
    gold, by_turn = _gold_boxes(trajectory), {t.index: t for t in trajectory.turns}
    return {i: turn_scores(by_turn[i], [m for m in result.maps if m.turn == i], gold, result.request)
            for i in sorted({m.turn for m in result.maps})}


# --- storing and loading choices -----------------------------------------------------------------

def map_file(key: str, turn: int, view: ImageView) -> str:
    return f"attention-{key}-turn{turn:02d}-{Path(view.file).stem}.npy"


def record_file(key: str) -> str:
    return f"attention-{key}.json"


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _save_npy(path: Path, values: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, values)
    _write_atomic(path, write)


def _save_json(path: Path, data: dict) -> None:
    _write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8"))


def is_current(request: MapRequest) -> bool:
    """Whether storing this choice also makes it the trajectory's current maps (Turn.maps)."""
    return request.turn is None and not request.per_head


def store_maps(folder: Path, trajectory: Trajectory, result: MapsResult, extra: dict | None = None) -> AttentionRun:
    """Write a result's maps and record as its choice (files first, record last), the reply tokens,
    and, for a choice covering every turn with 2-D maps, make it current (see the module docstring)."""
    folder = Path(folder)
    request, key = result.request, result.request.key()
    scores = result_scores(trajectory, result)
    turns: dict[str, dict] = {}
    for turn_index, turn_score in scores.items():
        files = {}
        for m in (m for m in result.maps if m.turn == turn_index):
            name = map_file(key, m.turn, m.view)
            _save_npy(_inside(folder, name), m.values)
            files[m.view.file] = name
        turns[str(turn_index)] = {"maps": files, "scores": turn_score}
    record = {
        "key": key, "request": request.to_dict(), "description": request.describe(), "sink": request.sink,
        "model": result.model, "device": result.device, "seconds": round(result.seconds, 3), "tokens": result.tokens,
        "skipped": {str(k): v for k, v in result.skipped.items()}, "sink_cells": result.sink_cells, "turns": turns,
        **(extra or {}), "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    tokens = load_reply_tokens(folder) | result.reply_tokens  # a one-turn result knows the turns up to its own
    _save_json(_inside(folder, TOKENS_FILE), {"model": result.model, "turns": {str(k): [list(t) for t in v] for k, v in sorted(tokens.items())}})
    _save_json(_inside(folder, record_file(key)), record)
    if is_current(request):
        for old in folder.glob("attention-turn*.npy"):  # the single-choice files of earlier versions
            old.unlink()
        for turn in trajectory.turns:
            turn.maps = {k: v for k, v in turn.maps.items() if not k.startswith(MAP_PREFIX)}
            turn.scores = {k: v for k, v in turn.scores.items() if k not in SCORE_KEYS}
            entry = turns.get(str(turn.index))
            if entry:
                turn.maps.update({MAP_PREFIX + file: name for file, name in entry["maps"].items()})
                turn.scores.update(entry["scores"])
        _save_json(_inside(folder, SETTINGS_FILE), record | {"settings": request.to_dict()})
        trajectory.save(folder)
    return AttentionRun(trajectory=trajectory, result=result, key=key, scores=scores)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("cannot read %s: %s", path, e)
        return None
    return data if isinstance(data, dict) else None


def stored_choices(folder) -> list[dict]:
    """The records of every stored choice of a trajectory folder, newest first."""
    records = []
    for path in Path(folder).glob("attention-*.json"):
        key = path.name[len("attention-"):-len(".json")]
        if path.name == TOKENS_FILE or not KEY_RE.match(key):
            continue
        record = _read_json(path)
        if record and record.get("key") == key:
            records.append(record)
    return sorted(records, key=lambda r: str(r.get("created_at", "")), reverse=True)


@dataclass
class StoredChoice:
    record: dict
    maps: list[AttentionMap]
    scores: dict[int, dict]  # turn -> region scores

    @property
    def request(self) -> MapRequest:
        return MapRequest.from_dict(self.record["request"])


def load_choice(folder, trajectory: Trajectory, request: MapRequest | str, turn: int | None = None) -> StoredChoice | None:
    """A stored choice (by request or key), maps of one turn or all; None when it was never computed."""
    folder = Path(folder)
    key = request.key() if isinstance(request, MapRequest) else str(request)
    if not KEY_RE.match(key) or not (folder / record_file(key)).is_file():
        return None
    record = _read_json(_inside(folder, record_file(key)))
    if record is None:
        return None
    views = {v.file: v for v in _context_views(trajectory.turns)}
    maps, scores = [], {}
    for turn_key, entry in record.get("turns", {}).items():
        if turn is not None and int(turn_key) != turn:
            continue
        scores[int(turn_key)] = entry.get("scores", {})
        for file, name in entry.get("maps", {}).items():
            values = _load_npy(folder, name)
            if file in views and values is not None:
                maps.append(AttentionMap(turn=int(turn_key), view=views[file], values=values))
    return StoredChoice(record=record, maps=maps, scores=scores)


def _load_npy(folder: Path, name: str) -> np.ndarray | None:
    try:
        return np.load(_inside(folder, name), allow_pickle=False)
    except (AttentionError, OSError, ValueError) as e:
        log.warning("skipping attention map %r of %s: %s", name, folder, e)
        return None


def load_attention_maps(folder, trajectory: Trajectory, turn: int | None = None) -> list[AttentionMap]:
    """The current maps (Turn.maps) of one turn (or all turns), each with its view and page extent."""
    views = {v.file: v for v in _context_views(trajectory.turns)}
    out = []
    for t in trajectory.turns:
        if turn is not None and t.index != turn:
            continue
        for key, name in t.maps.items():
            if key.startswith(MAP_PREFIX) and key[len(MAP_PREFIX):] in views:
                values = _load_npy(Path(folder), name)
                if values is not None:
                    out.append(AttentionMap(turn=t.index, view=views[key[len(MAP_PREFIX):]], values=values))
    return out


def load_reply_tokens(folder) -> ReplyTokens:
    """Each turn's reply as tokens, from any earlier computation ({} before the first)."""
    path = Path(folder) / TOKENS_FILE
    data = _read_json(path) if path.is_file() else None
    if not data:
        return {}
    return {int(k): [(str(t), int(a), int(b)) for t, a, b in v] for k, v in data.get("turns", {}).items()}


# --- the whole thing, for a folder ---------------------------------------------------------------

def compute_attention_maps(
    folder,
    model,
    request: MapRequest | None = None,
    *,
    select: str = "action",
    layers: tuple[int, int] | None = None,
    reduce: str = "mean",
    device: str = "cpu",
    dtype: str = "auto",
    attn_implementation: str = "sdpa",
    save: bool = True,
    progress: Progress | None = None,
) -> AttentionRun:
    """Compute, store and return the maps of `request` (or select/layers/reduce) for a saved trajectory.

    `model`: a model folder / cached hub id (loaded here with `device`, `dtype`,
    `attn_implementation`), an already `LoadedQwenVL` (the app keeps one loaded), or a backend with
    `compute(trajectory, images, request, progress)` such as agent/attention_client.py's
    `AttentionService` (the maps are then computed where the service runs). The attention of the
    captured rows is always computed with eager's formula whatever the forward uses; "sdpa" keeps
    the rest of the pass from materialising seq x seq matrices.
    Raises ModelFolderError (a PolicyError) when the weights are absent, AttentionError when the
    trajectory cannot be re-run, ValueError for a request outside the model.
    """
    folder = Path(folder)
    request = request or MapRequest(select=select, layers=tuple(layers) if layers is not None else None, reduce=reduce)
    trajectory = Trajectory.load(folder)
    images = read_images(folder, trajectory)
    if hasattr(model, "compute") and not isinstance(model, LoadedQwenVL):
        result = model.compute(trajectory, images, request, progress=progress)
    else:
        loaded = model if isinstance(model, LoadedQwenVL) else load_qwen_vl(model, device=device, dtype=dtype, attn_implementation=attn_implementation)
        result = compute_maps(loaded, trajectory, images, request, progress)
    if save:
        return store_maps(folder, trajectory, result)
    return AttentionRun(trajectory=trajectory, result=result, key=request.key(), scores=result_scores(trajectory, result))
