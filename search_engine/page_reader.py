"""Read pages of a source in a worker process: render or load, write the page image, OCR if needed.

This is the CPU-heavy part of ingestion (rendering, JPEG encoding, OCR: 98% of the time for
image-only pages), so ingest.py runs it in a process pool, several pages per task, and commits the
results in order. A task's result is small (boxes, sizes, a vector): the page image is written to
the index's image folder by the worker itself, under its final name, before anything refers to it.

With a text embedder that can run outside the ingesting process (`ReadSettings.embed`: MiniLM on
ONNX Runtime, minilm_onnx.OnnxSpec), the worker also embeds its pages' text: embedding is most of a
born-digital page's cost (~30 of ~45 ms), and the ingesting process would otherwise do all of it on
one core while the workers wait.

Each worker process builds its own OCR engine and embedder on first use and keeps the last PDF open
between tasks: `_WorkerState` is that per-process state.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
from pathlib import Path

from .mupdf import pymupdf

from .ocr import OcrEngine
from .pages import RawPage, SourceError, open_pdf, page_boxes, read_pdf_page, read_pages
from .sources import SourceFile
from .store import atomic_write
from .types import TextBox


@dataclasses.dataclass(frozen=True)
class ReadSettings:
    dpi: int
    max_image_pixels: int
    jpeg_quality: int
    min_text_chars: int
    ocr_min_confidence: float
    ocr_max_side: int
    keep_rgb: bool  # the embedder reads page images: send the decoded image back too
    embed: object = None  # minilm_onnx.OnnxSpec: embed page texts here (else the ingesting process does)


@dataclasses.dataclass(frozen=True)
class Task:
    source: SourceFile
    first: int  # 1-based page numbers, inclusive
    last: int
    stem: str
    images_dir: Path


@dataclasses.dataclass
class ReadPage:
    number: int
    page_id: str
    image_file: str
    width: int
    height: int
    boxes: list[TextBox]
    text_source: str
    rgb: object = None  # PIL image, only when ReadSettings.keep_rgb
    vector: object = None  # np.ndarray of the page text's embedding, only when ReadSettings.embed


def embedding_text(boxes: list[TextBox]) -> str:
    """The text a page is embedded from (the same wherever it is embedded)."""
    return " ".join(b.text for b in boxes)


class _WorkerState:
    def __init__(self, settings: ReadSettings, ocr: OcrEngine | None = None):
        self.settings = settings
        self._ocr = ocr
        self._embedder = None
        self._doc: tuple[Path, pymupdf.Document] | None = None

    @property
    def ocr(self) -> OcrEngine:
        if self._ocr is None:
            self._ocr = OcrEngine(self.settings.ocr_min_confidence, self.settings.ocr_max_side, threads=1)
        return self._ocr

    def pdf(self, source: SourceFile) -> pymupdf.Document:
        if self._doc is None or self._doc[0] != source.path:
            if self._doc is not None:
                self._doc[1].close()
            self._doc = (source.path, open_pdf(source))
        return self._doc[1]

    def read(self, task: Task) -> list[tuple[int, ReadPage | str]]:
        """(page number, page or the reason it failed) for each page of the task; a SourceError for
        the whole source (it cannot be opened) is raised."""
        s = self.settings
        if task.source.kind == "image":
            raws = read_pages(task.source, s.dpi, s.max_image_pixels, s.jpeg_quality)
        else:
            doc = self.pdf(task.source)
            raws = ((n, read_pdf_page(doc, n - 1, s.dpi, s.max_image_pixels, s.jpeg_quality))
                    for n in range(task.first, min(task.last, doc.page_count) + 1))
        out: list[tuple[int, ReadPage | str]] = []
        for number, raw in raws:
            out.append((number, str(raw) if isinstance(raw, SourceError) else self._page(task, raw)))
        if s.embed is not None:
            self._embed([page for _, page in out if isinstance(page, ReadPage)])
        return out

    def _embed(self, pages: list[ReadPage]) -> None:
        if not pages:
            return
        if self._embedder is None:
            from .minilm_onnx import OnnxMiniLM

            self._embedder = OnnxMiniLM(self.settings.embed)
        vectors = self._embedder.encode([embedding_text(p.boxes) for p in pages])
        for page, vector in zip(pages, vectors):
            page.vector = vector

    def _page(self, task: Task, raw: RawPage) -> ReadPage:
        boxes, text_source = page_boxes(raw, self.ocr, self.settings.min_text_chars)
        page_id = f"{task.stem}_{raw.number}" if task.source.kind == "pdf" else task.stem
        path = task.images_dir / f"{page_id}.jpg"
        atomic_write(path, raw.jpeg)
        rgb = raw.rgb() if self.settings.keep_rgb else None
        return ReadPage(raw.number, page_id, str(path), raw.width, raw.height, boxes, text_source, rgb)


_state: _WorkerState | None = None  # this worker process's state (set by init_worker)


def init_worker(settings: ReadSettings) -> None:
    global _state
    _die_with_parent()
    _state = _WorkerState(settings)


def _die_with_parent() -> None:
    """A SIGKILLed ingest must not leave its workers behind (they would wait for tasks forever):
    ask Linux to kill this worker when the process that forked it dies (PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: workers then end with the pool as usual
        pass
    if os.getppid() == 1:  # the parent died before the signal was armed
        os._exit(0)


def read_task(task: Task) -> list[tuple[int, ReadPage | str]] | SourceError:
    """The pool's entry point. A source that cannot be opened comes back as a SourceError value."""
    try:
        return _state.read(task)
    except SourceError as e:
        return e


def in_process_reader(settings: ReadSettings, ocr: OcrEngine | None):
    """The same reading without a pool (small ingests, or workers=0): a function of a task."""
    state = _WorkerState(settings, ocr)

    def read(task: Task):
        try:
            return state.read(task)
        except SourceError as e:
            return e
    return read
