"""Dense vector index over FAISS: inner product on L2-normalised float32 vectors (= cosine).

Two structures, chosen by `DenseConfig.kind`:
- "flat": exact search (`IndexFlatIP` inside an `IndexIDMap2`). Costs one pass over every vector per
  query: ~1 ms at 10k pages, ~10-20 ms at 100k on 2 cores, too slow at 1M.
- "hnsw": approximate search (`IndexHNSWFlat`, graph of `hnsw_m` links per vector). Sub-millisecond
  to a few ms per query at 1M pages with recall@10 ~0.99 at the default `ef_search`; building it is
  the slow part (minutes per million vectors on 2 cores).
- "auto" (default): flat until the index holds more than `exact_max` vectors, then it converts itself
  to HNSW once (the vectors are read back out of the flat index, so nothing else must keep them).

HNSW graphs cannot delete nodes. Removed ids are kept as tombstones and filtered out at search time
with an `IDSelectorNot`; when tombstones pass `compact_ratio` of the index, it is rebuilt without them.
Ids are int64 chosen by the caller and must never be reused (DocumentIndex hands out increasing ids).

Threads: FAISS uses OpenMP across all cores. For one query at a time on a busy 2-core machine,
`faiss.omp_set_num_threads(1)` was 5-10x faster here (flat, 100k: 20 ms vs 130 ms under load);
that is a process-wide setting, so it is left to the caller (CLI/server/benchmark).
"""
from __future__ import annotations

import io
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)

_IDMAP2 = b"IxM2"  # FAISS's tag for an IndexIDMap2 file: tag, then d (int32) and ntotal (int64)


def graph_bytes(header: bytes, size: int) -> int | None:
    """Where the vectors of a checkpoint file of `size` bytes start, from its first 16 bytes: the
    file ends with ntotal * d float32 (the storage) then the id map (its length, int64, and ntotal
    int64 ids). None for a file that is not an IndexIDMap2."""
    if len(header) < 16 or header[:4] != _IDMAP2:
        return None
    dim, ntotal = int.from_bytes(header[4:8], "little"), int.from_bytes(header[8:16], "little")
    return max(0, size - ntotal * (4 * dim + 8) - 8)


def prefetch_mapped(path) -> None:
    """Make a cold memory-mapped HNSW checkpoint quick to open and to search.

    FAISS copies the graph (the neighbour lists, ~280 MB at 1M vectors) out of the mapping page
    fault by page fault, 5-15 s here when the file is not in the page cache, and then reads vectors at
    random, a fault each. Read sequentially in large blocks, the same graph takes under a second. So:
    the file up to the vectors (an IndexIDMap2 of IndexHNSWFlat: header and graph, then ntotal * d
    float32, then the ids) is read once now, and the kernel is asked to read the rest in the
    background (POSIX_FADV_WILLNEED), so that early searches find most vectors already in memory.
    Advisory only: any error leaves the file to FAISS as it is."""
    try:
        with open(path, "rb", buffering=0) as f:
            graph_end = graph_bytes(f.read(16), os.fstat(f.fileno()).st_size)
            if graph_end is None:
                return
            os.posix_fadvise(f.fileno(), graph_end, 0, os.POSIX_FADV_WILLNEED)
            while f.tell() < graph_end and f.read(min(16 << 20, graph_end - f.tell())):
                pass
    except (OSError, AttributeError) as e:  # AttributeError: no posix_fadvise on this platform
        log.debug("no prefetch of %s: %s", path, e)


@dataclass
class DenseConfig:
    kind: str = "auto"  # "auto" | "flat" | "hnsw"
    exact_max: int = 20_000  # "auto" switches to HNSW above this many vectors
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    compact_ratio: float = 0.2  # rebuild an HNSW index once this share of it is tombstones

    def to_dict(self) -> dict:
        return asdict(self)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """float32, C-contiguous, unit rows (zero rows stay zero)."""
    v = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


class DenseIndex:
    def __init__(self, dim: int, config: DenseConfig | None = None):
        self.dim = dim
        self.config = config or DenseConfig()
        if self.config.kind not in ("auto", "flat", "hnsw"):
            raise ValueError(f"unknown dense index kind {self.config.kind!r}; use auto, flat or hnsw")
        self._index = self._empty("hnsw" if self.config.kind == "hnsw" else "flat")
        self._deleted: set[int] = set()

    # ---- structure -------------------------------------------------------------------------------
    def _empty(self, kind: str) -> faiss.IndexIDMap2:
        if kind == "flat":
            inner = faiss.IndexFlatIP(self.dim)
        else:
            inner = faiss.IndexHNSWFlat(self.dim, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.config.ef_construction
            inner.hnsw.efSearch = self.config.ef_search
        return faiss.IndexIDMap2(inner)

    @property
    def kind(self) -> str:
        return "hnsw" if isinstance(faiss.downcast_index(self._index.index), faiss.IndexHNSW) else "flat"

    def _all_ids(self) -> np.ndarray:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def _rebuild(self, kind: str) -> None:
        """Copy the live vectors into a fresh index of `kind` (drops tombstones)."""
        ids = self._all_ids()
        keep = ids[~np.isin(ids, np.fromiter(self._deleted, np.int64, len(self._deleted)))]
        vectors = np.vstack([self._index.reconstruct(int(i)) for i in keep]) if len(keep) else None
        log.info("rebuilding dense index as %s with %d vectors", kind, len(keep))
        self._index = self._empty(kind)
        self._deleted = set()
        if vectors is not None:
            self._add_in_batches(keep, vectors)

    def _add_in_batches(self, ids: np.ndarray, vectors: np.ndarray, batch: int = 65536) -> None:
        for start in range(0, len(ids), batch):
            self._index.add_with_ids(vectors[start : start + batch], ids[start : start + batch])

    # ---- public API ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._index.ntotal - len(self._deleted)

    def ids(self, include_removed: bool = False) -> np.ndarray:
        """The ids currently searchable (plus tombstoned ones, which must not be reused, if asked)."""
        ids = self._all_ids()
        if include_removed:
            return ids
        return ids[~np.isin(ids, np.fromiter(self._deleted, np.int64, len(self._deleted)))] if self._deleted else ids

    def add(self, ids, vectors) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = normalise(vectors)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected {len(ids)} vectors of dim {self.dim}, got shape {vectors.shape}")
        if len(ids) == 0:
            return
        if len(np.unique(ids)) != len(ids) or np.isin(ids, self._all_ids()).any():
            raise ValueError("dense index ids must be new and unique (ids are never reused)")
        if self.config.kind == "auto" and self.kind == "flat" and len(self) + len(ids) > self.config.exact_max:
            self._rebuild("hnsw")
        self._add_in_batches(ids, vectors)

    def remove(self, ids) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        present = ids[np.isin(ids, self._all_ids())]
        if self.kind == "flat":
            self._index.remove_ids(faiss.IDSelectorBatch(present))
            return
        self._deleted.update(int(i) for i in present)
        if self._deleted and len(self._deleted) >= self.config.compact_ratio * self._index.ntotal:
            self._rebuild("hnsw" if len(self) > self.config.exact_max or self.config.kind == "hnsw" else "flat")

    def search(self, query_vectors, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by cosine. Returns (scores, ids), both shaped (n_queries, k); missing slots have id -1."""
        queries = normalise(query_vectors)
        if self._index.ntotal == 0:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        params = None
        if self._deleted:
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self._deleted, np.int64)))
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.config.ef_search, k))
        elif self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.config.ef_search, k))
        scores, ids = self._index.search(queries, k, params=params)
        scores[ids < 0] = -np.inf
        return scores, ids

    # ---- persistence: one file, replaced atomically ----------------------------------------------
    def save(self, path) -> None:
        path = Path(path)
        buffer = io.BytesIO()
        np.savez(
            buffer,
            index=faiss.serialize_index(self._index),
            deleted=np.fromiter(self._deleted, np.int64, len(self._deleted)),
            dim=np.int64(self.dim),
        )
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def write(self, path) -> None:
        """The FAISS index alone, in FAISS's own format (readable memory-mapped); the caller keeps
        the tombstones (`removed()`) and replaces the file atomically."""
        faiss.write_index(self._index, str(path))

    def removed(self) -> list[int]:
        return sorted(self._deleted)

    @classmethod
    def read(cls, path, config: DenseConfig | None = None, removed=(), mmap: bool = False) -> "DenseIndex":
        """Read a file written by `write`. `mmap` maps it read-only instead of loading it (HNSW only:
        such an index can be searched and given tombstones, never added to in place)."""
        if mmap:
            prefetch_mapped(path)
        flags = faiss.IO_FLAG_MMAP_IFC if mmap else 0
        index = faiss.read_index(str(path), flags)
        dense = cls(index.d, config)
        dense._index = faiss.downcast_index(index) if not isinstance(index, faiss.IndexIDMap2) else index
        dense._deleted = {int(i) for i in removed}
        if dense.kind == "hnsw":
            faiss.downcast_index(dense._index.index).hnsw.efSearch = dense.config.ef_search
        return dense

    @classmethod
    def load(cls, path, config: DenseConfig | None = None) -> "DenseIndex":
        with np.load(Path(path)) as data:
            dense = cls(int(data["dim"]), config)
            dense._index = faiss.deserialize_index(data["index"])  # already an IndexIDMap2
            dense._deleted = set(int(i) for i in data["deleted"])
        if dense.kind == "hnsw":
            faiss.downcast_index(dense._index.index).hnsw.efSearch = dense.config.ef_search
        return dense
