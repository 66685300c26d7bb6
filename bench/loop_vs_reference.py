"""Our loop's search turn + crop turn against the reference client's code for the same work, in one run.

    .venv/bin/python bench/loop_vs_reference.py [--repeat 7] [--page FILE ...] [--bbox "[200, 100, 600, 350]"]
                                                [--index DIR] [--json OUT]

Ours: the real `run_episode` (demo profile, the reference's crop) with a policy answering instantly
from a script (search -> bbox -> answer) and a real `LocalSearcher` over a real index of the pages,
whose model views were made at ingest (search_engine/model_views.py). Only the retrieval is left
out, on both sides: `search` returns the page's hit as the index gave it once, because the
reference's retrieval runs in its search server, not in its client. Every episode is new, so every
crop decodes its page again (the episode keeps only its own decoded page).

Reference: an independent rewrite of the image handling of Alibaba-NLP/VRAG demo/vrag_agent.py,
step for step: `Image.open(path)`, `process_image` (resize into the pixel bounds, RGB, JPEG,
base64), keep the raw image in memory; on a bbox, `json.loads`, map to the raw image, pad 56,
clamp, crop the raw image in memory, `process_image` again.

Both sides run in this thread, alternately, and are timed with thread CPU time
(`time.thread_time`): the machine is shared and loaded, and that is the work itself. Medians of
--repeat. The sent JPEGs of both sides are checked to be byte-identical before anything is timed.
Pillow keeps freed blocks for reuse on both sides (`protocol.reuse_page_memory()`, as the app and
the CLI run). "our pair" is the search turn plus the crop turn, each from the reply parsed to the
observation recorded, and the message building before its model call; "with the send" adds the
next turn, which base64-encodes the crop into the messages (the reference's crop step includes
its base64).
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from agent import protocol  # noqa: E402
from agent.loop import AgentConfig, new_trajectory, run_episode  # noqa: E402
from agent.policies.base import Completion  # noqa: E402
from agent.search import LocalSearcher  # noqa: E402
from search_engine import DocumentIndex  # noqa: E402
from search_engine.types import SearchHit  # noqa: E402

CORPUS = ROOT / ".." / "shared" / "corpus" / "vrag-demo"
DEFAULT_PAGES = ["aliyun4_1.jpg", "slide_1_1024.jpg"]  # the corpus's largest page (5334x3000), a 1024x768 slide
DEFAULT_BBOX = "[200, 100, 600, 350]"  # in the pixels of the view sent (bench/agent_turn_cost.py's first crop)


# --- the reference client's image handling, rewritten ------------------------------------------------

class ReferenceClient:
    """demo/vrag_agent.py's work for one search turn and one crop turn (no model, no HTTP)."""

    def __init__(self):
        self.max_pixels = 512 * 28 * 28
        self.min_pixels = 256 * 28 * 28
        self.image_raw: list[Image.Image] = []
        self.image_input: list[Image.Image] = []

    def process_image(self, image: Image.Image) -> tuple[Image.Image, str]:
        if (image.width * image.height) > self.max_pixels:
            resize_factor = math.sqrt(self.max_pixels / (image.width * image.height))
            image = image.resize((int(image.width * resize_factor), int(image.height * resize_factor)))
        if (image.width * image.height) < self.min_pixels:
            resize_factor = math.sqrt(self.min_pixels / (image.width * image.height))
            image = image.resize((int(image.width * resize_factor), int(image.height * resize_factor)))
        if image.mode != "RGB":
            image = image.convert("RGB")
        byte_stream = io.BytesIO()
        image.save(byte_stream, format="JPEG")
        return image, f"data:image;base64,{base64.b64encode(byte_stream.getvalue()).decode('utf-8')}"

    def search_turn(self, image_path: str) -> dict:
        image_raw = Image.open(image_path)
        image_input, img_base64 = self.process_image(image_raw)
        self.image_raw.append(image_raw)
        self.image_input.append(image_input)
        return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": img_base64}}]}

    def bbox_turn(self, content: str) -> dict:
        bbox = json.loads(content)
        input_w, input_h = self.image_input[-1].size
        raw_w, raw_h = self.image_raw[-1].size
        box = bbox[0] * raw_w / input_w, bbox[1] * raw_h / input_h, bbox[2] * raw_w / input_w, bbox[3] * raw_h / input_h
        pad = 56
        box = [max(box[0] - pad, 0), max(box[1] - pad, 0), min(box[2] + pad, raw_w), min(box[3] + pad, raw_h)]
        crop = self.image_raw[-1].crop(box)
        image_input, img_base64 = self.process_image(crop)
        self.image_raw.append(crop)
        self.image_input.append(image_input)
        return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": img_base64}}]}


# --- ours ---------------------------------------------------------------------------------------------

class InstantPolicy:
    name = "instant"

    def __init__(self, bbox: str):
        self.replies = ["<think>Find it.</think><search>the page</search>",
                        f"<think>Zoom in.</think><bbox>{bbox}</bbox>",
                        "<think>Done.</think><answer>42</answer>"]

    def describe(self) -> dict:
        return {"name": self.name, "model": "none", "description": "scripted replies, no model (benchmark)"}

    def complete(self, messages):
        return Completion(self.replies.pop(0))


class KnownHit(LocalSearcher):
    """The real LocalSearcher (model views, page images from the index) whose retrieval is replayed."""

    def __init__(self, index: DocumentIndex, hit: SearchHit):
        super().__init__(index)
        self.hit = hit

    def search(self, query, top_k):
        return [self.hit]


def our_episode(searcher: KnownHit, bbox: str) -> tuple[list[float], dict]:
    """CPU seconds of the search, crop and answer turns, and the trajectory's images."""
    policy, config = InstantPolicy(bbox), AgentConfig(max_turns=3, protocol="demo")
    trajectory = new_trajectory("q", policy, config)
    episode = run_episode(trajectory, policy, searcher, config)
    cpu = []
    for _ in range(3):
        started = time.thread_time()
        next(episode)
        cpu.append(time.thread_time() - started)
    assert trajectory.finished and [t.action for t in trajectory.turns] == ["search", "bbox", "answer"], trajectory.turns
    return cpu, trajectory


def reference_turns(image_file: str, bbox: str) -> tuple[list[float], list[str]]:
    client = ReferenceClient()
    cpu, urls = [], []
    for step in (lambda: client.search_turn(image_file), lambda: client.bbox_turn(bbox)):
        started = time.thread_time()
        message = step()
        cpu.append(time.thread_time() - started)
        urls.append(message["content"][0]["image_url"]["url"])
    return cpu, urls


def check_identical(searcher: KnownHit, image_file: str, bbox: str) -> None:
    _, trajectory = our_episode(searcher, bbox)
    _, urls = reference_turns(image_file, bbox)
    ours = [protocol.image_url(trajectory.images[t.observation.file]) for t in trajectory.turns[:2]]
    if ours != urls:
        raise SystemExit(f"error: the JPEGs sent differ from the reference's for {image_file}")


def measure(index: DocumentIndex, page_id: str, bbox: str, repeat: int) -> dict:
    page = index.page(page_id)
    hit = SearchHit(rank=1, score=1.0, page_id=page_id, image_file=page.image_file, source=page.source, page=page.page)
    searcher = KnownHit(index, hit)
    check_identical(searcher, page.image_file, bbox)
    ours: list[list[float]] = []
    ref: list[list[float]] = []
    for _ in range(repeat):  # alternate, so both sides see the same load
        ours.append(our_episode(searcher, bbox)[0])
        ref.append(reference_turns(page.image_file, bbox)[0])
    ms = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    row = {
        "page": page_id, "size": [page.width, page.height], "bbox": json.loads(bbox),
        "ours_search_ms": ms([o[0] for o in ours]), "ours_crop_ms": ms([o[1] for o in ours]),
        "ours_send_crop_ms": ms([o[2] for o in ours]),
        "ours_pair_ms": ms([o[0] + o[1] for o in ours]), "ours_pair_with_send_ms": ms([sum(o) for o in ours]),
        "ref_search_ms": ms([r[0] for r in ref]), "ref_crop_ms": ms([r[1] for r in ref]),
        "ref_pair_ms": ms([sum(r) for r in ref]),
    }
    row["ratio"] = row["ours_pair_ms"] / row["ref_pair_ms"]
    row["ratio_with_send"] = row["ours_pair_with_send_ms"] / row["ref_pair_ms"]
    return row


def open_index(pages: list[Path], folder: Path | None) -> tuple[DocumentIndex, list[str], Path | None]:
    """An index holding the pages: `folder` if given (ingesting them if missing), else a temporary one."""
    temp = None
    if folder is None:
        temp = Path(tempfile.mkdtemp(prefix="loop-vs-reference-"))
        folder = temp / "index"
    index = DocumentIndex.open(folder)
    report = index.add(pages)  # a no-op for pages already there
    if report.skipped:
        raise SystemExit(f"error: could not index {report.skipped}")
    by_source = {p.source: p.page_id for p in index.pages()}
    return index, [by_source[str(p.resolve())] for p in pages], temp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", action="append", help=f"page image (default: {', '.join(DEFAULT_PAGES)} of the demo corpus)")
    parser.add_argument("--bbox", default=DEFAULT_BBOX, help="the crop, in the pixels of the view sent")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--index", type=Path, help="an index folder to keep between runs (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    pages = [Path(p) for p in args.page] if args.page else [CORPUS / name for name in DEFAULT_PAGES]
    missing = [str(p) for p in pages if not p.is_file()]
    if missing:
        print(f"error: no page image at {', '.join(missing)}", file=sys.stderr)
        return 2
    protocol.reuse_page_memory()  # as the app and the CLI run, for both sides
    load_before = os.getloadavg()[0]
    index, page_ids, temp = open_index(pages, args.index)
    try:
        rows = [measure(index, page_id, args.bbox, args.repeat) for page_id in page_ids]
    finally:
        index.close()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    result = {"repeat": args.repeat, "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
              "cpus": os.cpu_count(), "rows": rows}
    print("| page | ours: search + crop (+ send) ms | reference: search + crop ms | ratio (with send) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['page']} {r['size'][0]}x{r['size'][1]} | {r['ours_search_ms']:.1f} + {r['ours_crop_ms']:.1f} = "
              f"{r['ours_pair_ms']:.1f} ({r['ours_pair_with_send_ms']:.1f}) | {r['ref_search_ms']:.1f} + {r['ref_crop_ms']:.1f} = "
              f"{r['ref_pair_ms']:.1f} | {r['ratio']:.2f} ({r['ratio_with_send']:.2f}) |")
    print(f"thread CPU time, median of {args.repeat}; load average {result['load_average_1min']} on {os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
