"""Model views: per page, the exact JPEG the VRAG protocol sends for it, made once and kept.

What the model is shown of a page does not depend on the question: decode, resize into the pixel
bounds, RGB, JPEG (the reference client's `process_image`; ../shared/notes/vrag-protocol.md,
"Image sizing"). This module owns that rule (agent/protocol.py re-exports it: imports run
agent -> search_engine, and ingest needs the rule without the agent) and keeps its result per page
in the index folder:

    <index>/model_views/<sizing key>/sizing.json     what the key stands for
    <index>/model_views/<sizing key>/<page_id>.view  one view: a JSON header line, then the JPEG

The sizing key covers everything that changes the bytes: the pixel bounds, the resampling and JPEG
settings (Pillow's defaults, as the reference uses them) and the Pillow and libjpeg-turbo versions.
New bounds, or an upgraded Pillow, read from a new folder: a view made under other rules is never
sent.

A view's header records its JPEG's length, the sizes sent and decoded, which page image it was made
from (inode, size, mtime_ns), and a SHA-256 over all of that and the JPEG. Every read checks them; a view that is
missing, truncated, corrupt, or made from an older version of the page image (a re-ingested page
keeps its id) is made again from the page image and rewritten, never sent.

Crash safety: a view is written to a temporary file beside it and renamed over its name, so a
reader finds the old view, the new one or none; a power cut may leave a damaged file, which the
hash check catches. Views are derived data: deleting the folder loses nothing but time.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import PIL
from PIL import Image, features

log = logging.getLogger(__name__)

MIN_PIXELS = 256 * 28 * 28  # 200,704
MAX_PIXELS = 512 * 28 * 28  # 401,408
FOLDER = "model_views"
VIEW_FORMAT = 1  # the layout of a .view file
POOL_MIN_PAGES = 8  # fewer views than this are made in this process (starting workers costs more)


# --- the rule ---------------------------------------------------------------------------------------


def input_size(width: int, height: int, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """The (w, h) an image of (width, height) is resized to before it is sent to the model.

    Shrink first, then grow, exactly in the reference order; each side is truncated to int.
    (`max(1, ...)` only guards degenerate slivers where the reference itself would fail.)
    """
    w, h = width, height
    if w * h > max_pixels:
        f = math.sqrt(max_pixels / (w * h))
        w, h = max(1, int(w * f)), max(1, int(h * f))
    if w * h < min_pixels:
        f = math.sqrt(min_pixels / (w * h))
        w, h = max(1, int(w * f)), max(1, int(h * f))
    return w, h


def prepare_image(image: Image.Image, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, bytes]:
    """Resize `image` for the model and encode it: returns (resized RGB image, JPEG bytes).

    Plain `Image.resize` (PIL's default filter) then RGB conversion, then JPEG at PIL's default
    quality, as the reference client does.
    """
    size = input_size(*image.size, min_pixels, max_pixels)
    if size != image.size:
        image = image.resize(size)
    if image.mode != "RGB":
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="JPEG")
    return image, buf.getvalue()


@dataclass(frozen=True)
class Sizing:
    """The pixel bounds of the protocol, and the key of the views they make with these libraries."""

    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS

    def __post_init__(self):
        if not (isinstance(self.min_pixels, int) and isinstance(self.max_pixels, int) and 0 < self.min_pixels <= self.max_pixels):
            raise ValueError(f"pixel bounds must be integers with 0 < min_pixels <= max_pixels, got {self.min_pixels!r}, {self.max_pixels!r}")

    def describe(self) -> dict:
        """Everything the bytes of a view depend on."""
        return {
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "resize": "PIL Image.resize, default filter; shrink then grow, sides truncated to int",
            "encode": "RGB, PIL JPEG defaults",
            "pillow": PIL.__version__,
            "libjpeg_turbo": features.version("libjpeg_turbo") or "none",
        }

    @property
    def key(self) -> str:
        digest = hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.min_pixels}-{self.max_pixels}-{digest}"


@dataclass(frozen=True)
class ModelView:
    """The JPEG the model is sent for a whole page, with the size sent and the page's own size."""

    jpeg: bytes
    input_size: tuple[int, int]  # (w, h) of the JPEG
    raw_size: tuple[int, int]  # (w, h) of the decoded page image


def make_view(image: Image.Image, sizing: Sizing = Sizing()) -> ModelView:
    """The view of a decoded page image (what a search turn sends for it)."""
    resized, jpeg = prepare_image(image, sizing.min_pixels, sizing.max_pixels)
    return ModelView(jpeg, resized.size, image.size)


# --- the cache ----------------------------------------------------------------------------------------


def _digest(header: dict, jpeg: bytes) -> str:
    """SHA-256 over the header's other fields and the JPEG: a view is whole or it is not used."""
    fields = json.dumps({k: v for k, v in header.items() if k != "sha256"}, sort_keys=True).encode()
    return hashlib.sha256(fields + b"\n" + jpeg).hexdigest()


def _identity(st: os.stat_result) -> list[int]:
    """Which version of a page image a view was made from (a re-ingested page keeps its id)."""
    return [st.st_ino, st.st_size, st.st_mtime_ns]


class ModelViews:
    """The views of one index folder under one sizing (see the module docstring).

    `get` is the one call a reader needs: a checked cached view, or a new one made and kept.
    Safe to use from several threads and processes at once.
    """

    def __init__(self, index_folder, sizing: Sizing = Sizing()):
        self.sizing = sizing
        self.folder = Path(index_folder) / FOLDER / sizing.key

    def path(self, page_id: str) -> Path:
        if not page_id or "/" in page_id or "\x00" in page_id or page_id.startswith("."):
            raise ValueError(f"not a page id: {page_id!r}")
        return self.folder / f"{page_id}.view"

    def get(self, page_id: str, image_file) -> ModelView:
        """The view of `page_id`, whose page image is `image_file`. Raises OSError (or PIL's
        UnidentifiedImageError, an OSError) when the page image itself cannot be read."""
        return self.read(page_id, image_file) or self.build(page_id, image_file)

    def read(self, page_id: str, image_file) -> ModelView | None:
        """The cached view if it is whole and made from this version of the page image, else None."""
        try:
            data = self.path(page_id).read_bytes()
            current = _identity(os.stat(image_file))
        except FileNotFoundError:
            return None
        newline = data.find(b"\n")
        try:
            header = json.loads(data[:newline]) if newline > 0 else None
            jpeg = data[newline + 1 :]
            if (not isinstance(header, dict) or header.get("format") != VIEW_FORMAT or header.get("page_id") != page_id
                    or header.get("image") != current or header.get("jpeg_bytes") != len(jpeg)
                    or header.get("sha256") != _digest(header, jpeg)):
                raise ValueError("header does not match")
            view = ModelView(jpeg, tuple(header["input_size"]), tuple(header["raw_size"]))
        except (ValueError, KeyError, TypeError) as e:
            log.info("model view of %s in %s is stale or damaged (%s): making it again", page_id, self.folder, e)
            return None
        return view

    def build(self, page_id: str, image_file) -> ModelView:
        """Make the view from the page image and keep it (atomically replacing any old one)."""
        with open(image_file, "rb") as f:
            made_from = _identity(os.fstat(f.fileno()))  # the inode read, even if the path is replaced meanwhile
            data = f.read()
        with Image.open(io.BytesIO(data)) as image:
            view = make_view(image, self.sizing)
        header = {"format": VIEW_FORMAT, "page_id": page_id, "image": made_from, "jpeg_bytes": len(view.jpeg),
                  "input_size": list(view.input_size), "raw_size": list(view.raw_size)}
        header["sha256"] = _digest(header, view.jpeg)
        self._write(self.path(page_id), json.dumps(header).encode() + b"\n" + view.jpeg)
        return view

    def _write(self, path: Path, data: bytes) -> None:
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            description = json.dumps({"key": self.sizing.key, **self.sizing.describe()}, indent=1).encode()
            self._replace(self.folder / "sizing.json", description)
        self._replace(path, data)

    def _replace(self, path: Path, data: bytes) -> None:
        # a unique temporary name: threads of one process (the server's, the app's) may write at once
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def forget(self, page_ids: Iterable[str]) -> int:
        """Delete the views of these pages (removed from the index); returns how many there were."""
        removed = 0
        for page_id in page_ids:
            try:
                self.path(page_id).unlink()
                removed += 1
            except (FileNotFoundError, ValueError):
                pass
        return removed


# --- at ingest ----------------------------------------------------------------------------------------


def _build_one(args: tuple[str, str, str, Sizing]) -> str | None:
    folder, page_id, image_file, sizing = args
    try:
        ModelViews(folder, sizing).build(page_id, image_file)
        return None
    except OSError as e:  # the page read fine at ingest; the search turn will try again and say why
        return f"{page_id}: {e}"


def sync_views(index_folder, added: list[str], removed: list[str], image_file_of, workers: int | None = None,
               sizing: Sizing = Sizing()) -> int:
    """The ingest hook: make the views of the pages just added (`image_file_of(page_id)` -> the
    page image), in a process pool when there are many, and delete those of pages just removed.
    Returns how many views were made. A view not made here (an index older than views, a killed
    ingest, a page image unreadable just now) is made on first use; one left behind by a removal
    outside ingest is never sent (its page image is gone) and goes when its page id is removed again."""
    views = ModelViews(index_folder, sizing)
    forgotten = views.forget(set(removed) - set(added))
    tasks = [(str(index_folder), page_id, str(image_file_of(page_id)), sizing) for page_id in added]
    started = time.perf_counter()
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers >= 1 and len(tasks) >= POOL_MIN_PAGES:
        # fork, as ingest's reading pool does: the workers only decode, resize and encode
        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=multiprocessing.get_context("fork")) as pool:
            failures = [f for f in pool.map(_build_one, tasks, chunksize=8) if f]
    else:
        failures = [f for f in map(_build_one, tasks) if f]
    for failure in failures:
        log.warning("model view not made at ingest (made on first use instead): %s", failure)
    if tasks or forgotten:
        log.info("model views: %d made, %d of removed pages deleted, %.1f s (%s)", len(tasks) - len(failures), forgotten,
                 time.perf_counter() - started, views.folder)
    return len(tasks) - len(failures)
