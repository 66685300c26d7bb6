"""Seconds and peak memory of the attention re-forward versus the number of images in context.

    python bench/attention_reforward.py [--max-images 6] [--layers 4] [--heads 8]

Builds a tiny random Qwen2.5-VL (agent/tiny_qwen.py) and trajectories that show 1..N real demo
pages (../shared/corpus/vrag-demo) followed by an answer, then measures, each in a fresh process:
- hooks: `compute_attention_maps(select="reply")` (sdpa forward + row capture, agent/attention_hooks.py),
  the configuration the app uses;
- all-layers: the usual way, one eager forward with `output_attentions=True` keeping every layer.
"peak MB" is the growth of the process's resident-set high-water mark during the call (the mark is
reset just before it through /proc/self/clear_refs), so model loading is not counted.

The tiny model has real token counts and image grids but tiny widths: seconds here are dominated
by the vision encoder and overheads, not by a 7B model's matmuls (see estimate_reforward for those).

    python bench/attention_reforward.py measure --model DIR --trajectory DIR --mode hooks,all-layers --attn eager
prints one JSON line per mode, measured one after the other in that process with the model loaded
once (tests/integration/test_attention_memory.py uses it).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORPUS = ROOT / ".." / "shared" / "corpus" / "vrag-demo"
PAGES = ["slide_1_1024.jpg", "aliyun4_1.jpg", "slide_2_1024.jpg", "aliyun4_2.jpg", "slide_3_1024.jpg", "aliyun4_3.jpg",
         "slide_4_1024.jpg", "aliyun4_4.jpg", "slide_5_1024.jpg", "aliyun4_5.jpg"]


# --- memory --------------------------------------------------------------------------------------

def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    """Reset the resident-set high-water mark (VmHWM) of this process (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_growth_mb(call) -> tuple[float, float]:
    """(seconds, MB the peak RSS rose above the RSS before) of `call()`."""
    gc.collect()
    reset_peak()
    before = _status_kb("VmRSS")
    started = time.perf_counter()
    call()
    seconds = time.perf_counter() - started
    return seconds, (_status_kb("VmHWM") - before) / 1024


# --- one measurement (child process) -------------------------------------------------------------

def measure(model_dir: str, trajectory_dir: str, mode: str, attn_implementation: str) -> dict:
    import torch

    from agent.attention import AttentionSettings, compute_attention_maps, plan_reforward
    from agent.qwen_model import load_qwen_vl
    from agent.trajectory import Trajectory

    loaded = load_qwen_vl(model_dir, attn_implementation=attn_implementation)
    trajectory = Trajectory.load(trajectory_dir)
    result = {}

    def hooks():
        run = compute_attention_maps(trajectory_dir, loaded, select="reply", save=False)
        result["tokens"] = run.tokens

    def all_layers():
        plan = plan_reforward(trajectory, Path(trajectory_dir), loaded.processor, AttentionSettings(select="reply"))
        with torch.inference_mode():
            out = loaded.model.model(**plan.inputs, output_attentions=True, use_cache=False)
        result["tokens"] = int(plan.inputs["input_ids"].shape[1])
        result["kept_mb"] = sum(a.numel() * a.element_size() for a in out.attentions) / 2**20

    if mode == "all-layers" and attn_implementation != "eager":
        raise SystemExit("output_attentions needs the eager attention implementation")
    seconds, peak = peak_growth_mb(hooks if mode == "hooks" else all_layers)
    images = sum(1 for t in trajectory.turns[:-1] if t.observation is not None)
    return {"mode": mode, "attn": attn_implementation, "images": images, "layers": loaded.num_layers, "seconds": round(seconds, 3), "peak_mb": round(peak, 1), **result}


def measure_in_child(model_dir: Path, trajectory_dir: Path, modes: list[str], attn_implementation: str) -> list[dict]:
    """Measure each mode in turn in one fresh process (the model is loaded once)."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "measure", "--model", str(model_dir), "--trajectory", str(trajectory_dir),
         "--mode", ",".join(modes), "--attn", attn_implementation],
        check=True, capture_output=True, text=True,
    )
    return [json.loads(line) for line in out.stdout.strip().splitlines() if line.startswith("{")]


# --- the table -----------------------------------------------------------------------------------

def write_trajectory(folder: Path, n_images: int) -> Path:
    """n searches that each show one real page, then an answer: what the loop records."""
    from PIL import Image

    from agent import protocol
    from agent.trajectory import Trajectory, Turn

    trajectory = Trajectory(question="What does the slide say?", policy={"name": "bench"})
    for i in range(n_images):
        name = PAGES[i % len(PAGES)]
        page = Image.open(CORPUS / name)
        view = protocol.page_view(f"turn{i:02d}-page.jpg", name, str(CORPUS / name), page.size)
        turn = Turn(index=i, raw_text=f"<think>Look at page {i}.</think>\n<search>slide {i}</search>", action="search", argument=f"slide {i}")
        _, trajectory.images[view.file] = protocol.prepare_image(page)
        turn.observation, turn.shown_page_id = view, name
        trajectory.turns.append(turn)
    trajectory.turns.append(Turn(index=n_images, raw_text="<think>Found it.</think>\n<answer>4.2 billion</answer>", action="answer", argument="4.2 billion"))
    return trajectory.save(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("measure")
    one.add_argument("--model", required=True)
    one.add_argument("--trajectory", required=True)
    one.add_argument("--mode", required=True, help="hooks, all-layers, or both comma-separated")
    one.add_argument("--attn", default="eager", help="attention implementation of the forward (all-layers needs eager)")
    parser.add_argument("--max-images", type=int, default=6)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    args = parser.parse_args()
    if args.command == "measure":
        for mode in args.mode.split(","):
            print(json.dumps(measure(args.model, args.trajectory, mode, args.attn)), flush=True)
        return

    from agent.tiny_qwen import save_tiny_model

    with tempfile.TemporaryDirectory(prefix="bench-attention-") as work:
        work = Path(work)
        model_dir = save_tiny_model(work / "model", num_layers=args.layers, num_heads=args.heads)
        print(f"tiny Qwen2.5-VL: {args.layers} layers x {args.heads} heads, hidden 64; CPU threads {os.cpu_count()}\n")
        print("| images | tokens | hooks s | hooks peak MB | all-layers s | all-layers peak MB | all-layers attentions kept MB |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for n in range(1, args.max_images + 1):
            folder = write_trajectory(work / f"traj{n}", n)
            (h,) = measure_in_child(model_dir, folder, ["hooks"], "sdpa")
            (a,) = measure_in_child(model_dir, folder, ["all-layers"], "eager")
            print(f"| {n} | {h['tokens']:,} | {h['seconds']:.2f} | {h['peak_mb']:.0f} | {a['seconds']:.2f} | {a['peak_mb']:.0f} | {a['kept_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
