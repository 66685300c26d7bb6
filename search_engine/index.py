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
from .sources import SourceFile, discover, file_sha256, still_there
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
    def _install(self, record: SourceRecord, add_vectors: bool = True, first: int = 0) -> None:
        """Make the record's pages from `first` on searchable (earlier ones are already installed)."""
        self._records[record.source] = record
        for vid, page in zip(record.vids[first:], record.pages[first:]):
            self._pages[page.page_id] = page
            self._vid_of[page.page_id] = vid
            self._page_of[vid] = page.page_id
            self._lexical.add(vid, tokenize(page.text))
        if add_vectors and len(record.vids) > first:
            if self._dense is None:
                self._dense = DenseIndex(record.vectors.shape[1], self.config.dense)
            self._dense.add(record.vids[first:], record.vectors[first:])

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
            self._drop_missing(paths, files, report)
        counted = []
        for source, sha, resume in todo:
            try:
                counted.append((source, sha, resume, count_pages(source)))
            except SourceError as e:
                report.skipped.append(SkippedFile(str(source.path), str(e)))
                if str(source.path) in self._records:  # changed into something unreadable: stale pages go
                    report.removed += self._drop_source(str(source.path))
        total = sum(n - (r.pages_read if r else 0) for _, _, r, n in counted)
        done = 0
        last_checkpoint = waiting_since = time.monotonic()
        pending: list[_ReadSource] = []  # read but not yet embedded and committed
        for source, sha, resume, n_pages in counted:
            if resume is None and str(source.path) in self._records:
                report.removed += self._drop_source(str(source.path))
            read = _ReadSource(source, sha, resume.stem if resume else self._stem_for(source, n_pages, pending),
                               n_pages, record=resume, pages_read=resume.pages_read if resume else 0)
            if resume:
                log.info("resuming %s after page %d of %d", source.path, read.pages_read, n_pages)
            if not pending:
                waiting_since = time.monotonic()
            pending.append(read)
            try:
                raws = read_pages(source, self.config.dpi, self.config.max_image_pixels, self.config.jpeg_quality,
                                  first=read.pages_read + 1)
                for number, raw in raws:
                    if isinstance(raw, SourceError):
                        report.skipped.append(SkippedFile(f"{source.path}#page={number}", str(raw)))
                    else:
                        read.add(self._make_page(source, read.stem, raw), raw, self.embedder.modality == "image")
                    read.pages_read = number
                    done += 1
                    if progress:
                        progress(done, total, f"{source.path.name} page {number}/{n_pages}")
                    if (sum(len(r.pages) for r in pending) >= EMBED_BATCH
                            or time.monotonic() - waiting_since > COMMIT_SECONDS):
                        self._commit(pending, report)  # a long PDF is committed chunk by chunk
                        pending = [read] if read.pages_read < n_pages else []
                        waiting_since = time.monotonic()
            except SourceError as e:  # what was read of it stays; the source counts as done
                report.skipped.append(SkippedFile(str(source.path), str(e)))
                read.pages_read = n_pages
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

    def _drop_missing(self, paths, files: list[SourceFile], report: IngestReport) -> None:
        """Drop the indexed sources under `paths` that are gone. A source that is still there but could
        not be read now (under a folder that cannot be listed, or a file without read permission)
        keeps its pages, and the report says so."""
        found = {str(f.path) for f in files}
        roots = [Path(p).expanduser().absolute() for p in paths]
        roots += [r.resolve() for r in roots if r.resolve() != r]
        unlisted = [Path(s.path) for s in report.skipped if s.kind == "folder"]
        kept: dict[str, int] = {}
        for source in [s for s in self._records if s not in found and _under(Path(s), roots)]:
            blocked = next((str(f) for f in unlisted if _under(Path(source), [f])), None)
            if blocked is None and still_there(source) and not _readable(source):
                blocked = source
            if blocked is None:
                report.removed += self._drop_source(source)
            else:
                kept[blocked] = kept.get(blocked, 0) + 1
        if kept:
            report.skipped = [_kept_note(s, kept.get(s.path, 0)) for s in report.skipped]
            named = {s.path for s in report.skipped}
            report.skipped += [SkippedFile(p, "cannot read it now; its indexed pages are kept") for p in kept if p not in named]

    def _changed(self, files: list[SourceFile], report: IngestReport) -> list[tuple[SourceFile, str, SourceRecord | None]]:
        """New, changed or half-committed files with their content hash (and the record to resume).
        Same size and mtime as recorded = unchanged without reading the file; otherwise the SHA-256
        decides (a `touch` does not cause a re-ingest)."""
        todo = []
        for source in files:
            record = self._records.get(str(source.path))
            if record and (record.size, record.mtime_ns) == (source.size, source.mtime_ns):
                if record.complete:
                    report.unchanged_files += 1
                else:
                    todo.append((source, record.sha256, record))
                continue
            try:
                sha = file_sha256(source.path)
            except OSError as e:
                report.skipped.append(SkippedFile(str(source.path), f"cannot read the file: {e.strerror or e}"))
                continue
            if record and record.sha256 == sha:
                record.size, record.mtime_ns = source.size, source.mtime_ns
                self._store.write_record(record)
                if record.complete:
                    report.unchanged_files += 1
                else:
                    todo.append((source, sha, record))
            else:
                todo.append((source, sha, None))
        return todo

    def _commit(self, pending: list["_ReadSource"], report: IngestReport) -> None:
        """Embed the new pages of the pending sources in one go, then commit each source's record
        (a source still being read is committed as incomplete, and resumed from there)."""
        pending = [r for r in pending if r.pages or (r.record is not None and (
            r.record.complete, r.record.pages_read) != (r.complete, r.pages_read))]
        if not pending:
            return
        vectors = self._embed([t for r in pending for t in r.texts], [i for r in pending for i in r.images])
        start = 0
        for read in pending:
            n = len(read.pages)
            vids = list(range(self._next_vid, self._next_vid + n))
            self._next_vid += n
            new_vectors = vectors[start : start + n]
            start += n
            source = read.source
            if read.record is None:
                read.record = SourceRecord(str(source.path), read.sha, source.size, source.mtime_ns, [], [],
                                           np.zeros((0, vectors.shape[1]), np.float32), stem=read.stem)
            record = read.record
            record.size, record.mtime_ns = source.size, source.mtime_ns
            record.vids, record.pages = record.vids + vids, record.pages + read.pages
            record.vectors = np.vstack([record.vectors.reshape(-1, new_vectors.shape[1]), new_vectors])
            record.pages_read, record.complete = read.pages_read, read.complete
            self._store.write_record(record)  # the commit point for this source (or this chunk of it)
            self._install(record, first=len(record.pages) - n)
            report.added += [p.page_id for p in read.pages]
            read.pages, read.texts, read.images = [], [], []

    def _make_page(self, source: SourceFile, stem: str, raw: RawPage) -> Page:
        boxes, text_source = page_boxes(raw, self.ocr, self.config.min_text_chars)
        page_id = f"{stem}_{raw.number}" if source.kind == "pdf" else stem
        image_file = self._store.write_image(page_id, raw.jpeg)
        return Page(page_id, str(source.path), raw.number, str(image_file), raw.width, raw.height, text_source, boxes)

    def _embed(self, texts: list[str], images: list[Image.Image]) -> np.ndarray:
        if self.embedder.modality == "image":
            return self.embedder.encode_images(images)
        if not texts:
            return np.zeros((0, self.embedder.dim), np.float32)
        return np.vstack([self.embedder.encode_texts(texts[i : i + EMBED_BATCH]) for i in range(0, len(texts), EMBED_BATCH)])

    def _stem_for(self, source: SourceFile, n_pages: int, pending: list["_ReadSource"]) -> str:
        taken = {p.page_id for r in pending for p in r.pages}
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
    """One source being read: its pages read since the last commit, waiting to be embedded and
    committed, and what of it is already committed (`record`)."""

    source: SourceFile
    sha: str
    stem: str
    n_pages: int
    record: SourceRecord | None = None
    pages_read: int = 0
    pages: list[Page] = dataclasses.field(default_factory=list)
    texts: list[str] = dataclasses.field(default_factory=list)
    images: list[Image.Image] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.pages_read >= self.n_pages

    def add(self, page: Page, raw: RawPage, keep_image: bool) -> None:
        self.pages.append(page)
        self.texts.append(" ".join(b.text for b in page.boxes))
        if keep_image:
            self.images.append(raw.rgb())


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


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)
