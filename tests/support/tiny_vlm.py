"""Test support: the tiny random Qwen2.5-VL folder, and trajectories built by hand.

The tiny model folder is built once and kept under tests/artifacts/ (gitignored), keyed by the code
that builds it, so converting the tokenizer (several seconds) happens once per machine, not per test.
Trajectories are assembled with agent-core's own protocol functions (resize, JPEG, crop regions),
so they are byte-for-byte what the loop would have recorded for the same replies.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import transformers
from PIL import Image

from agent import protocol
from agent.trajectory import ImageView, Trajectory, Turn

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"


def _code_key(**config) -> str:
    h = hashlib.sha256(transformers.__version__.encode())
    for name in ("agent/qwen_processor.py", "agent/tiny_qwen.py"):
        h.update((ROOT / name).read_bytes())
    h.update(repr(sorted(config.items())).encode())
    return h.hexdigest()[:12]


def tiny_model_dir(cache_root: Path = ARTIFACTS, **config) -> Path:
    """A saved tiny Qwen2.5-VL (agent/tiny_qwen.py, `config` passed to `tiny_config`), built if missing."""
    from agent.qwen_processor import build_qwen25_processor, load_processor
    from agent.tiny_qwen import save_tiny_model

    cache_root = Path(cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)
    folder = cache_root / f"tiny-qwen25vl-{_code_key(**config)}"
    if (folder / "model.safetensors").is_file():
        return folder
    base = cache_root / f"tiny-qwen25vl-{_code_key()}"
    processor = load_processor(base) if (base / "tokenizer.json").is_file() else build_qwen25_processor()
    tmp = Path(tempfile.mkdtemp(dir=cache_root, prefix=".build-"))
    save_tiny_model(tmp, processor, **config)
    try:
        os.rename(tmp, folder)
    except OSError:  # built concurrently by another test process: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


class TrajectoryBuilder:
    """Append turns the way agent/loop.py records them, from scripted replies."""

    def __init__(self, question: str, pages: dict[str, Path], gold: dict | None = None):
        self.pages = pages  # page_id -> full-resolution image file
        self.trajectory = Trajectory(question=question, policy={"name": "vllm", "model": "scripted"}, gold=gold or {})

    @property
    def last_view(self) -> ImageView | None:
        views = [t.observation for t in self.trajectory.turns if t.observation is not None]
        return views[-1] if views else None

    def _show(self, turn: Turn, image: Image.Image, view: ImageView) -> None:
        resized, jpeg = protocol.prepare_image(image)
        assert resized.size == tuple(view.input_size)
        self.trajectory.images[view.file] = jpeg
        turn.observation = view

    def search(self, page_id: str, thought: str = "I need to look this up.", query: str = "revenue table") -> Turn:
        index = len(self.trajectory.turns)
        turn = Turn(index=index, raw_text=f"<think>{thought}</think>\n<search>{query}</search>", action="search", argument=query, thought=thought)
        page = Image.open(self.pages[page_id])
        view = protocol.page_view(f"turn{index:02d}-page.jpg", page_id, str(self.pages[page_id]), page.size)
        turn.shown_page_id = page_id
        self._show(turn, page, view)
        self.trajectory.turns.append(turn)
        return turn

    def bbox(self, box: list[float], thought: str = "Zoom in on the table.") -> Turn:
        index = len(self.trajectory.turns)
        acted_on = self.last_view
        text = "[" + ", ".join(str(int(v)) for v in box) + "]"
        turn = Turn(index=index, raw_text=f"<think>{thought}</think>\n<bbox>{text}</bbox>", action="bbox", argument=text, thought=thought)
        region = protocol.crop_region(acted_on, box)
        crop = protocol.crop_page(Image.open(self.pages[acted_on.page_id]), region)
        turn.bbox_model, turn.bbox_page, turn.acted_on = list(box), region, acted_on
        self._show(turn, crop, protocol.region_view(f"turn{index:02d}-crop.jpg", acted_on, region))
        self.trajectory.turns.append(turn)
        return turn

    def answer(self, text: str, thought: str = "The table says so.") -> Turn:
        index = len(self.trajectory.turns)
        turn = Turn(index=index, raw_text=f"<think>{thought}</think>\n<answer>{text}</answer>", action="answer", argument=text, thought=thought)
        self.trajectory.turns.append(turn)
        self.trajectory.answer, self.trajectory.finished = text, True
        return turn

    def save(self, folder: Path) -> Path:
        return self.trajectory.save(folder)
