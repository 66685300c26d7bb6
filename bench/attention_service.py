"""The attention service on the tiny Qwen2.5-VL: seconds and peak memory against images in context
and layers kept, with the cost model's estimates beside them (tiny here, and the released 7B).

    python bench/attention_service.py [--max-images 6] [--layers 8] [--heads 8] [--keep 1,4,8] [--json FILE]

Starts the real `python -m agent serve-attention` (a child process on 127.0.0.1, a free port,
stopped after) with a tiny random Qwen2.5-VL of `--layers` x `--heads` (agent/tiny_qwen.py), then for
each trajectory of 1..N real demo pages (../shared/corpus/vrag-demo) and each number of layers
kept (request layers 0..k-1, the reply of the answer turn) sends one job through the client
(agent/attention_client.py) and records:
- "job s": the client's wall time, submit to maps in hand (queueing, HTTP, JSON, the pass);
- "pass s": the service's own forward + capture time (`MapsResult.seconds`);
- "peak MB": how far the service process's resident-set high-water mark rose above its RSS before
  the job (the mark is reset through /proc/PID/clear_refs just before, so loading is not counted);
- "est s" / "est MB": the service's own estimate for that job (`POST /estimate`): time from the
  measured matmul speed, memory from agent/attention_cost.py `memory_bytes`.
Then the same cost model for the released 7B (its config.json figures below, no weights needed),
on this CPU (measured matmul speed) and on an assumed GPU, for the same trajectories.
The machine is shared: wall times include waiting for a core.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Qwen2.5-VL-7B-Instruct's config.json (the VRAG checkpoint keeps it), the fields the cost model reads.
QWEN25_VL_7B = {
    "model_type": "qwen2_5_vl", "torch_dtype": "bfloat16",
    "text_config": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                    "num_key_value_heads": 4, "max_position_embeddings": 128000},
    "vision_config": {"hidden_size": 1280, "intermediate_size": 3420, "depth": 32, "num_heads": 16},
}
QWEN25_VL_7B_PREPROCESSOR = {"min_pixels": 3136, "max_pixels": 12845056}  # its preprocessor_config.json
QWEN25_VL_7B_BYTES = 16_580_000_000  # model.safetensors.index.json total_size, bfloat16
GPU_FLOPS = 312e12  # A100 bf16 dense peak (assumed; the cost model takes 50% of it)


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def start_service(model_dir: Path, cwd: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "agent", "serve-attention", "--model", str(model_dir), "--port", "0"],
                            cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if " at http://" not in line:
        proc.kill()
        raise SystemExit(f"the service did not start: {line!r}")
    return proc, line.rsplit(" at ", 1)[1].strip()


def measure_job(client, pid: int, folder: Path, request) -> dict:
    from agent.attention import read_images
    from agent.trajectory import Trajectory

    trajectory = Trajectory.load(folder)
    images = read_images(folder, trajectory)
    estimate = client.estimate(trajectory, request)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the service's VmHWM to its current RSS
    before = _status_kb(pid, "VmRSS")
    started = time.perf_counter()
    result = client.compute(trajectory, images, request)
    job = time.perf_counter() - started
    peak = (_status_kb(pid, "VmHWM") - before) / 1024
    return {"job_s": round(job, 3), "pass_s": round(result.seconds, 3), "peak_mb": round(peak, 1), "tokens": result.tokens,
            "est_s": round(estimate.forward_seconds, 2), "est_mb": round(estimate.memory_bytes / 2**20, 1), "maps": len(result.maps)}


def seven_b_rows(folders: dict[int, Path]) -> tuple[list[dict], float]:
    from agent.attention_cost import ModelShape, context_views, estimate_for_shape, image_tokens, measure_flops, memory_bytes
    from agent.trajectory import Trajectory

    shape = ModelShape.from_config("Qwen2.5-VL-7B", QWEN25_VL_7B, QWEN25_VL_7B_PREPROCESSOR, QWEN25_VL_7B_BYTES)
    cpu = measure_flops("cpu", "float32")
    rows = []
    for n, folder in folders.items():
        trajectory = Trajectory.load(folder)
        on_cpu = estimate_for_shape(trajectory, shape, flops_per_second=cpu, loaded=False)
        on_gpu = estimate_for_shape(trajectory, shape, flops_per_second=GPU_FLOPS, loaded=True)
        eager = memory_bytes(shape, on_gpu.tokens, [image_tokens(v, shape) for v in context_views(trajectory)], "eager")["total"]
        rows.append({"images": n, "tokens": on_gpu.tokens, "cpu_forward_s": round(on_cpu.forward_seconds, 1), "cpu_load_s": round(on_cpu.load_seconds, 1),
                     "gpu_forward_s": round(on_gpu.forward_seconds, 2), "memory_gb": round(on_gpu.memory_bytes / 2**30, 2),
                     "memory_eager_gb": round(eager / 2**30, 2)})
    return rows, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-images", type=int, default=6)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--keep", default="1,4,8", help="layers kept per job (request layers 0..k-1)")
    parser.add_argument("--json", help="also write the raw rows here")
    args = parser.parse_args()
    keeps = [int(k) for k in args.keep.split(",")]
    if max(keeps) > args.layers:
        raise SystemExit(f"--keep {max(keeps)} is more than the model's {args.layers} layers")

    from attention_reforward import write_trajectory

    from agent.attention_client import AttentionService
    from agent.attention_request import MapRequest
    from agent.tiny_qwen import save_tiny_model

    with tempfile.TemporaryDirectory(prefix="bench-attention-service-") as work:
        work = Path(work)
        model_dir = save_tiny_model(work / "model", num_layers=args.layers, num_heads=args.heads)
        (work / "cwd").mkdir()
        proc, url = start_service(model_dir, work / "cwd")
        rows = []
        try:
            client = AttentionService(url, poll_seconds=0.02, timeout=600)
            folders = {n: write_trajectory(work / f"traj{n}", n) for n in range(1, args.max_images + 1)}
            client.compute(*_warm(folders[1]), MapRequest(select="reply"))  # first-call costs out of the table
            print(f"tiny Qwen2.5-VL served at {url}: {args.layers} layers x {args.heads} heads, hidden 64; CPU threads {os.cpu_count()}\n")
            print("| images | tokens | layers kept | job s | pass s | service peak MB | est. s | est. MB |")
            print("|---:|---:|---:|---:|---:|---:|---:|---:|")
            for n, folder in folders.items():
                for keep in keeps:
                    row = {"images": n, "layers_kept": keep, **measure_job(client, proc.pid, folder, MapRequest(select="reply", layers=(0, keep - 1)))}
                    rows.append(row)
                    print(f"| {n} | {row['tokens']:,} | {keep} | {row['job_s']:.2f} | {row['pass_s']:.2f} | {row['peak_mb']:.0f} | {row['est_s']:.2f} | {row['est_mb']:.0f} |", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        big, cpu = seven_b_rows(folders)
    print(f"\nThe cost model for the released 7B (bf16, all 28 layers; this CPU measured at {cpu / 1e9:.0f} GFLOP/s, GPU assumed {GPU_FLOPS / 1e12:.0f} TFLOP/s peak):\n")
    print("| images | tokens | 7B forward on this CPU | + load | 7B forward on the GPU | memory beyond weights (sdpa) | (eager) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in big:
        print(f"| {r['images']} | {r['tokens']:,} | {r['cpu_forward_s']:.0f} s | {r['cpu_load_s']:.0f} s | {r['gpu_forward_s']:.2f} s | {r['memory_gb']:.2f} GB | {r['memory_eager_gb']:.2f} GB |")
    if args.json:
        Path(args.json).write_text(json.dumps({"tiny": rows, "seven_b": big, "cpu_flops": cpu}, indent=1))


def _warm(folder: Path):
    from agent.attention import read_images
    from agent.trajectory import Trajectory

    trajectory = Trajectory.load(folder)
    return trajectory, read_images(folder, trajectory)


if __name__ == "__main__":
    main()
