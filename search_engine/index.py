"""DocumentIndex: ingest a folder of PDFs and page images, keep it in sync, and search it.

A facade over three parts:
- a backend that stores pages and runs the two retrievers: "local" (backend_local.py: SQLite
  records, tantivy BM25, FAISS, all in the index folder) or "milvus" (backend_milvus.py: a Milvus
  server or Milvus Lite holding the records, the vectors and its own BM25), chosen by
  `IndexConfig.backend`; both give the same API and the same hits;
- the ingest pipeline (ingest.py), which reads pages in a process pool and commits them in order;
- search: the query embedding, each retriever's ranking, and fusion (fusion.py).

Search runs two retrievers over the page text (PDF text layer or OCR) and fuses their rankings:
dense (sentence embeddings) for meaning, lexical (BM25) for exact words, numbers and Chinese.

Page ids follow the reference naming: `{stem}_{page}` (1-based) for PDF pages, the file stem for
images. When a new source's ids would collide with pages of another source (two `report.pdf` in
different folders, `a.png` next to `a.jpg`, an image `x_1.png` beside `x.pdf`), the newcomer's stem
gets a suffix from a hash of its path, `{stem}-{6 hex}`, which stays the same across re-ingests.
Sources are processed in sorted path order, so which file keeps the plain stem is deterministic.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from .config import BACKENDS, FORMAT_VERSION, IndexConfig
from .embedders import Embedder, is_multivector, load_embedder
from .fusion import fuse
from .ingest import Ingestor, Progress, under
from .ocr import OcrEngine
from .query import QueryError, validate_query
from .store import IndexStore
from .types import IngestReport, Page, SearchHit

log = logging.getLogger(__name__)

MODES = ("fused", "dense", "lexical")
__all__ = ["DocumentIndex", "IndexConfig", "MODES", "Progress"]


def make_backend(folder: Path, config: IndexConfig):
    if config.backend == "milvus" and is_multivector(config.embedder):
        raise ValueError(f"the milvus backend stores one vector per page; the late-interaction embedder "
                         f"{config.embedder!r} needs the local backend (--backend local)")
    if config.backend == "local":
        from .backend_local import LocalBackend

        return LocalBackend(folder, config)
    if config.backend == "milvus":
        from .backend_milvus import MilvusBackend

        return MilvusBackend(folder, config)
    raise ValueError(f"unknown backend {config.backend!r}; use one of {', '.join(BACKENDS)}")


class DocumentIndex:
    def __init__(self, backend, config: IndexConfig, embedder: Embedder | None, ocr: OcrEngine | None):
        """Use DocumentIndex.open."""
        self.folder = backend.folder
        self.config = config
        self._backend = backend
        self._folder_store = IndexStore(self.folder)  # config.json, the writer lock
        self._embedder = embedder
        self._ocr = ocr
        # BM25 beside the query embedding (see `search`); threads start on first use, several for a
        # server's concurrent searches
        self._lexical_threads = ThreadPoolExecutor(4, thread_name_prefix="lexical-search")

    # ---- opening -----------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder, *, embedder: Embedder | None = None, config: IndexConfig | None = None,
             ocr: OcrEngine | None = None) -> "DocumentIndex":
        """Open the index in `folder`, creating it if missing and rebuilding it if it is outdated.

        With `config=None` an existing index keeps the settings that decide its content (embedder, DPI,
        OCR, backend: `IndexConfig.identity()`) and takes search-time settings (fusion, candidates) from
        the defaults; a new index gets the defaults, with `embedder.name` if an embedder is given.
        Models load lazily, on first use.
        """
        folder = Path(folder).expanduser().resolve()
        store = IndexStore(folder)
        stored = store.read_config()
        if config is None:  # keep what decides the stored content; search-time settings from the defaults
            kept = IndexConfig.from_dict(stored).identity() if stored else {}
            if stored and int(stored.get("format_version", 0)) != FORMAT_VERSION:
                kept = {k: v for k, v in kept.items() if k in ("embedder", "model_path", "pool_factor", "vlm_pooling",
                                                               "dpi", "min_text_chars", "ocr_min_confidence",
                                                               "ocr_max_side")}
            config = IndexConfig(**{k: v for k, v in kept.items() if k != "format_version"})
            if embedder is not None:
                config.embedder = embedder.name
        config = dataclasses.replace(config, format_version=FORMAT_VERSION)  # the only format this code reads
        if embedder is not None and embedder.name != config.embedder:
            raise ValueError(f"embedder {embedder.name!r} does not match config.embedder {config.embedder!r}")
        index = cls(make_backend(folder, config), config, embedder, ocr)
        if stored != config.to_dict():
            with store.writer_lock():  # creating, re-configuring or rebuilding: one writer at a time
                stored = store.read_config()
                if stored and IndexConfig.from_dict(stored).identity() != config.identity():
                    index._rebuild(stored)
                    return index
                if stored != config.to_dict():
                    store.create(config.to_dict())  # new index, or only search-time settings changed
        index._backend.load()
        return index

    def _rebuild(self, stored: dict) -> None:
        old = IndexConfig.from_dict(stored).identity()
        sources = self._folder_store.known_sources()
        log.warning("index %s was built with %s; rebuilding it with %s from %d source files (an index of "
                    "format %s cannot be read by this version, format %d)", self.folder, old, self.config.identity(),
                    len(sources), old.get("format_version"), FORMAT_VERSION)
        self._folder_store.wipe()
        self._backend.wipe()
        self._folder_store.create(self.config.to_dict())
        self._backend.load()
        still_there = [s for s in sources if Path(s).exists()]
        self._backend.begin_write()
        try:
            if still_there:
                self._ingestor().sync(still_there, None, drop_missing=False)
        finally:
            self._backend.end_write(self.config.format_version)

    @contextlib.contextmanager
    def _writing(self):
        """Hold the folder's writer lock, catch up with whatever another writer committed, clear what
        an unfinished change left (store.IndexStore.begin_changes), and finish the derived indexes
        (checkpoint, manifest) when done."""
        with self._folder_store.writer_lock():
            self._backend.begin_write()
            try:
                images = self._backend.images
                if images.begin_changes():  # the last change was killed or failed: images it left behind go
                    images.remove_orphan_images(self._backend.taken_page_ids)
                yield
                images.end_changes()
            finally:
                self._backend.end_write(self.config.format_version)

    # ---- models (loaded on first use) --------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            c = self.config
            self._embedder = load_embedder(c.embedder, c.model_path or None, device=c.device, dtype=c.dtype,
                                           pool_factor=c.pool_factor, pooling=c.vlm_pooling)
        return self._embedder

    @property
    def ocr(self) -> OcrEngine:
        if self._ocr is None:
            self._ocr = OcrEngine(self.config.ocr_min_confidence, self.config.ocr_max_side,
                                  threads=self.config.ocr_threads)
        return self._ocr

    @property
    def backend(self):
        """The storage and retrieval backend (backend_local.LocalBackend or backend_milvus.MilvusBackend)."""
        return self._backend

    # ---- ingestion ---------------------------------------------------------------------------------
    def _ingestor(self) -> Ingestor:
        return Ingestor(self._backend, self.config, lambda: self.embedder, lambda: self.ocr)

    def ingest(self, paths, progress: Progress | None = None) -> IngestReport:
        """Sync the index with `paths`: add new and changed files, drop pages of files that are gone
        from under these paths. Other indexed sources are left alone. A changed file's page ids appear
        in the report twice: in `removed` (old) and `added` (new)."""
        with self._writing():
            return self._ingestor().sync(paths, progress, drop_missing=True)

    def add(self, paths, progress: Progress | None = None) -> IngestReport:
        """Add new and changed files under `paths`; never drops anything."""
        with self._writing():
            return self._ingestor().sync(paths, progress, drop_missing=False)

    # ---- removal -----------------------------------------------------------------------------------
    def remove(self, items: Iterable[str]) -> list[str]:
        """Remove page ids, source files, or every source under a folder. Returns the removed page ids.
        A removed page of an unchanged PDF stays removed until that PDF changes."""
        with self._writing():
            removed: list[str] = []
            for item in [items] if isinstance(items, str) else items:
                item = str(item)
                if self._backend.remove_page(item):
                    removed.append(item)
                    continue
                root = Path(item).expanduser().resolve()
                sources = [s for s in self._backend.sources() if under(Path(s), [root])]
                if not sources:
                    log.warning("remove: %r is neither an indexed page id nor an indexed source path", item)
                for source in sorted(sources):
                    removed += self._backend.drop_source(source)
            return removed

    # ---- search ------------------------------------------------------------------------------------
    def search(self, query: str, top_k: int = 10, mode: str = "fused") -> list[SearchHit]:
        """Best pages for `query`, best first. mode: "fused" (default), "dense" or "lexical"."""
        query = validate_query(query, top_k)
        if mode not in MODES:
            raise QueryError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        self._backend.refresh()
        k = max(top_k, self.config.candidates)
        vector, fused, rankings = None, None, {}
        own_fusion = getattr(self._backend, "fused_search", None) if mode == "fused" else None
        if own_fusion is not None:  # the backend may fuse the rankings itself (Milvus hybrid search with RRF)
            vector = self.embedder.encode_query(query)
            fused = own_fusion(vector, query, top_k + 10, self.config.fusion)
        if fused is not None:
            scores, ids = fused
        else:
            rankings = self._rankings(query, mode, k, vector)
            if mode == "fused":
                scores, ids = fuse(rankings, self.config.fusion, top_k + 10)  # a few spare: see below
            else:
                scores, ids = rankings.get(mode, (np.zeros(0), np.zeros(0, np.int64)))
        per_retriever = {name: dict(zip(r[1].tolist(), r[0].tolist())) for name, r in rankings.items()}
        meta = self._backend.hit_meta([int(v) for v in ids[: top_k + 10]])
        hits = []
        for score, vid in zip(scores, ids):
            page = meta.get(int(vid))
            if page is None:  # removed by another process since the retrievers last caught up
                continue
            own = {name: float(s[int(vid)]) for name, s in per_retriever.items() if int(vid) in s}
            image = str(self._backend.image_path(page.page_id))
            hits.append(SearchHit(len(hits) + 1, float(score), page.page_id, image, page.source, page.page, own))
            if len(hits) == top_k:
                break
        return hits

    def _rankings(self, query: str, mode: str, k: int, vector: np.ndarray | None) -> dict:
        """Each retriever's top k (scores, vids) for `mode`, the empty ones left out; `vector` is the query's
        embedding if the caller has it already. Fused: BM25 runs in a second thread while the query is
        embedded (unless given) and the vectors searched (ONNX Runtime and FAISS release the GIL; the
        records' connection is locked). On two cores at 1M pages that takes the wall time from
        ~18 to ~11 ms; the CPU time is the same."""
        rankings = {}
        lexical = self._lexical_threads.submit(self._backend.lexical_search, query, k) if mode == "fused" else None
        if mode in ("fused", "dense"):
            if vector is None:
                vector = self.embedder.encode_query(query)
            rankings["dense"] = self._backend.dense_search(vector, k)
        if mode == "lexical":
            rankings["lexical"] = self._backend.lexical_search(query, k)
        elif lexical is not None:
            rankings["lexical"] = lexical.result()
        return {name: r for name, r in rankings.items() if len(r[1])}

    # ---- pages -------------------------------------------------------------------------------------
    def page(self, page_id: str) -> Page:
        """The page with this id (read from the records); KeyError if there is none."""
        page = self._backend.page(page_id)
        if page is None:
            raise KeyError(f"no page {page_id!r} in the index at {self.folder}")
        return page

    def pages(self) -> list[Page]:
        """Every page with its boxes (reads them all: fine for thousands of pages, slow for millions)."""
        return list(self._backend.iter_pages())

    def page_image(self, page_id: str) -> Image.Image:
        """The stored page image at full resolution (decoded, RGB)."""
        with Image.open(self.page(page_id).image_file) as image:
            return image.convert("RGB")

    def __len__(self) -> int:
        return self._backend.count()

    def close(self) -> None:
        self._lexical_threads.shutdown(wait=True)
        self._backend.close()
