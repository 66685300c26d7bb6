"""The page vectors of an index folder: a FAISS checkpoint on disk plus the vectors committed since.

    <index>/dense-<seq>.faiss   the checkpoint (FAISS format), as of change-log entry <seq>
    <index>/dense.json          {"file", "seq", "dim", "removed"}: names the checkpoint (replaced atomically)

The records (store.py) hold every vector and a log of the vids added and removed. Opening reads the
checkpoint (memory-mapped when it is an HNSW graph, so a million vectors open in well under a second
and only the parts a search touches are read) and replays the log after its <seq>: new vectors go
into a small exact `delta` index, removals become tombstones. A search asks both and merges. So
adding ten pages to a million-page index costs ten vector inserts, not a rebuild or a 1.5 GB write.
The writer folds the delta into a new checkpoint once it holds `checkpoint_every` vectors (an HNSW
insert is about a millisecond at 1M vectors) and the log before that checkpoint can then be dropped.

A kill at any point leaves the old dense.json naming a complete old checkpoint, and the log still
holds everything after it.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from .dense import DenseConfig, DenseIndex
from .store import IndexStore, atomic_write

log = logging.getLogger(__name__)


class DenseStore:
    def __init__(self, store: IndexStore, config: DenseConfig, checkpoint_every: int = 20_000):
        self.store = store
        self.config = config
        self.checkpoint_every = checkpoint_every
        self.meta_path = store.folder / "dense.json"
        self.base: DenseIndex | None = None  # the checkpoint
        self.delta: DenseIndex | None = None  # vectors added after it (exact search)
        self.base_seq = 0  # log position of the checkpoint
        self.seq = 0  # log position applied in memory
        self.removed_since = 0  # tombstones given to the checkpoint since it was written
        self._mapped = False
        self._pending: list[tuple[int, np.ndarray]] = []  # delta vectors of the entries being applied

    @property
    def dim(self) -> int | None:
        for index in (self.base, self.delta):
            if index is not None:
                return index.dim
        return None

    def __len__(self) -> int:
        return sum(len(i) for i in (self.base, self.delta) if i is not None)

    # ---- opening and catching up ---------------------------------------------------------------------
    def load(self) -> None:
        self.base, self.delta, self.base_seq, self.seq, self.removed_since = None, None, 0, 0, 0
        meta = self._read_meta()
        if meta is not None:
            path = self.store.folder / meta["file"]
            try:
                self.base = DenseIndex.read(path, self.config, meta.get("removed", ()), mmap=meta.get("kind") == "hnsw")
                self._mapped = meta.get("kind") == "hnsw"
                self.base_seq = self.seq = int(meta["seq"])
            except (RuntimeError, OSError) as e:  # a missing or damaged checkpoint: rebuilt from the records
                log.warning("dense checkpoint %s unreadable (%s): rebuilding it from the records", path, e)
                self.base = None
        if self.base is None:
            self._rebuild_from_records()
        self.catch_up()

    def _read_meta(self) -> dict | None:
        try:
            return json.loads(self.meta_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("unreadable %s (%s): rebuilding the dense index from the records", self.meta_path, e)
            return None

    def _rebuild_from_records(self) -> None:
        """Every live vector into a new base (in memory; the writer checkpoints it)."""
        self.seq = self.base_seq = 0
        last = self.store.last_seq()
        for vids, vectors in self.store.iter_vectors():
            if self.base is None:
                self.base = DenseIndex(vectors.shape[1], self.config)
            self.base.add(vids, vectors)
        self._mapped = False
        self.seq = last
        self.base_seq = -1  # not on disk: the next checkpoint writes it

    def catch_up(self) -> int:
        """Apply the change log after what this process has seen (another writer's commits, or what a
        killed ingest committed after the checkpoint). Returns how many entries were applied."""
        applied = 0
        while True:
            changes = self.store.changes_since(self.seq)
            if not changes:
                return applied
            self.apply(changes)
            applied += len(changes)

    def apply(self, changes: list[tuple[int, int, bool]], vectors: dict[int, np.ndarray] | None = None) -> None:
        """Apply change-log entries (seq, vid, added) in order. `vectors` may carry the new vectors
        (the writer has them at hand); otherwise they are read from the records (only live pages)."""
        if not changes:
            return
        added = [vid for _, vid, is_add in changes if is_add]
        if vectors is None:
            vectors = self.store.vectors(added)
        removed: list[int] = []
        for _, vid, is_add in changes:
            if is_add:
                if vid in vectors:
                    self._add_delta(vid, vectors[vid])
            else:
                removed.append(vid)
        self._flush_delta()
        if removed:
            self._remove(removed)
        self.seq = changes[-1][0]

    def _add_delta(self, vid: int, vector: np.ndarray) -> None:
        self._pending.append((vid, vector))

    def _flush_delta(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        vids = np.array([v for v, _ in pending], np.int64)
        vectors = np.vstack([v for _, v in pending])
        if self.delta is None:
            self.delta = DenseIndex(vectors.shape[1], DenseConfig(kind="flat"))
        self.delta.add(vids, vectors)

    def _remove(self, vids: list[int]) -> None:
        if self.delta is not None:
            self.delta.remove(vids)
        if self.base is not None:
            before = len(self.base)
            if self._mapped:  # a mapped graph takes tombstones only; compaction happens at the next checkpoint
                present = np.asarray(vids, np.int64)
                present = present[np.isin(present, self.base.ids(include_removed=True))]
                self.base._deleted.update(int(v) for v in present)
            else:
                self.base.remove(vids)
            self.removed_since += before - len(self.base)

    # ---- search --------------------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, vids) over the checkpoint and the delta, best first."""
        parts = [i.search(query[None, :], k) for i in (self.base, self.delta) if i is not None and len(i)]
        if not parts:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores = np.concatenate([s[0] for s, _ in parts])
        ids = np.concatenate([i[0] for _, i in parts])
        keep = ids >= 0
        scores, ids = scores[keep], ids[keep]
        order = np.argsort(-scores, kind="stable")[:k]
        return scores[order], ids[order]

    # ---- checkpoints (the writer only) ---------------------------------------------------------------
    def maybe_checkpoint(self, force: bool = False) -> bool:
        pending = (len(self.delta) if self.delta is not None else 0) + self.removed_since
        if self.base_seq >= 0 and not force and pending < self.checkpoint_every:
            return False
        if self.seq == self.base_seq and not pending:
            return False
        self.checkpoint()
        return True

    def checkpoint(self) -> None:
        """Fold the delta into the base and write it as the new checkpoint, atomically."""
        base = self.base
        if base is not None and self._mapped:  # a mapped graph cannot grow: load it for real
            meta = self._read_meta()
            base = DenseIndex.read(self.store.folder / meta["file"], self.config, base.removed(), mmap=False)
        if self.delta is not None and len(self.delta):
            ids = self.delta.ids()
            vectors = np.vstack([self.delta._index.reconstruct(int(i)) for i in ids])
            if base is None:
                base = DenseIndex(vectors.shape[1], self.config)
            base.add(ids, vectors)
        if base is None:
            return
        if base.kind == "hnsw" and base.removed() and len(base.removed()) >= self.config.compact_ratio * len(base.ids(True)):
            base.remove([])  # let DenseIndex compact its tombstones
        name = f"dense-{self.seq}.faiss"
        tmp = self.store.folder / f".{name}.tmp{os.getpid()}"
        base.write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.store.folder / name)
        meta = {"file": name, "seq": self.seq, "dim": base.dim, "kind": base.kind, "removed": base.removed()}
        atomic_write(self.meta_path, json.dumps(meta).encode(), durable=True)
        for old in self.store.folder.glob("dense-*.faiss"):
            if old.name != name:
                old.unlink(missing_ok=True)  # a reader mapping it keeps its copy until it lets go
        log.info("dense checkpoint %s: %d vectors (%s), log position %d", name, len(base), base.kind, self.seq)
        self.base, self.delta, self.base_seq, self.removed_since = base, None, self.seq, 0
        self._mapped = False
