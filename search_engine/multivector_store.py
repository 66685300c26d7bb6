"""Multi-vector pages (late-interaction embedders) on disk: one append-only float16 file of rows.

    <index>/multivectors.f16   float16 rows of `dim` values (dim in meta `multivector_dim`), appended
    records.db: multivectors   (vid, start, n): page vid is rows [start, start + n) of the file

The spans live in the records (store.py) and commit in the SAME transaction as their page rows, so
a page and its vectors appear and disappear together. Guarantees, in the terms of store.py:
- Vectors are appended and fsynced before the transaction that names them (as page images are
  written before theirs), so a committed span never names missing or torn rows. A kill leaves at
  most a tail no record names; the next writer truncates it (`begin_write`). Readers never read it.
- Removing a page deletes its span row; its rows stay in the file as dead space (`dead_rows`), never
  read again. (No compaction yet: a re-ingest of everything rewrites the index.)
- Readers map the file read-only (np.memmap: nothing is read until a search touches it) and keep
  the live spans, sorted by start, in three int64 arrays (24 bytes a page); `refresh` reloads them
  after another process commits.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from .store import IndexStore

log = logging.getLogger(__name__)

FILE = "multivectors.f16"
DIM_KEY = "multivector_dim"


class MultiVectorStore:
    def __init__(self, store: IndexStore):
        self.store = store
        self.path = store.folder / FILE
        self.vids = np.zeros(0, np.int64)
        self.starts = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)
        self._by_vid = np.zeros(0, np.int64)  # order of `vids` (kept sorted by start) by vid
        self.matrix: np.ndarray | None = None  # (rows, dim) float16, mapped
        self.dim: int | None = None

    # ---- reading ---------------------------------------------------------------------------------------
    def load(self) -> None:
        """Read the live spans and map the file (cheap to call again after a commit)."""
        rows = self.store.multivector_spans()
        spans = np.array(rows, np.int64).reshape(-1, 3)
        order = np.argsort(spans[:, 1], kind="stable")
        self.vids, self.starts, self.counts = (np.ascontiguousarray(spans[order, i]) for i in range(3))
        self._by_vid = np.argsort(self.vids)  # for spans_of: sorted once here, not on every search
        dim = self.store.get_meta(DIM_KEY)
        self.dim = int(dim) if dim else None
        self._map()

    def _map(self) -> None:
        needed = int((self.starts + self.counts).max()) if len(self.starts) else 0
        if not needed or self.dim is None:
            self.matrix = None
            return
        rows = os.path.getsize(self.path) // (2 * self.dim)
        if rows < needed:
            raise RuntimeError(f"{self.path} holds {rows} rows but the records name {needed}: the file is damaged")
        self.matrix = np.memmap(self.path, np.float16, mode="r", shape=(rows, self.dim))

    def __len__(self) -> int:
        return len(self.vids)

    def spans_of(self, vids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vids found, their starts, counts) for the asked vids (missing ones left out)."""
        vids = np.asarray(vids, np.int64)
        if not len(self.vids):
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        at = np.minimum(np.searchsorted(self.vids, vids, sorter=self._by_vid), len(self.vids) - 1)
        idx = self._by_vid[at]
        hit = self.vids[idx] == vids
        idx = idx[hit]
        return self.vids[idx], self.starts[idx], self.counts[idx]

    def page(self, vid: int) -> np.ndarray:
        """(n, dim) float32 vectors of one page; KeyError if it has none."""
        found, starts, counts = self.spans_of(np.array([vid], np.int64))
        if not len(found):
            raise KeyError(f"no multi-vectors for vid {vid}")
        return np.asarray(self.matrix[starts[0] : starts[0] + counts[0]], np.float32)

    def dead_rows(self) -> int:
        total = os.path.getsize(self.path) // (2 * self.dim) if self.dim and self.path.exists() else 0
        return int(total - self.counts.sum())

    def bytes_per_page(self) -> float:
        return float(self.counts.mean() * 2 * self.dim) if len(self.counts) and self.dim else 0.0

    # ---- writing (inside the writer lock) -----------------------------------------------------------------
    def begin_write(self) -> None:
        """Cut a tail no record names (left by a killed writer) so appends start after named rows."""
        if not self.path.exists() or self.dim is None:
            return
        named = self.store.multivector_end()
        if os.path.getsize(self.path) > named * 2 * self.dim:
            log.info("%s: dropping %d unnamed rows left by an unfinished ingest", self.path,
                     os.path.getsize(self.path) // (2 * self.dim) - named)
            os.truncate(self.path, named * 2 * self.dim)

    def append(self, pages: list[np.ndarray]) -> list[tuple[int, int]]:
        """Append pages' (n_i, dim) vectors as float16, durably; returns their (start, n) spans for the
        transaction that commits the pages (store.commit_pages)."""
        if not pages:
            return []
        dim = int(pages[0].shape[1])
        if self.dim is None:
            self.store.set_meta(DIM_KEY, str(dim))
            self.dim = dim
        if any(p.ndim != 2 or p.shape[1] != self.dim or p.shape[0] < 1 for p in pages):
            raise ValueError(f"multi-vectors must be (n >= 1, {self.dim}) arrays")
        with open(self.path, "ab") as f:
            start = f.tell() // (2 * self.dim)
            spans = []
            for page in pages:
                f.write(np.ascontiguousarray(page, np.float16).tobytes())
                spans.append((start, int(page.shape[0])))
                start += int(page.shape[0])
            f.flush()
            os.fsync(f.fileno())
        return spans
