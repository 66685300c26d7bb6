"""How long an attention re-forward should take and how much memory it needs, before running it.

Both come from the model's shape (config.json and preprocessor_config.json, read once into a
`ModelShape`) and the trajectory alone (its image sizes and text), so the app can show the cost on
a laptop without the weights, and the attention service can refuse a job that would not fit before
it starts. Expect the right order of magnitude, not a stopwatch; bench/attention_service.py puts
the estimates beside measurements.

Time: transformer FLOPs (language layers up to the last chosen one, the vision encoder on every
image) over the device's measured matmul speed at 50% efficiency, plus fixed per-image and
per-layer overheads, plus loading (weights at ~400 MB/s, ~3 s for the tokenizer) unless the model
is already loaded, plus the wait behind jobs queued first on a service.

Memory (`memory_bytes`), beyond the weights: the forward keeps only one layer's activations at a
time (no KV cache, the LM head never runs), so the peak is the larger of the vision encoder's and
one language layer's working set, plus what lives through the pass (pixel values, input
embeddings), plus the capture's own chunk (agent/attention_hooks.py `max_elements`). Eager
attention adds (heads x tokens x tokens) scores per layer; sdpa does not.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.trajectory import ImageView, Trajectory

PATCH = 14  # Qwen2.5-VL's patch size; 2x2 patches merge into one visual token
PROMPT_TOKENS = 168  # the reference prompt through the chat template, without the question (tokenised: 172 with a 17-character question)
TOKENS_PER_TURN = 12  # chat-template markers around each reply and observation
FIXED_BYTES = 64 * 2**20  # processor, Python objects and allocator slack around one pass (bench/attention_service.py)
CAPTURE_ELEMENTS = 1 << 24  # agent/attention_hooks.py RowAttentionRecorder's default max_elements
REPLY_ROWS = 512  # query rows of one group when not known yet: a long reply
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelShape:
    """What the cost model needs of a Qwen2.5-VL checkpoint."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    max_positions: int
    vision_hidden: int
    vision_intermediate: int
    vision_depth: int
    vision_heads: int
    min_pixels: int
    max_pixels: int
    dtype: str  # of the weights: "bfloat16", "float32", ...
    weights_bytes: int

    @property
    def dtype_bytes(self) -> int:
        return _DTYPE_BYTES.get(self.dtype, 4)

    @classmethod
    def from_config(cls, name: str, config: dict, preprocessor: dict, weights_bytes: int, dtype: str | None = None) -> "ModelShape":
        text, vision = config.get("text_config", config), config.get("vision_config", {})
        size = preprocessor.get("size") or {}
        heads = text["num_attention_heads"]
        return cls(
            name=name,
            hidden=text["hidden_size"],
            intermediate=text["intermediate_size"],
            layers=text["num_hidden_layers"],
            heads=heads,
            kv_heads=text.get("num_key_value_heads", heads),
            max_positions=int(text.get("max_position_embeddings") or config.get("max_position_embeddings") or 32768),
            vision_hidden=vision.get("hidden_size", 1280),
            vision_intermediate=vision.get("intermediate_size", 3420),
            vision_depth=vision.get("depth", 32),
            vision_heads=vision.get("num_heads", 16),
            min_pixels=preprocessor.get("min_pixels") or size.get("shortest_edge") or 56 * 56,
            max_pixels=preprocessor.get("max_pixels") or size.get("longest_edge") or 28 * 28 * 1280,
            dtype=str(dtype or config.get("torch_dtype") or config.get("dtype") or text.get("dtype") or "float32"),
            weights_bytes=int(weights_bytes),
        )

    @classmethod
    def from_model_dir(cls, model_dir: Path, name: str | None = None) -> "ModelShape":
        from agent.qwen_model import check_qwen25_vl

        config = check_qwen25_vl(model_dir)
        pre_file = model_dir / "preprocessor_config.json"
        preprocessor = json.loads(pre_file.read_text()) if pre_file.is_file() else {}
        return cls.from_config(name or str(model_dir), config, preprocessor, _weights_bytes(model_dir))

    @classmethod
    def from_loaded(cls, loaded) -> "ModelShape":
        """From a LoadedQwenVL in memory (no file read): the attention service uses this."""
        config = loaded.model.config.to_dict()
        size = loaded.processor.image_processor.size
        preprocessor = {"min_pixels": size.shortest_edge, "max_pixels": size.longest_edge}
        weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        dtype = str(loaded.model.dtype).removeprefix("torch.")
        return cls.from_config(loaded.name, config, preprocessor, weights, dtype=dtype)


def _weights_bytes(model_dir: Path) -> int:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
        if total:
            return int(total)
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))


def image_tokens(view: ImageView, shape: ModelShape) -> int:
    """Visual tokens of one image, by the processor's own rounding (smart_resize)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    w, h = view.input_size
    rh, rw = smart_resize(h, w, factor=2 * PATCH, min_pixels=shape.min_pixels, max_pixels=shape.max_pixels)
    return (rh // (2 * PATCH)) * (rw // (2 * PATCH))


def up_to_turn(trajectory: Trajectory, turn: int | None) -> Trajectory:
    """The part of a trajectory a re-forward for `turn` needs: its turns up to that one (later
    messages cannot change earlier attention). None: the whole trajectory."""
    if turn is None:
        return trajectory
    return dataclasses.replace(trajectory, turns=[t for t in trajectory.turns if t.index <= turn])


def context_views(trajectory: Trajectory) -> list[ImageView]:
    """The images a re-forward sees: every observation but the last turn's (it comes after every reply)."""
    return [t.observation for t in trajectory.turns[:-1] if t.observation is not None]


def estimate_tokens(trajectory: Trajectory, shape: ModelShape) -> tuple[int, list[int]]:
    """(sequence length, visual tokens per image) of the re-forward, without tokenising."""
    per_image = [image_tokens(v, shape) for v in context_views(trajectory)]
    chars = len(trajectory.question.encode()) + sum(len(t.raw_text.encode()) + len((t.feedback or "").encode()) for t in trajectory.turns)
    return sum(per_image) + chars // 4 + PROMPT_TOKENS + TOKENS_PER_TURN * len(trajectory.turns), per_image


# --- memory --------------------------------------------------------------------------------------

def memory_bytes(shape: ModelShape, tokens: int, per_image_tokens: list[int], attn_implementation: str = "sdpa",
                 rows: int = REPLY_ROWS, capture_elements: int = CAPTURE_ELEMENTS) -> dict[str, int]:
    """Peak memory of one re-forward beyond the weights, by part (bytes); "total" sums the peak.

    `rows`: the most query rows of one group (a turn's selected tokens); the capture works on
    chunks of at most `capture_elements` (heads x rows x tokens) probabilities.
    """
    b, t = shape.dtype_bytes, int(tokens)
    head_dim = shape.hidden // shape.heads
    eager = attn_implementation == "eager"
    patches = [4 * n for n in per_image_tokens]
    p = sum(patches)
    language = t * (6 * shape.hidden + 3 * shape.intermediate + 2 * (shape.heads + 2 * shape.kv_heads) * head_dim) * b
    if eager:
        language += shape.heads * t * t * (2 * b + 4)
    vision = p * (6 * shape.vision_hidden + 3 * shape.vision_intermediate) * b
    if eager:  # the full-attention blocks attend within each image
        vision += max(patches, default=0) ** 2 * shape.vision_heads * (2 * b + 4)
    through = p * 3 * 2 * PATCH * PATCH * (4 + b) + 2 * t * shape.hidden * b  # pixel values; input embeddings
    chunk = min(capture_elements, shape.heads * max(1, rows) * t)
    capture = shape.heads * t * head_dim * 4 + 3 * chunk * 4  # float32 keys; scores, mask and softmax of a chunk
    parts = {"language_layer": language, "vision": vision, "through_pass": through, "capture": capture, "fixed": FIXED_BYTES}
    parts["total"] = max(language + capture, vision) + through + FIXED_BYTES
    return {k: int(v) for k, v in parts.items()}


def available_bytes(device: str) -> int:
    """Memory free for a pass on `device` now: CUDA's free memory, or the system's MemAvailable."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise OSError("cannot read MemAvailable from /proc/meminfo")


# --- time ----------------------------------------------------------------------------------------

@dataclass
class ReforwardEstimate:
    seconds: float  # wait + load + forward
    load_seconds: float
    forward_seconds: float
    tokens: int
    image_tokens: int
    images: int
    layers_run: int
    memory_bytes: int = 0  # peak beyond the weights (memory_bytes()["total"])
    where: str = "this process"  # where it will run, for people: "this process (cpu)", "service http://... (cuda)"
    wait_seconds: float = 0.0  # behind jobs already queued on a service

    def summary(self) -> str:
        wait = f"wait {_nice(self.wait_seconds)} + " if self.wait_seconds >= 1 else ""
        load = f"load {self.load_seconds:.0f} s + " if self.load_seconds else ""
        memory = f", ~{self.memory_bytes / 2**30:.1f} GB beyond the weights" if self.memory_bytes else ""
        return (f"about {_nice(self.seconds)} in {self.where} ({wait}{load}forward {self.forward_seconds:.0f} s over "
                f"{self.tokens:,} tokens, {self.images} images, {self.layers_run} layers{memory})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ReforwardEstimate":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _nice(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def measure_flops(device: str = "cpu", dtype: str = "float32", size: int = 768) -> float:
    """Matrix-multiply throughput of `device` (FLOP/s), measured in ~0.1 s."""
    import torch

    torch_dtype = getattr(torch, dtype if dtype in _DTYPE_BYTES else "float32")
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


def estimate_for_shape(
    trajectory: Trajectory,
    shape: ModelShape,
    *,
    flops_per_second: float,
    layers: tuple[int, int] | None = None,
    loaded: bool = True,
    tokens: int | None = None,
    attn_implementation: str = "sdpa",
    where: str = "this process",
    wait_seconds: float = 0.0,
) -> ReforwardEstimate:
    """The estimate from a model shape and a known device speed (no file read, no torch call)."""
    guessed, per_image = estimate_tokens(trajectory, shape)
    tokens = int(tokens if tokens is not None else guessed)
    d, inter, heads, kv = shape.hidden, shape.intermediate, shape.heads, shape.kv_heads
    layers_run = (layers[1] + 1) if layers else shape.layers
    hd = d // heads
    per_layer = 2 * tokens * (2 * d * heads * hd + 2 * d * kv * hd + 3 * d * inter) + 2 * tokens * tokens * heads * hd
    dv, iv = shape.vision_hidden, shape.vision_intermediate
    patches = 4 * sum(per_image)
    vision_flops = shape.vision_depth * (2 * patches * (4 * dv * dv + 3 * dv * iv) + 4 * patches * 64 * dv)
    flops = layers_run * per_layer + vision_flops
    images = len(per_image)
    forward = flops / (0.5 * flops_per_second) + 0.5 + 0.15 * images + 0.005 * layers_run * max(1, len(trajectory.turns))
    load = 0.0 if loaded else 3.0 + shape.weights_bytes / 400e6
    memory = memory_bytes(shape, tokens, per_image, attn_implementation)["total"]
    return ReforwardEstimate(
        seconds=wait_seconds + load + forward, load_seconds=load, forward_seconds=forward, tokens=tokens,
        image_tokens=int(sum(per_image)), images=images, layers_run=int(layers_run), memory_bytes=memory,
        where=where, wait_seconds=wait_seconds,
    )


def estimate_reforward(
    trajectory: Trajectory,
    model,
    *,
    device: str = "cpu",
    layers: tuple[int, int] | None = None,
    loaded: bool = False,
    flops_per_second: float | None = None,
    turn: int | None = None,
) -> ReforwardEstimate:
    """Seconds the re-forward of `trajectory` (up to `turn`, if given) should take in THIS process.

    `model`: a LoadedQwenVL (counted as loaded), a model folder or a cached hub id (config files
    only are read; the weights need not be here).
    """
    from agent.qwen_model import LoadedQwenVL, resolve_model_dir

    if isinstance(model, LoadedQwenVL):
        shape, loaded, device = ModelShape.from_loaded(model), True, model.device
    else:
        shape = ModelShape.from_model_dir(resolve_model_dir(model), str(model))
    speed = flops_per_second or measure_flops(device, shape.dtype)
    return estimate_for_shape(up_to_turn(trajectory, turn), shape, flops_per_second=speed, layers=layers, loaded=loaded, where=f"this process ({device})")
