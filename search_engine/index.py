"""DocumentIndex: ingest a folder of PDFs and page images, keep it in sync, and search it.

Search runs two retrievers over the page text (PDF text layer or OCR) and fuses their rankings:
dense (sentence embeddings in FAISS) for meaning, lexical (BM25 on tokenize.py tokens) for exact
words, numbers and Chinese. Everything lives in one folder (see store.py for the layout and crash
safety); the dense and lexical indexes are derived from the per-source records when the index opens.

Page ids follow the reference naming: `{stem}_{page}` (1-based) for PDF pages, the file stem for
images. When a new source's ids would collide with pages of another source (two `report.pdf` in
different folders, `a.png` next to `a.jpg`, an image `x_1.png` beside `x.pdf`), the newcomer's stem
gets a suffix from a hash of its path, `{stem}-{6 hex}`, which stays the same across re-ingests.
Sources are processed in sorted path order, so which file keeps the plain stem is deterministic.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from .config import FORMAT_VERSION, IndexConfig
from .dense import DenseIndex
from .embedders import Embedder, load_embedder
from .fusion import fuse
from .lexical import LexicalIndex
from .ocr import OcrEngine
from .pages import RawPage, SourceError, count_pages, page_boxes, read_pages
from .query import QueryError, validate_query
from .sources import SourceFile, discover, file_sha256
from .store import IndexStore, SourceRecord
from .tokenize import tokenize
from .types import IngestReport, Page, SearchHit, SkippedFile

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (pages done, pages total, message)
MODES = ("fused", "dense", "lexical")
# Read sources are embedded and committed together once they hold EMBED_BATCH pages, or once the
# oldest has waited COMMIT_SECONDS: fast text-layer pages get full batches, slow OCR'd pages are
# committed within seconds, so a killed ingest loses little work either way.
EMBED_BATCH = 32
COMMIT_SECONDS = 10.0
CHECKPOINT_SECONDS = 60.0  # save the dense index at least this often during a long ingest


class DocumentIndex:
    def __init__(self, store: IndexStore, config: IndexConfig, embedder: Embedder | None, ocr: OcrEngine | None):
        """Use DocumentIndex.open."""
        self.folder = store.folder
        self.config = config
        self._store = store
        self._embedder = embedder
        self._ocr = ocr
        self._embedding: ThreadPoolExecutor | None = None  # one worker thread, started on first ingest
        self._reset()

    def _reset(self) -> None:
        self._records: dict[str, SourceRecord] = {}
        self._pages: dict[str, Page] = {}
        self._vid_of: dict[str, int] = {}
        self._page_of: dict[int, str] = {}
        self._lexical = LexicalIndex()
        self._dense: DenseIndex | None = None
        self._next_vid = 0
        self._stamp: tuple = ()

    # ---- opening -----------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder, *, embedder: Embedder | None = None, config: IndexConfig | None = None,
             ocr: OcrEngine | None = None) -> "DocumentIndex":
        """Open the index in `folder`, creating it if missing and rebuilding it if it is outdated.

        With `config=None` an existing index keeps the settings that decide its content (embedder, DPI,
        OCR: `IndexConfig.identity()`) and takes search-time settings (fusion, candidates) from the
        defaults; a new index gets the defaults, with `embedder.name` if an embedder is given.
        Models load lazily, on first use.
        """
        store = IndexStore(Path(folder).expanduser().resolve())
        stored = store.read_config()
        if config is None:  # keep what decides the stored content; search-time settings from the defaults
            kept = IndexConfig.from_dict(stored).identity() if stored else {}
            config = IndexConfig(**{k: v for k, v in kept.items() if k != "format_version"})
            if embedder is not None:
                config.embedder = embedder.name
        config = dataclasses.replace(config, format_version=FORMAT_VERSION)  # the only format this code reads
        if embedder is not None and embedder.name != config.embedder:
            raise ValueError(f"embedder {embedder.name!r} does not match config.embedder {config.embedder!r}")
        index = cls(store, config, embedder, ocr)
        if stored != config.to_dict():
            with store.writer_lock():  # creating, re-configuring or rebuilding: one writer at a time
                stored = store.read_config()
                if stored and IndexConfig.from_dict(stored).identity() != config.identity():
                    index._rebuild(stored)
                elif stored != config.to_dict():
                    store.create(config.to_dict())  # new index, or only search-time settings changed
        if not index._stamp:
            index._load()
        return index

    @contextlib.contextmanager
    def _writing(self):
        """Hold the folder's writer lock; first catch up with whatever another writer committed."""
        with self._store.writer_lock():
            if self._store.stamp() != self._stamp:
                self._reset()
                self._load()
            yield
            self._stamp = self._store.stamp()

    def _rebuild(self, stored: dict) -> None:
        old = IndexConfig.from_dict(stored).identity() if stored else {}
        sources = self._store.known_sources()
        log.warning("index %s was built with %s; rebuilding it with %s from %d source files",
                    self.folder, old, self.config.identity(), len(sources))
        self._store.wipe()
        self._store.create(self.config.to_dict())
        self._load()
        still_there = [s for s in sources if Path(s).exists()]
        if still_there:
            self._sync(still_there, None, drop_missing=False)
        self._stamp = self._store.stamp()

    def _load(self) -> None:
        stamp = self._store.stamp()  # before reading: a concurrent commit then makes the next writer reload
        records = self._store.load_records()
        for record in records:
            self._install(record, add_vectors=False)
        self._next_vid = 1 + max((v for r in records for v in r.vids), default=-1)
        if self._store.dense_path.exists():
            self._dense = DenseIndex.load(self._store.dense_path, self.config.dense)
            self._next_vid = max(self._next_vid, 1 + int(max(self._dense.ids(include_removed=True), default=-1)))
        self._reconcile_dense()
        self._stamp = stamp

    def _reconcile_dense(self) -> None:
        """Make the FAISS checkpoint hold exactly the records' vectors (it may lag after a crash)."""
        records = list(self._records.values())
        if self._dense is None:
            dims = {r.vectors.shape[1] for r in records if len(r.vids)}
            if not dims:
                return
            self._dense = DenseIndex(dims.pop(), self.config.dense)
        in_dense = set(self._dense.ids().tolist())
        wanted = set(self._page_of)
        stale, missing = in_dense - wanted, wanted - in_dense
        if stale:
            self._dense.remove(sorted(stale))
        for record in records:
            rows = [i for i, v in enumerate(record.vids) if v in missing]
            if rows:
                self._dense.add([record.vids[i] for i in rows], record.vectors[rows])
        if stale or missing:  # saved by the next ingest; a reader must not write
            log.info("dense index caught up with the records: -%d +%d vectors", len(stale), len(missing))

    # ---- models (loaded on first use) --------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = load_embedder(self.config.embedder)
        return self._embedder

    @property
    def ocr(self) -> OcrEngine:
        if self._ocr is None:
            self._ocr = OcrEngine(self.config.ocr_min_confidence, self.config.ocr_max_side,
                                  threads=self.config.ocr_threads)
        return self._ocr

    # ---- in-memory bookkeeping ---------------------------------------------------------------------
    def _install(self, record: SourceRecord, add_vectors: bool = True) -> None:
        self._records[record.source] = record
        for vid, page in zip(record.vids, record.pages):
            self._pages[page.page_id] = page
            self._vid_of[page.page_id] = vid
            self._page_of[vid] = page.page_id
            self._lexical.add(vid, tokenize(page.text))
        if add_vectors and record.vids:
            if self._dense is None:
                self._dense = DenseIndex(record.vectors.shape[1], self.config.dense)
            self._dense.add(record.vids, record.vectors)

    def _uninstall_pages(self, page_ids: list[str]) -> None:
        vids = [self._vid_of.pop(pid) for pid in page_ids]
        for pid, vid in zip(page_ids, vids):
            del self._pages[pid]
            del self._page_of[vid]
            self._lexical.remove(vid)
        if self._dense is not None and vids:
            self._dense.remove(vids)

    def _drop_source(self, source: str) -> list[str]:
        """Remove a source: its record first (the commit), then its images."""
        record = self._records.pop(source)
        self._store.delete_record(source)
        page_ids = [p.page_id for p in record.pages]
        for pid in page_ids:
            self._store.delete_image(pid)
        self._uninstall_pages(page_ids)
        return page_ids

    # ---- ingestion ---------------------------------------------------------------------------------
    def ingest(self, paths, progress: Progress | None = None) -> IngestReport:
        """Sync the index with `paths`: add new and changed files, drop pages of files that are gone
        from under these paths (or can no longer be read). Other indexed sources are left alone.
        A changed file's page ids appear in the report twice: in `removed` (old) and `added` (new)."""
        with self._writing():
            return self._sync(paths, progress, drop_missing=True)

    def add(self, paths, progress: Progress | None = None) -> IngestReport:
        """Add new and changed files under `paths`; never drops anything."""
        with self._writing():
            return self._sync(paths, progress, drop_missing=False)

    def _sync(self, paths, progress: Progress | None, drop_missing: bool) -> IngestReport:
        started = time.perf_counter()
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        self._store.remove_orphan_images({p.image_file for p in self._pages.values()})
        files, skipped = discover(paths)
        report = IngestReport(skipped=list(skipped))
        todo = self._changed(files, report)
        if drop_missing:
            keep = {str(f.path) for f in files}
            roots = [Path(p).expanduser().resolve() for p in paths]
            for source in [s for s in self._records if s not in keep and _under(Path(s), roots)]:
                report.removed += self._drop_source(source)
        counted = []
        for source, sha in todo:
            try:
                counted.append((source, sha, count_pages(source)))
            except SourceError as e:
                report.skipped.append(SkippedFile(str(source.path), str(e)))
                if str(source.path) in self._records:  # changed into something unreadable: stale pages go
                    report.removed += self._drop_source(str(source.path))
        total, done = sum(n for *_, n in counted), 0
        last_checkpoint = time.monotonic()
        pending: list[_ReadSource] = []  # read but not yet embedded and committed
        for source, sha, n_pages in counted:
            if str(source.path) in self._records:
                report.removed += self._drop_source(str(source.path))
            if not pending:
                waiting_since = time.monotonic()
            read = self._read_source(source, sha, n_pages, report, progress, done, total, pending)
            done += n_pages
            if read.pages:
                pending.append(read)
            if (sum(len(r.pages) for r in pending) >= EMBED_BATCH
                    or time.monotonic() - waiting_since > COMMIT_SECONDS):
                self._commit(pending, report)
                pending = []
            if time.monotonic() - last_checkpoint > CHECKPOINT_SECONDS:
                self._save_dense()
                last_checkpoint = time.monotonic()
        self._commit(pending, report)
        self._save_dense()
        self._store.write_manifest(list(self._records.values()), self.config.format_version)
        report.seconds = round(time.perf_counter() - started, 3)
        log.info("ingest: +%d pages, -%d pages, %d unchanged files, %d skipped, %.1f s", len(report.added),
                 len(report.removed), report.unchanged_files, len(report.skipped), report.seconds)
        return report

    def _changed(self, files: list[SourceFile], report: IngestReport) -> list[tuple[SourceFile, str]]:
        """New or changed files with their content hash. Same size and mtime as recorded = unchanged
        without reading the file; otherwise the SHA-256 decides (a `touch` does not cause a re-ingest)."""
        todo = []
        for source in files:
            record = self._records.get(str(source.path))
            if record and (record.size, record.mtime_ns) == (source.size, source.mtime_ns):
                report.unchanged_files += 1
                continue
            try:
                sha = file_sha256(source.path)
            except OSError as e:
                report.skipped.append(SkippedFile(str(source.path), f"cannot read the file: {e.strerror or e}"))
                continue
            if record and record.sha256 == sha:
                record.size, record.mtime_ns = source.size, source.mtime_ns
                self._store.write_record(record)
                report.unchanged_files += 1
            else:
                todo.append((source, sha))
        return todo

    def _read_source(self, source: SourceFile, sha: str, n_pages: int, report: IngestReport,
                     progress: Progress | None, done: int, total: int, pending: list["_ReadSource"]) -> "_ReadSource":
        """Render (or load) and OCR every page of one source, writing its page images."""
        taken = {p.page_id for r in pending for p in r.pages}
        read = _ReadSource(source, sha, self._stem_for(source, n_pages, taken))
        try:
            raws = read_pages(source, self.config.dpi, self.config.max_image_pixels, self.config.jpeg_quality)
            for number, raw in enumerate(raws, start=1):
                if isinstance(raw, SourceError):
                    report.skipped.append(SkippedFile(f"{source.path}#page={number}", str(raw)))
                else:
                    read.pages.append(self._make_page(source, read.stem, raw))
                    read.texts.append(" ".join(b.text for b in read.pages[-1].boxes))
                    if self.embedder.modality == "image":
                        read.images.append(raw.rgb())
                    if len(read.pages) - read.submitted == EMBED_BATCH:  # a long source: embed while reading on
                        read.batches.append(self._embed_later(read.texts[read.submitted :], read.images[read.submitted :]))
                        read.submitted = len(read.pages)
                if progress:
                    progress(done + number, total, f"{source.path.name} page {number}/{n_pages}")
        except SourceError as e:
            report.skipped.append(SkippedFile(str(source.path), str(e)))
        return read

    def _commit(self, pending: list["_ReadSource"], report: IngestReport) -> None:
        """Embed the pages of several read sources in one go, then commit each source's record."""
        if not pending:
            return
        # the pages not yet sent to the embedder, of all pending sources, go as one batch
        rest = self._embed_later([t for r in pending for t in r.texts[r.submitted :]],
                                 [i for r in pending for i in r.images[r.submitted :]]).result()
        start = 0
        for read in pending:
            n = len(read.pages)
            vids = list(range(self._next_vid, self._next_vid + n))
            self._next_vid += n
            tail = n - read.submitted
            vectors = np.vstack([f.result() for f in read.batches] + [rest[start : start + tail]])
            start += tail
            source = read.source
            record = SourceRecord(str(source.path), read.sha, source.size, source.mtime_ns, vids, read.pages, vectors)
            self._store.write_record(record)  # the commit point for this source
            self._install(record)
            report.added += [p.page_id for p in read.pages]

    def _make_page(self, source: SourceFile, stem: str, raw: RawPage) -> Page:
        boxes, text_source = page_boxes(raw, self.ocr, self.config.min_text_chars)
        page_id = f"{stem}_{raw.number}" if source.kind == "pdf" else stem
        image_file = self._store.write_image(page_id, raw.jpeg)
        return Page(page_id, str(source.path), raw.number, str(image_file), raw.width, raw.height, text_source, boxes)

    def _embed_later(self, texts: list[str], images: list[Image.Image]) -> Future:
        """Embed on a worker thread: torch releases the GIL, so the next pages render meanwhile."""
        def embed() -> np.ndarray:
            if self.embedder.modality == "image":
                return self.embedder.encode_images(images)
            if not texts:
                return np.zeros((0, self.embedder.dim), np.float32)
            return np.vstack([self.embedder.encode_texts(texts[i : i + EMBED_BATCH]) for i in range(0, len(texts), EMBED_BATCH)])
        if self._embedding is None:
            self._embedding = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        return self._embedding.submit(embed)

    def _stem_for(self, source: SourceFile, n_pages: int, taken: set[str]) -> str:
        stem = source.path.stem[:100]  # keeps `{page_id}.jpg` well under file-name length limits
        wanted = [f"{stem}_{i}" for i in range(1, n_pages + 1)] if source.kind == "pdf" else [stem]
        if any(pid in self._pages or pid in taken for pid in wanted):
            return f"{stem}-{hashlib.sha1(str(source.path).encode()).hexdigest()[:6]}"
        return stem

    def _save_dense(self) -> None:
        if self._dense is not None:
            self._dense.save(self._store.dense_path)

    # ---- removal -----------------------------------------------------------------------------------
    def remove(self, items: Iterable[str]) -> list[str]:
        """Remove page ids, source files, or every source under a folder. Returns the removed page ids.
        A removed page of an unchanged PDF stays removed until that PDF changes."""
        with self._writing():
            return self._remove(items)

    def _remove(self, items: Iterable[str]) -> list[str]:
        removed: list[str] = []
        for item in [items] if isinstance(items, str) else items:
            item = str(item)
            if item in self._pages:
                removed += self._remove_page(item)
                continue
            root = Path(item).expanduser().resolve()
            sources = [s for s in self._records if _under(Path(s), [root])]
            if not sources:
                log.warning("remove: %r is neither an indexed page id nor an indexed source path", item)
            for source in sources:
                removed += self._drop_source(source)
        if removed:
            self._save_dense()
            self._store.write_manifest(list(self._records.values()), self.config.format_version)
        return removed

    def _remove_page(self, page_id: str) -> list[str]:
        record = self._records[self._pages[page_id].source]
        if len(record.pages) == 1:
            return self._drop_source(record.source)
        keep = [i for i, p in enumerate(record.pages) if p.page_id != page_id]
        record.pages = [record.pages[i] for i in keep]
        record.vids = [record.vids[i] for i in keep]
        record.vectors = record.vectors[keep]
        self._store.write_record(record)
        self._store.delete_image(page_id)
        self._uninstall_pages([page_id])
        return [page_id]

    # ---- search ------------------------------------------------------------------------------------
    def search(self, query: str, top_k: int = 10, mode: str = "fused") -> list[SearchHit]:
        """Best pages for `query`, best first. mode: "fused" (default), "dense" or "lexical"."""
        query = validate_query(query, top_k)
        if mode not in MODES:
            raise QueryError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        if not self._pages:
            return []
        k = max(top_k, self.config.candidates)
        rankings = {}
        if mode in ("fused", "dense") and self._dense is not None:
            scores, ids = self._dense.search(self.embedder.encode_query(query)[None, :], k)
            rankings["dense"] = (scores[0][ids[0] >= 0], ids[0][ids[0] >= 0])
        if mode in ("fused", "lexical"):
            rankings["lexical"] = self._lexical.search(tokenize(query), k)
        if mode == "fused":
            scores, ids = fuse(rankings, self.config.fusion, top_k)
        else:
            scores, ids = rankings.get(mode, (np.zeros(0), np.zeros(0, np.int64)))
        per_retriever = {name: dict(zip(r[1].tolist(), r[0].tolist())) for name, r in rankings.items()}
        hits = []
        for rank, (score, vid) in enumerate(zip(scores[:top_k], ids[:top_k]), start=1):
            page = self._pages[self._page_of[int(vid)]]
            own = {name: float(s[int(vid)]) for name, s in per_retriever.items() if int(vid) in s}
            hits.append(SearchHit(rank, float(score), page.page_id, page.image_file, page.source, page.page, own))
        return hits

    # ---- pages -------------------------------------------------------------------------------------
    def page(self, page_id: str) -> Page:
        """The page with this id; KeyError if there is none."""
        try:
            return self._pages[page_id]
        except KeyError:
            raise KeyError(f"no page {page_id!r} in the index at {self.folder}") from None

    def pages(self) -> list[Page]:
        return list(self._pages.values())

    def page_image(self, page_id: str) -> Image.Image:
        """The stored page image at full resolution (decoded, RGB)."""
        with Image.open(self.page(page_id).image_file) as image:
            return image.convert("RGB")

    def __len__(self) -> int:
        return len(self._pages)


@dataclasses.dataclass
class _ReadSource:
    """One source's pages, read and OCR'd, waiting to be embedded and committed."""

    source: SourceFile
    sha: str
    stem: str
    pages: list[Page] = dataclasses.field(default_factory=list)
    texts: list[str] = dataclasses.field(default_factory=list)
    images: list[Image.Image] = dataclasses.field(default_factory=list)
    batches: list[Future] = dataclasses.field(default_factory=list)  # vectors of pages[:submitted]
    submitted: int = 0


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)
