"""The agent loop's own cost per turn, excluding the model: decode, resize, crop, JPEG encode,
base64 message building and parsing, on a 5334x3000 slide (target: under 150 ms per turn).

    .venv/bin/python bench/agent_turn_cost.py [--page ../shared/corpus/vrag-demo/aliyun4_1.jpg] [--repeat 10]

Runs the real `run_episode` with a policy that answers instantly from a script
(search -> bbox -> bbox on the crop -> answer) and a searcher that reads the page from disk on
every episode (a cold decode, as for a page not seen before). Prints per-turn medians as JSON
(thread CPU time, which is what the loop itself costs, and wall time, which also shows how busy
the machine is), plus the CPU time of each image step of a search turn. Runs twice: with Pillow's default memory
handling, and as the app and CLI run it (`protocol.reuse_page_memory()`); the second is the figure
the target is judged on.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent import protocol  # noqa: E402
from agent.loop import AgentConfig, new_trajectory, run_episode  # noqa: E402
from agent.policies.base import Completion  # noqa: E402
from search_engine.types import SearchHit  # noqa: E402

SCRIPT = [
    "<think>Find the table.</think><search>pricing table</search>",
    "<think>Zoom in.</think><bbox>[200, 100, 600, 350]</bbox>",
    "<think>Closer.</think><bbox>[100, 80, 400, 300]</bbox>",
    "<think>Done.</think><answer>42</answer>",
]


class InstantPolicy:
    name = "instant"

    def __init__(self):
        self.replies = list(SCRIPT)

    def describe(self) -> dict:
        return {"name": self.name, "model": "none", "description": "scripted replies, no model (benchmark)"}

    def complete(self, messages):
        return Completion(self.replies.pop(0))


class DiskSearcher:
    """One page, read and decoded from disk on every call (no caching)."""

    def __init__(self, path: Path):
        self.path = path

    def search(self, query, top_k):
        return [SearchHit(rank=1, score=1.0, page_id=self.path.stem, image_file=str(self.path), source=str(self.path), page=1)]

    def page_image(self, page_id):
        image = Image.open(self.path)
        image.load()
        return image

    def describe(self):
        return {"kind": "disk"}


def time_turns(page: Path, repeat: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds per turn kind. All work runs in this thread (Pillow does not spawn any
    for these calls), so thread CPU time is the loop's own cost even on a busy shared machine."""
    names = ["search", "bbox", "bbox_of_crop", "answer"]
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(repeat):
        policy, config = InstantPolicy(), AgentConfig(max_turns=4)
        traj = new_trajectory("q", policy, config)
        episode = run_episode(traj, policy, DiskSearcher(page), config)
        for name in names:
            w, c = time.perf_counter(), time.thread_time()
            next(episode)
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.thread_time() - c)
        assert traj.finished, traj.turns[-1]
    return wall, cpu


def time_steps(page: Path, repeat: int) -> dict[str, list[float]]:
    """CPU seconds of each image step of a search turn, and of cutting a crop from the decoded page."""
    steps: dict[str, list[float]] = {"decode": [], "resize": [], "encode": [], "crop": []}
    for _ in range(repeat):
        t0 = time.thread_time()
        image = Image.open(page)
        image.load()
        t1 = time.thread_time()
        small = image.resize(protocol.input_size(*image.size))
        t2 = time.thread_time()
        protocol.prepare_image(small)  # no resize needed any more: RGB + JPEG only
        t3 = time.thread_time()
        view = protocol.page_view("p.jpg", page.stem, str(page), image.size)
        protocol.crop_page(image, protocol.crop_region(view, [200, 100, 600, 350]))
        t4 = time.thread_time()
        for key, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            steps[key].append(dt)
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", default=str(ROOT / ".." / "shared" / "corpus" / "vrag-demo" / "aliyun4_1.jpg"))
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    page = Path(args.page)
    if not page.is_file():
        print(f"error: no page image at {page}", file=sys.stderr)
        return 2
    size = Image.open(page).size
    ms = lambda xs: round(1000 * statistics.median(xs), 1)  # noqa: E731
    result: dict = {"page": page.name, "page_size": list(size), "repeat": args.repeat}
    # First Pillow's default (every freed image goes back to the OS), then as the app and the CLI
    # run the loop (protocol.reuse_page_memory(): freed blocks are kept for the next page).
    for label, blocks in (("pillow_default", 0), ("as_run", protocol.PAGE_MEMORY_BLOCKS)):
        protocol.reuse_page_memory(blocks)
        time_turns(page, 1)  # warm-up (imports, allocator)
        wall, cpu = time_turns(page, args.repeat)
        result[label] = {
            "turn_cpu_ms_median": {k: ms(v) for k, v in cpu.items()},
            "turn_cpu_ms_min": {k: round(1000 * min(v), 1) for k, v in cpu.items()},
            "turn_wall_ms_median": {k: ms(v) for k, v in wall.items()},
            "worst_turn_cpu_ms_median": max(ms(v) for v in cpu.values()),
        }
    result["step_cpu_ms_median"] = {k: ms(v) for k, v in time_steps(page, args.repeat).items()}
    result["target_ms"] = 150
    try:
        import os

        result["load_average_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
