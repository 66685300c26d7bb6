"""The ingest pipeline: keep an index in sync with a set of paths.

    discover (sources.py) -> what changed (size, mtime, then SHA-256) -> drop what is gone
    -> read pages in a process pool (page_reader.py: render or load, write the image, OCR)
    -> embed in this process -> commit chunk by chunk, in source and page order (the backend)

Pages are read ahead by the pool (a bounded window of tasks) and consumed in submission order, so
commits happen in the same order as with one process, and a killed ingest resumes where the last
commit stopped: a source is committed in chunks of up to EMBED_BATCH pages, and its record says
how many of its pages were read (`SourceState.pages_read`). The progress callback sees every page
in that order, from the committing process.

Where pages are read (`_Readers`): an ingest of POOL_AT_ONCE_PAGES pages or more starts its pool at
once. A smaller one (adding a 10-page PDF to a big index, say) reads in this process, and starts the
pool only once the pages left would take more than POOL_WORTH_SECONDS here at the rate measured so
far: a born-digital PDF of a few dozen pages (~50 ms a page) never pays for a pool, scans (seconds
a page) get one after their first task. `IndexConfig.workers == 0` always reads here.

Embedding: pool workers embed their pages' text themselves when the embedder can run there
(page_reader.ReadSettings.embed); pages read in this process, or by an embedder that cannot, are
embedded here, in batches, when they are committed.
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
from .multivector_search import mean_vector
from .page_reader import ReadPage, ReadSettings, Task, embedding_text, in_process_reader, init_worker, read_task
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
POOL_AT_ONCE_PAGES = 64
POOL_WORTH_SECONDS = 2.0


@dataclasses.dataclass
class _Reading:
    """One source being read: its pages read since the last commit, and its committed progress."""

    state: SourceState
    source: SourceFile
    pages: list[Page] = dataclasses.field(default_factory=list)
    texts: list[str] = dataclasses.field(default_factory=list)
    vectors: list = dataclasses.field(default_factory=list)  # per page: its vector if a worker embedded it, else None
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
        # a small add makes its few views here too: starting a pool costs more than it saves
        sync_views(self.backend.folder, report.added, report.removed, self.backend.image_path,
                   self.config.workers if len(report.added) >= POOL_AT_ONCE_PAGES else 0)
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
        embedder = self._embedder()
        settings = ReadSettings(self.config.dpi, self.config.max_image_pixels, self.config.jpeg_quality,
                                self.config.min_text_chars, self.config.ocr_min_confidence, self.config.ocr_max_side,
                                keep_rgb=embedder.modality == "image")
        spec = getattr(embedder, "worker_spec", lambda: None)() if embedder.modality == "text" else None
        workers = self.config.workers if self.config.workers is not None else (os.cpu_count() or 1)
        readers = _Readers(dataclasses.replace(settings, embed=spec), settings, workers, total, self._ocr)
        try:
            self._pipeline(counted, total, progress, report, readers)
        finally:
            readers.close()

    def _pipeline(self, counted, total, progress, report, readers: "_Readers") -> None:
        planned: set[str] = set()  # page ids of the sources submitted in this run
        in_flight: collections.deque = collections.deque()  # (reading, task, future), in order
        pending: list[_Reading] = []  # read, not yet committed
        done = 0
        waiting_since = time.monotonic()
        tasks = self._tasks(counted, planned, report)
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < readers.window:
                item = next(tasks, None)
                if item is None:
                    exhausted = True
                    break
                reading, task = item
                in_flight.append((reading, task, readers.submit(task)))
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
        reading.texts.append(embedding_text(page.boxes))
        reading.vectors.append(read.vector)
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
        vectors, multivectors = self._vectors(pending)
        chunks, start = [], 0
        for reading in pending:
            n = len(reading.pages)
            if n:
                chunks.append(Chunk(dataclasses.replace(reading.state), reading.pages, vectors[start : start + n],
                                    [tokenize(p.text) for p in reading.pages],
                                    multivectors[start : start + n] if multivectors is not None else None))
                report.added += [p.page_id for p in reading.pages]
            else:
                self.backend.update_source(reading.state)
            start += n
            reading.committed = True
            reading.pages, reading.texts, reading.vectors, reading.images = [], [], [], []
        if chunks:
            self.backend.commit(chunks)

    def _vectors(self, pending: list[_Reading]) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """The pending pages' vectors, in order: a worker's where it embedded the page, the rest
        embedded here in one go. A late-interaction embedder gives each page (n_i, dim) vectors: they
        come second, and the page vector is their normalised mean (the candidate stage's vector)."""
        images = [i for r in pending for i in r.images]
        if getattr(self._embedder(), "multivector", False):
            multivectors = self._embedder().encode_images(images)
            return np.vstack([mean_vector(m) for m in multivectors]), multivectors
        lacking = [t for r in pending for t, v in zip(r.texts, r.vectors) if v is None]
        if not lacking and not images:
            return np.vstack([v for r in pending for v in r.vectors]), None
        computed = iter(self._embed(lacking, images))
        return np.vstack([v if v is not None else next(computed) for r in pending for v in r.vectors]), None

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


class _Readers:
    """Reads tasks in this process (no start-up cost) until the pages left look worth a pool, then in
    a pool of `workers` processes (see the module docstring). `window`: tasks to keep in flight."""

    def __init__(self, pool_settings: ReadSettings, settings: ReadSettings, workers: int, total: int, ocr: Callable):
        self._pool_settings, self._workers, self._left = pool_settings, workers, total
        self._local = in_process_reader(settings, _Lazy(ocr))
        self._pool: ProcessPoolExecutor | None = None
        if workers >= 1 and total >= POOL_AT_ONCE_PAGES:
            self._start()

    @property
    def window(self) -> int:
        return 2 * self._workers + 2 if self._pool is not None else 1

    def submit(self, task: Task):
        pages = task.last - task.first + 1
        self._left -= pages
        if self._pool is not None:
            return self._pool.submit(read_task, task)
        started = time.perf_counter()
        result = _Done(self._local(task))
        if self._workers >= 1 and self._left * (time.perf_counter() - started) / pages > POOL_WORTH_SECONDS:
            self._start()
        return result

    def _start(self) -> None:
        # fork: workers start at once and need no `if __name__ == "__main__"` guard in the caller's
        # script. They only render, encode, OCR and embed with ONNX Runtime (never touch torch, SQLite
        # or tantivy, whose threads the fork does not copy), and die with this process
        # (page_reader._die_with_parent).
        log.info("reading pages in %d worker processes", self._workers)
        context = multiprocessing.get_context("fork")
        self._pool = ProcessPoolExecutor(self._workers, mp_context=context, initializer=init_worker,
                                         initargs=(self._pool_settings,))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


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
