"""The ingest pipeline: keep an index in sync with a set of paths.

    discover (sources.py) -> what changed (size, mtime, then SHA-256) -> drop what is gone
    -> read pages in a process pool (page_reader.py: render or load, write the image, OCR)
    -> embed in this process -> commit chunk by chunk, in source and page order (the backend)

Pages are read ahead by the pool (a bounded window of tasks) and consumed in submission order, so
commits happen in the same order as with one process, and a killed ingest resumes where the last
commit stopped: a source is committed in chunks of up to EMBED_BATCH pages, and its record says
how many of its pages were read (`SourceState.pages_read`). The progress callback sees every page
in that order, from the committing process.

A small ingest (fewer than POOL_MIN_PAGES pages, or `IndexConfig.workers == 0`) reads in this
process: starting workers costs more than it saves there.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from .config import IndexConfig
from .model_views import sync_views
from .page_reader import ReadPage, ReadSettings, Task, in_process_reader, init_worker, read_task
from .pages import SourceError, count_pages
from .sources import SourceFile, discover, file_sha256, still_there
from .store import Chunk, SourceState
from .tokenize import tokenize
from .types import IngestReport, Page, SkippedFile

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (pages done, pages total, message)
# Read pages are embedded and committed together once EMBED_BATCH wait, or once the oldest has
# waited COMMIT_SECONDS: fast text-layer pages get full batches, slow OCR'd pages are committed
# within seconds, so a killed ingest loses little work either way (at most one chunk).
EMBED_BATCH = 32
COMMIT_SECONDS = 10.0
TASK_PAGES = 4  # PDF pages per pool task
POOL_MIN_PAGES = 8


@dataclasses.dataclass
class _Reading:
    """One source being read: its pages read since the last commit, and its committed progress."""

    state: SourceState
    source: SourceFile
    pages: list[Page] = dataclasses.field(default_factory=list)
    texts: list[str] = dataclasses.field(default_factory=list)
    images: list = dataclasses.field(default_factory=list)
    committed: bool = False  # something of it is in the index (a row exists)


class Ingestor:
    """One sync run's machinery over a backend (see backend_local.py / backend_milvus.py)."""

    def __init__(self, backend, config: IndexConfig, embedder: Callable, ocr: Callable):
        self.backend = backend
        self.config = config
        self._embedder = embedder  # () -> Embedder, loaded on first use
        self._ocr = ocr  # () -> OcrEngine, for in-process reading

    # ---- the run ---------------------------------------------------------------------------------------
    def sync(self, paths, progress: Progress | None, drop_missing: bool) -> IngestReport:
        started = time.perf_counter()
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        self.backend.images.remove_orphan_images(self.backend.taken_page_ids)
        files, skipped = discover(paths, exclude=[self.backend.folder])
        report = IngestReport(skipped=list(skipped))
        known = self.backend.sources()
        todo = self._changed(files, known, report)
        if drop_missing:
            self._drop_missing(paths, files, known, report)
        counted = []
        for source, sha, resume in todo:
            try:
                counted.append((source, sha, resume, count_pages(source)))
            except SourceError as e:
                report.skipped.append(SkippedFile(str(source.path), str(e)))
                if str(source.path) in known:  # changed into something unreadable: stale pages go
                    report.removed += self.backend.drop_source(str(source.path))
        total = sum(n - (r.pages_read if r else 0) for *_, r, n in counted)
        self._read_all(counted, total, progress, report)
        sync_views(self.backend.folder, report.added, report.removed, self.backend.image_path, self.config.workers)
        report.seconds = round(time.perf_counter() - started, 3)
        log.info("ingest: +%d pages, -%d pages, %d unchanged files, %d skipped, %.1f s", len(report.added),
                 len(report.removed), report.unchanged_files, len(report.skipped), report.seconds)
        return report

    def _changed(self, files: list[SourceFile], known: dict[str, SourceState], report: IngestReport):
        """New, changed or half-committed files with their content hash (and the state to resume).
        Same size and mtime as recorded = unchanged without reading the file; otherwise the SHA-256
        decides (a `touch` does not cause a re-ingest)."""
        todo = []
        for source in files:
            state = known.get(str(source.path))
            if state and (state.size, state.mtime_ns) == (source.size, source.mtime_ns):
                if state.complete:
                    report.unchanged_files += 1
                else:
                    todo.append((source, state.sha256, state))
                continue
            try:
                sha = file_sha256(source.path)
            except OSError as e:
                report.skipped.append(SkippedFile(str(source.path), f"cannot read the file: {e.strerror or e}"))
                continue
            if state and state.sha256 == sha:
                state.size, state.mtime_ns = source.size, source.mtime_ns
                self.backend.update_source(state)
                if state.complete:
                    report.unchanged_files += 1
                else:
                    todo.append((source, sha, state))
            else:
                todo.append((source, sha, None))
        return todo

    def _drop_missing(self, paths, files: list[SourceFile], known: dict[str, SourceState], report: IngestReport) -> None:
        """Drop the indexed sources under `paths` that are gone. A source that is still there but could
        not be read now (under a folder that cannot be listed, or a file without read permission)
        keeps its pages, and the report says so."""
        found = {str(f.path) for f in files}
        roots = [Path(p).expanduser().absolute() for p in paths]
        roots += [r.resolve() for r in roots if r.resolve() != r]
        unlisted = [Path(s.path) for s in report.skipped if s.kind == "folder"]
        kept: dict[str, int] = {}
        for source in [s for s in known if s not in found and under(Path(s), roots)]:
            blocked = next((str(f) for f in unlisted if under(Path(source), [f])), None)
            if blocked is None and still_there(source) and not _readable(source):
                blocked = source
            if blocked is None:
                report.removed += self.backend.drop_source(source)
            else:
                kept[blocked] = kept.get(blocked, 0) + 1
        if kept:
            report.skipped = [_kept_note(s, kept.get(s.path, 0)) for s in report.skipped]
            named = {s.path for s in report.skipped}
            report.skipped += [SkippedFile(p, "cannot read it now; its indexed pages are kept") for p in kept if p not in named]

    # ---- reading, embedding, committing ------------------------------------------------------------------
    def _read_all(self, counted, total: int, progress: Progress | None, report: IngestReport) -> None:
        settings = ReadSettings(self.config.dpi, self.config.max_image_pixels, self.config.jpeg_quality,
                                self.config.min_text_chars, self.config.ocr_min_confidence, self.config.ocr_max_side,
                                keep_rgb=self._embedder().modality == "image")
        workers = self.config.workers if self.config.workers is not None else (os.cpu_count() or 1)
        pool = None
        if workers >= 1 and total >= POOL_MIN_PAGES:
            # fork: workers start at once and need no `if __name__ == "__main__"` guard in the caller's
            # script. They only render, encode and OCR (never touch torch, SQLite or tantivy, whose
            # threads the fork does not copy), and die with this process (page_reader._die_with_parent).
            context = multiprocessing.get_context("fork")
            pool = ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker, initargs=(settings,))
            submit = lambda task: pool.submit(read_task, task)  # noqa: E731
            window = 2 * workers + 2
        else:
            read = in_process_reader(settings, _Lazy(self._ocr))
            submit = lambda task: _Done(read(task))  # noqa: E731
            window = 1
        try:
            self._pipeline(counted, total, progress, report, submit, window)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _pipeline(self, counted, total, progress, report, submit, window) -> None:
        planned: set[str] = set()  # page ids of the sources submitted in this run
        in_flight: collections.deque = collections.deque()  # (reading, task, future), in order
        pending: list[_Reading] = []  # read, not yet committed
        done = 0
        waiting_since = time.monotonic()
        tasks = self._tasks(counted, planned, report)
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < window:
                item = next(tasks, None)
                if item is None:
                    exhausted = True
                    break
                reading, task = item
                in_flight.append((reading, task, submit(task)))
            if not in_flight:
                break
            reading, task, future = in_flight.popleft()
            result = future.result()
            if not pending or pending[-1] is not reading:
                if not pending:
                    waiting_since = time.monotonic()
                pending.append(reading)
            if isinstance(result, SourceError):  # what was read of it stays; the source counts as done
                report.skipped.append(SkippedFile(str(reading.source.path), str(result)))
                done += reading.state.n_pages - reading.state.pages_read
                reading.state.pages_read = reading.state.n_pages
                in_flight = collections.deque(f for f in in_flight if f[0] is not reading)
                continue
            for number, page in result:
                if isinstance(page, str):
                    report.skipped.append(SkippedFile(f"{reading.source.path}#page={number}", page))
                else:
                    self._add(reading, page)
                reading.state.pages_read = number
                done += 1
                if progress:
                    progress(done, total, f"{reading.source.path.name} page {number}/{reading.state.n_pages}")
                if (sum(len(r.pages) for r in pending) >= EMBED_BATCH
                        or time.monotonic() - waiting_since > COMMIT_SECONDS):
                    self._commit(pending, report)  # a long PDF is committed chunk by chunk
                    pending = [reading] if reading.state.pages_read < reading.state.n_pages else []
                    waiting_since = time.monotonic()
        self._commit(pending, report)

    def _tasks(self, counted, planned: set[str], report: IngestReport):
        """(reading, task) in order; a changed source's old pages are dropped when its turn comes."""
        known = None
        for source, sha, resume, n_pages in counted:
            if resume is None:
                known = known if known is not None else set(self.backend.sources())
                if str(source.path) in known:
                    report.removed += self.backend.drop_source(str(source.path))
                stem = self._stem_for(source, n_pages, planned)
                state = SourceState(str(source.path), sha, source.size, source.mtime_ns, n_pages, 0, False, stem)
            else:
                state = resume
                state.n_pages = n_pages
                log.info("resuming %s after page %d of %d", source.path, state.pages_read, n_pages)
            reading = _Reading(state, source, committed=resume is not None)
            if source.kind == "pdf":
                planned.update(f"{state.stem}_{i}" for i in range(1, n_pages + 1))
                for first in range(state.pages_read + 1, n_pages + 1, TASK_PAGES):
                    yield reading, Task(source, first, min(first + TASK_PAGES - 1, n_pages), state.stem,
                                        self.backend.images.images_dir)
            else:
                planned.add(state.stem)
                yield reading, Task(source, 1, 1, state.stem, self.backend.images.images_dir)

    def _add(self, reading: _Reading, read: ReadPage) -> None:
        page = Page(read.page_id, str(reading.source.path), read.number, read.image_file, read.width, read.height,
                    read.text_source, read.boxes)
        reading.pages.append(page)
        reading.texts.append(" ".join(b.text for b in page.boxes))
        if read.rgb is not None:
            reading.images.append(read.rgb)

    def _commit(self, pending: list[_Reading], report: IngestReport) -> None:
        """Embed the new pages of the pending sources in one go, then commit each source's chunk
        (a source still being read is committed as incomplete, and resumed from there)."""
        for reading in pending:
            reading.state.complete = reading.state.pages_read >= reading.state.n_pages
        pending = [r for r in pending if r.pages or r.committed]
        if not pending:
            return
        vectors = self._embed([t for r in pending for t in r.texts], [i for r in pending for i in r.images])
        chunks, start = [], 0
        for reading in pending:
            n = len(reading.pages)
            if n:
                chunks.append(Chunk(dataclasses.replace(reading.state), reading.pages, vectors[start : start + n],
                                    [tokenize(p.text) for p in reading.pages]))
                report.added += [p.page_id for p in reading.pages]
            else:
                self.backend.update_source(reading.state)
            start += n
            reading.committed = True
            reading.pages, reading.texts, reading.images = [], [], []
        if chunks:
            self.backend.commit(chunks)

    def _embed(self, texts: list[str], images: list) -> np.ndarray:
        embedder = self._embedder()
        if embedder.modality == "image":
            return embedder.encode_images(images)
        if not texts:
            return np.zeros((0, embedder.dim), np.float32)
        return np.vstack([embedder.encode_texts(texts[i : i + EMBED_BATCH]) for i in range(0, len(texts), EMBED_BATCH)])

    def _stem_for(self, source: SourceFile, n_pages: int, planned: set[str]) -> str:
        stem = source.path.stem[:100]  # keeps `{page_id}.jpg` well under file-name length limits
        wanted = [f"{stem}_{i}" for i in range(1, n_pages + 1)] if source.kind == "pdf" else [stem]
        if planned.intersection(wanted) or self.backend.taken_page_ids(wanted):
            return f"{stem}-{hashlib.sha1(str(source.path).encode()).hexdigest()[:6]}"
        return stem


class _Done:
    """A finished result that looks like a future (in-process reading)."""

    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value


class _Lazy:
    """An OCR engine made on first use (most born-digital pages never need one)."""

    def __init__(self, make: Callable):
        self._make = make

    def read(self, image):
        return self._make().read(image)


def under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _readable(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def _kept_note(skipped: SkippedFile, kept: int) -> SkippedFile:
    if not kept:
        return skipped
    what = "its indexed file is" if kept == 1 else f"its {kept} indexed files are"
    if skipped.kind != "folder":
        what = "its indexed pages are"
    return dataclasses.replace(skipped, reason=f"{skipped.reason}; {what} kept as they were")
