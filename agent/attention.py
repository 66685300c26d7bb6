"""Where the model looked: attention maps of a finished trajectory, per turn and per page image.

    run = compute_attention_maps("runs/20260101-...", "/models/Qwen2.5-VL-7B-VRAG", select="bbox")
    for m in run.maps:                      # one per (turn, image in context)
        m.values, m.extent                  # (rows, cols) grid over page pixels (x0, y0, x1, y1)

How: the trajectory's chat is rebuilt with `build_messages` (the exact messages the model was sent,
whether a vLLM server or this process answered; only the same weights are needed locally) and run
through Qwen2.5-VL as ONE forward pass. For each turn, the query rows that produced the selected
tokens of its reply (agent/attention_maps.py) attend over the `<|image_pad|>` tokens of every image
already in context; heads and a chosen layer range are combined by mean or max, rows by mean
(agent/attention_hooks.py captures only those rows of only those layers).

What is stored, in the trajectory folder:
- one `.npy` per (turn, image): float32 array (grid_h/2, grid_w/2), row 0 at the top, one cell per
  visual token; `Turn.maps["attention:" + view.file] = "attention-turnTT-<view stem>.npy"`. Values
  are attention probabilities (mean over the selected rows: with reduce="mean" the whole map sums
  to the share of attention that went to that image). The grid covers the view's region, so its
  extent in page pixels is `view.region` (the figures.py convention); `load_attention_maps` pairs
  them up.
- `Turn.scores`: "attention_bbox_share" (bbox turns: share of the acted-on image's mass inside the
  crop the model chose, `bbox_page`), "attention_gold_share" (when `trajectory.gold["boxes"]` =
  {page_id: box or [boxes]} covers a page in context: share of all image mass inside gold boxes),
  "attention_image_mass" (reduce="mean" only: share of the rows' attention on any image).
- `attention.json`: the settings, model and timing of the run that wrote the maps.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from agent import attention_maps as am
from agent.conversation import build_messages
from agent.qwen_model import LoadedQwenVL, check_qwen25_vl, load_qwen_vl, resolve_model_dir
from agent.trajectory import ImageView, Trajectory, Turn, map_path, member_path

log = logging.getLogger(__name__)

MAP_PREFIX = "attention:"
SETTINGS_FILE = "attention.json"
SCORE_KEYS = ("attention_bbox_share", "attention_gold_share", "attention_image_mass")


class AttentionError(ValueError):
    """The trajectory cannot be re-run for attention (no replies, reply not found in the chat, ...)."""


@dataclass(frozen=True)
class AttentionSettings:
    select: str = "action"  # "action", "bbox", "answer", "search" or "reply" (agent/attention_maps.py)
    layers: tuple[int, int] | None = None  # first and last decoder layer, inclusive; None: all
    reduce: str = "mean"  # over heads and over layers: "mean" or "max"

    def __post_init__(self):
        if self.select not in am.SELECTIONS:
            raise ValueError(f"select must be one of {am.SELECTIONS}, got {self.select!r}")
        if self.reduce not in am.REDUCTIONS:
            raise ValueError(f"reduce must be one of {am.REDUCTIONS}, got {self.reduce!r}")

    def layer_list(self, num_layers: int) -> list[int]:
        first, last = self.layers if self.layers is not None else (0, num_layers - 1)
        if not 0 <= first <= last < num_layers:
            raise ValueError(f"layers {self.layers} must satisfy 0 <= first <= last < {num_layers} (the model's layer count)")
        return list(range(first, last + 1))


@dataclass
class AttentionMap:
    turn: int
    view: ImageView
    values: np.ndarray  # (rows, cols) float32, row 0 at the top

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in page pixels covered by the whole grid: the view's region."""
        return tuple(float(v) for v in self.view.region)  # type: ignore[return-value]


@dataclass
class AttentionRun:
    trajectory: Trajectory
    maps: list[AttentionMap]
    settings: AttentionSettings
    seconds: float  # the forward pass and capture (model loading excluded)
    tokens: int  # sequence length of the re-forward
    skipped: dict[int, str] = field(default_factory=dict)  # turn index -> why it has no maps


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


def _context_views(turns: list[Turn]) -> list[ImageView]:
    """The images these turns showed the model, in the order they entered the chat."""
    return [t.observation for t in turns if t.observation is not None]


def plan_reforward(trajectory: Trajectory, folder: Path, processor, settings: AttentionSettings) -> _Plan:
    """Tokenise the trajectory's chat and pick the query rows and image columns of each turn."""
    from agent.qwen_processor import render_chat

    if not trajectory.turns:
        raise AttentionError("the trajectory has no turns")
    messages = build_messages(trajectory, lambda name: member_path(folder, name).read_bytes())
    last_reply = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    messages = messages[: last_reply + 1]  # later messages cannot change earlier attention
    text, images = render_chat(processor, messages, add_generation_prompt=False)
    inputs = processor(text=[text], images=images or None, return_tensors="pt", return_offsets_mapping=True)
    offsets = inputs.pop("offset_mapping")[0].numpy()
    input_ids = inputs["input_ids"][0].numpy()
    grids = inputs["image_grid_thw"].tolist() if images else []
    merge = processor.image_processor.merge_size
    spans = am.image_token_spans(input_ids, processor.image_token_id, grids, merge)
    expanded = am.expand_image_pads(text, [e - s for s, e in spans], processor.image_token)
    replies = am.reply_spans(expanded, [t.raw_text for t in trajectory.turns])

    views = _context_views(trajectory.turns[:-1])  # the last turn's observation comes after every reply
    if len(views) != len(spans):
        raise AttentionError(f"the chat has {len(spans)} images but the trajectory records {len(views)} observations")
    plan = _Plan(inputs=dict(inputs), image_spans=spans, grids=grids, views=views, turns=[], rows=[], context=[], skipped={})
    seen = 0
    for turn, (start, _) in zip(trajectory.turns, replies):
        if seen == 0:
            plan.skipped[turn.index] = "no image in context yet"
        elif (span := am.selection_span(turn.raw_text, settings.select)) is None:
            plan.skipped[turn.index] = f"the reply has no {settings.select} text"
        else:
            tokens = am.tokens_in_span(offsets, start + span[0], start + span[1])
            if tokens.size == 0:
                raise AttentionError(f"turn {turn.index}: no tokens found for the selected text")
            plan.turns.append(turn.index)
            plan.rows.append(am.producing_rows(tokens))
            plan.context.append(seen)
        if turn.observation is not None:
            seen += 1
    return plan


# --- run -----------------------------------------------------------------------------------------

def _capture(loaded: LoadedQwenVL, plan: _Plan, settings: AttentionSettings) -> np.ndarray:
    """One forward pass; (analysed turns, image tokens) attention, via row hooks."""
    import torch

    from agent.attention_hooks import RowAttentionRecorder, run_until_stop

    columns = np.concatenate([np.arange(s, e) for s, e in plan.image_spans])
    layers = settings.layer_list(loaded.num_layers)
    recorder = RowAttentionRecorder(layers, plan.rows, columns, reduce=settings.reduce)
    inputs = {k: v.to(loaded.model.device) for k, v in plan.inputs.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(loaded.model.dtype)
    with loaded.lock, torch.inference_mode(), recorder.attached(loaded.model.model.language_model.layers):
        run_until_stop(loaded.model.model, **inputs, use_cache=False)
    return recorder.result()


def _maps_for(plan: _Plan, captured: np.ndarray, merge: int) -> list[AttentionMap]:
    maps, offset = [], [0]
    for s, e in plan.image_spans:
        offset.append(offset[-1] + e - s)
    for k, turn in enumerate(plan.turns):
        for i in range(plan.context[k]):
            values = am.token_grid(captured[k, offset[i]: offset[i + 1]], plan.grids[i], merge)
            maps.append(AttentionMap(turn=turn, view=plan.views[i], values=values.astype(np.float32)))
    return maps


def _gold_boxes(trajectory: Trajectory) -> dict[str, list[list[float]]]:
    boxes = (trajectory.gold or {}).get("boxes") or {}
    out = {}
    for page_id, value in boxes.items():
        value = list(value)
        out[page_id] = [list(b) for b in value] if value and isinstance(value[0], (list, tuple)) else [value]
    return out


def turn_scores(turn: Turn, maps: list[AttentionMap], gold: dict[str, list[list[float]]], reduce: str) -> dict[str, float]:
    """Region attention scores of one turn from its maps (see the module docstring)."""
    scores: dict[str, float] = {}
    if turn.action == "bbox" and turn.bbox_page is not None and turn.acted_on is not None:
        acted = [m for m in maps if m.view.file == turn.acted_on.file]
        if acted:
            share = am.region_share([(acted[0].values, acted[0].extent)], [[turn.bbox_page]])
            if share is not None:
                scores["attention_bbox_share"] = share
    if gold and any(m.view.page_id in gold for m in maps):
        share = am.region_share([(m.values, m.extent) for m in maps], [gold.get(m.view.page_id, []) for m in maps])
        if share is not None:
            scores["attention_gold_share"] = share
    if reduce == "mean":
        scores["attention_image_mass"] = float(sum(m.values.sum(dtype=np.float64) for m in maps))
    return scores


def map_file(turn: int, view: ImageView) -> str:
    return f"attention-turn{turn:02d}-{Path(view.file).stem}.npy"


def _store(folder: Path, trajectory: Trajectory, maps: list[AttentionMap], settings: AttentionSettings, extra: dict) -> None:
    """Replace earlier attention maps and scores with these, and save the trajectory folder."""
    for old in folder.glob("attention-turn*.npy"):
        old.unlink()
    gold = _gold_boxes(trajectory)
    for turn in trajectory.turns:
        turn.maps = {k: v for k, v in turn.maps.items() if not k.startswith(MAP_PREFIX)}
        turn.scores = {k: v for k, v in turn.scores.items() if k not in SCORE_KEYS}
        mine = [m for m in maps if m.turn == turn.index]
        for m in mine:
            name = map_file(m.turn, m.view)
            np.save(folder / name, m.values)
            turn.maps[MAP_PREFIX + m.view.file] = name
        if mine:
            turn.scores.update(turn_scores(turn, mine, gold, settings.reduce))
    record = {"settings": asdict(settings), **extra, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (folder / SETTINGS_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
    trajectory.save(folder)


def compute_attention_maps(
    folder,
    model: str | LoadedQwenVL,
    *,
    select: str = "action",
    layers: tuple[int, int] | None = None,
    reduce: str = "mean",
    device: str = "cpu",
    dtype: str = "auto",
    attn_implementation: str = "sdpa",
    save: bool = True,
) -> AttentionRun:
    """Compute, store and return the attention maps of every turn of a saved trajectory.

    `model`: a model folder / cached hub id (loaded here with `device`, `dtype`,
    `attn_implementation`), or an already `LoadedQwenVL` (the app keeps one loaded). The attention
    of the captured rows is always computed with eager's formula whatever the forward uses; "sdpa"
    keeps the rest of the pass from materialising seq x seq matrices.
    Raises ModelFolderError (a PolicyError) when the weights are absent, AttentionError when the
    trajectory cannot be re-run.
    """
    folder = Path(folder)
    settings = AttentionSettings(select=select, layers=tuple(layers) if layers is not None else None, reduce=reduce)
    trajectory = Trajectory.load(folder)
    loaded = model if isinstance(model, LoadedQwenVL) else load_qwen_vl(model, device=device, dtype=dtype, attn_implementation=attn_implementation)
    settings.layer_list(loaded.num_layers)  # fail before the forward on a bad range
    plan = plan_reforward(trajectory, folder, loaded.processor, settings)
    maps: list[AttentionMap] = []
    started = time.perf_counter()
    if plan.turns:
        captured = _capture(loaded, plan, settings)
        maps = _maps_for(plan, captured, loaded.processor.image_processor.merge_size)
    seconds = time.perf_counter() - started
    tokens = int(plan.inputs["input_ids"].shape[1])
    log.info("attention maps for %s: %d maps over %d turns, %d tokens, %.1f s", folder.name, len(maps), len(plan.turns), tokens, seconds)
    if save:
        extra = {"model": loaded.name, "device": loaded.device, "seconds": round(seconds, 3), "tokens": tokens, "skipped": {str(k): v for k, v in plan.skipped.items()}}
        _store(folder, trajectory, maps, settings, extra)
    return AttentionRun(trajectory=trajectory, maps=maps, settings=settings, seconds=seconds, tokens=tokens, skipped=plan.skipped)


def load_attention_maps(folder, trajectory: Trajectory, turn: int | None = None) -> list[AttentionMap]:
    """The stored maps of one turn (or all turns), each with its view and page extent.

    Files are read only inside `folder` (trajectory.map_path); a map whose file is gone is left out.
    """
    views = {v.file: v for v in _context_views(trajectory.turns)}
    out = []
    for t in trajectory.turns:
        if turn is not None and t.index != turn:
            continue
        for key, name in t.maps.items():
            path = map_path(folder, name)  # UnsafePathError for a name leading outside the folder
            if key.startswith(MAP_PREFIX) and key[len(MAP_PREFIX):] in views and path.is_file():
                out.append(AttentionMap(turn=t.index, view=views[key[len(MAP_PREFIX):]], values=np.load(path)))
    return out


# --- how long will it take -----------------------------------------------------------------------

@dataclass
class ReforwardEstimate:
    seconds: float
    load_seconds: float
    forward_seconds: float
    tokens: int
    image_tokens: int
    images: int
    layers_run: int

    def summary(self) -> str:
        load = f"load {self.load_seconds:.0f} s + " if self.load_seconds else ""
        return f"about {_nice(self.seconds)} ({load}forward {self.forward_seconds:.0f} s over {self.tokens:,} tokens, {self.images} images, {self.layers_run} layers)"


def _nice(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def measure_flops(device: str = "cpu", dtype: str = "float32", size: int = 768) -> float:
    """Matrix-multiply throughput of `device` (FLOP/s), measured in ~0.1 s."""
    import torch

    torch_dtype = getattr(torch, dtype)
    a = torch.randn(size, size, device=device, dtype=torch_dtype)
    b = torch.randn(size, size, device=device, dtype=torch_dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    reps, started = 3, time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return reps * 2 * size**3 / max(time.perf_counter() - started, 1e-6)


def _image_tokens(view: ImageView, min_pixels: int, max_pixels: int) -> int:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    w, h = view.input_size
    rh, rw = smart_resize(h, w, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
    return (rh // 28) * (rw // 28)


def _weights_bytes(model_dir: Path) -> int:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
        if total:
            return int(total)
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))


def estimate_reforward(
    trajectory: Trajectory,
    model,
    *,
    device: str = "cpu",
    layers: tuple[int, int] | None = None,
    loaded: bool = False,
    flops_per_second: float | None = None,
) -> ReforwardEstimate:
    """Seconds `compute_attention_maps` should take, from config.json and the trajectory alone.

    Cost model: transformer FLOPs (language layers up to the last chosen one, the vision encoder on
    every image) over the measured matmul speed at 50% efficiency, plus fixed per-image and
    per-layer overheads, plus loading (weights at ~400 MB/s, ~3 s for the tokenizer) unless
    `loaded`. Expect the right order of magnitude, not a stopwatch.
    """
    model_dir = model.model_dir if isinstance(model, LoadedQwenVL) else resolve_model_dir(model)
    config = check_qwen25_vl(model_dir)
    text, vision = config.get("text_config", config), config.get("vision_config", {})
    pre_file = model_dir / "preprocessor_config.json"
    pre = json.loads(pre_file.read_text()) if pre_file.is_file() else {}
    size = pre.get("size") or {}
    min_pixels = pre.get("min_pixels") or size.get("shortest_edge") or 56 * 56
    max_pixels = pre.get("max_pixels") or size.get("longest_edge") or 28 * 28 * 1280

    views = _context_views(trajectory.turns[:-1])
    image_tokens = sum(_image_tokens(v, min_pixels, max_pixels) for v in views)
    chars = len(trajectory.question.encode()) + sum(len(t.raw_text.encode()) + len((t.feedback or "").encode()) for t in trajectory.turns)
    tokens = image_tokens + chars // 4 + 400 + 12 * len(trajectory.turns)  # prompt template ~400 tokens

    d, inter = text["hidden_size"], text["intermediate_size"]
    heads, kv = text["num_attention_heads"], text.get("num_key_value_heads", text["num_attention_heads"])
    n_layers = text["num_hidden_layers"]
    layers_run = (layers[1] + 1) if layers else n_layers
    hd = d // heads
    per_layer = 2 * tokens * (2 * d * heads * hd + 2 * d * kv * hd + 3 * d * inter) + 2 * tokens * tokens * heads * hd
    dv, iv, depth = vision.get("hidden_size", 1280), vision.get("intermediate_size", 3420), vision.get("depth", 32)
    patches = 4 * image_tokens
    vision_flops = depth * (2 * patches * (4 * dv * dv + 3 * dv * iv) + 4 * patches * 64 * dv)
    flops = layers_run * per_layer + vision_flops
    dtype = str(config.get("torch_dtype") or config.get("dtype") or text.get("dtype") or "float32")
    speed = flops_per_second or measure_flops(device, dtype if dtype in ("float32", "bfloat16", "float16") else "float32")
    forward = flops / (0.5 * speed) + 0.5 + 0.15 * len(views) + 0.005 * layers_run * max(1, len(trajectory.turns))
    load = 0.0 if loaded or isinstance(model, LoadedQwenVL) else 3.0 + _weights_bytes(model_dir) / 400e6
    return ReforwardEstimate(
        seconds=load + forward, load_seconds=load, forward_seconds=forward, tokens=int(tokens),
        image_tokens=int(image_tokens), images=len(views), layers_run=int(layers_run),
    )
