"""The default backend: everything in the index folder on this machine.

Page records in SQLite (store.py), BM25 in tantivy (lexical_tantivy.py), vectors in FAISS
(dense_store.py); for a late-interaction embedder also multi-vector pages in one float16 file
(multivector_store.py), searched by MaxSim (multivector_search.py), with the pages' mean vectors in
FAISS as its candidate stage. The records and their change log are the truth; the two retrievers are derived
from them and catch up from the log when they lag (after a kill, or another process's commit).

What a search process holds in memory per page: nothing of the records (a page is read by id when
asked for), the dense index (mapped from disk once it is an HNSW graph) and tantivy's mapped
segments.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from .config import IndexConfig
from .dense_store import DenseStore
from .embedders import is_multivector
from .multivector_search import maxsim_scores, mean_vector, top_k
from .multivector_store import MultiVectorStore
from .bm25 import bm25
from .lexical_tantivy import TantivyLexical, padding
from .store import Chunk, HitMeta, IndexStore, SourceState
from .tokenize import tokenize
from .types import Page

log = logging.getLogger(__name__)
LEXICAL_SEQ = "lexical_seq"  # meta key: how far into the change log the tantivy index is


class LocalBackend:
    name = "local"

    def __init__(self, folder: Path, config: IndexConfig):
        self.folder = Path(folder)
        self.config = config
        self.store = IndexStore(self.folder)
        self.images = self.store  # the page-image folder (images_dir, write/delete, orphans)
        self.dense = DenseStore(self.store, config.dense, config.dense_checkpoint_every)
        self.multi = MultiVectorStore(self.store) if is_multivector(config.embedder) else None
        self.lexical: TantivyLexical | None = None
        self._version: int | None = None
        self._next_vid: int | None = None

    # ---- life cycle ----------------------------------------------------------------------------------
    def load(self) -> None:
        """Open the retrievers and bring them up to date with the records."""
        self.lexical = TantivyLexical(self.folder / "lexical")
        self.dense.load()
        if self.multi is not None:
            self.multi.load()
        self._version = self.store.data_version()
        with self.store.try_writer_lock() as free:
            if free:  # nobody is writing: a lagging lexical index (a killed ingest) catches up now
                self._catch_up_lexical()

    def refresh(self) -> None:
        """See what other processes committed since (cheap when nothing changed)."""
        version = self.store.data_version()
        if version == self._version:
            return
        self._version = version
        self.dense.catch_up()
        self.lexical.refresh()
        if self.multi is not None:
            self.multi.load()

    def close(self) -> None:
        if self.lexical is not None:
            self.lexical.close_writer()
        self.store.close()

    def wipe(self) -> None:
        self.lexical = None
        self.store.wipe()
        self.dense = DenseStore(self.store, self.config.dense, self.config.dense_checkpoint_every)
        self.multi = MultiVectorStore(self.store) if is_multivector(self.config.embedder) else None

    # ---- writing (inside store.writer_lock) ----------------------------------------------------------
    def begin_write(self) -> None:
        self.store.db  # noqa: B018 (creates the tables)
        self.refresh()
        self.dense.catch_up()
        self._catch_up_lexical()
        if self.multi is not None:
            self.multi.begin_write()
        self._next_vid = self.store.next_vid()

    def end_write(self, format_version: int) -> None:
        self.lexical.close_writer()
        if self.dense.maybe_checkpoint():
            self.store.forget_changes(min(self.dense.base_seq, int(self.store.get_meta(LEXICAL_SEQ, "0"))))
        self.store.write_manifest(format_version)
        self._version = self.store.data_version()
        self._next_vid = None

    def commit(self, chunks: list[Chunk]) -> None:
        """Chunks of sources, atomically in the records (one transaction); then into both retrievers."""
        rows, vectors_of, spans = [], {}, {}
        pad = self._padding([len(t) for c in chunks for t in c.tokens])
        for chunk in chunks:
            vids = list(range(self._next_vid, self._next_vid + len(chunk.pages)))
            self._next_vid += len(chunk.pages)
            rows.append((chunk.state, vids, chunk.pages, chunk.vectors, chunk.tokens))
            for i, vid in enumerate(vids):
                vectors_of[vid] = chunk.vectors[i]
                self.lexical.add(vid, chunk.tokens[i], pad)
            if self.multi is not None:
                if chunk.multivectors is None or len(chunk.multivectors) != len(vids):
                    raise ValueError("a late-interaction index needs every page's multi-vectors")
                spans.update(zip(vids, self.multi.append(chunk.multivectors)))  # durable before the commit
        self.store.commit_pages(rows, spans)  # the commit point
        seq = self.store.last_seq()
        self.lexical.commit()
        self.store.set_meta(LEXICAL_SEQ, str(seq))
        self.dense.apply(self.store.changes_since(self.dense.seq, limit=len(vectors_of) + 100_000), vectors_of)
        if self.dense.maybe_checkpoint():
            self.store.forget_changes(min(self.dense.base_seq, seq))
        if self.multi is not None:
            self.multi.load()

    def _padding(self, lengths: list[int]) -> int:
        """Filler terms for new pages (lexical_tantivy.padding), from the running mean page length."""
        tokens = int(self.store.get_meta("lexical_tokens", "0")) + sum(lengths)
        pages = int(self.store.get_meta("lexical_pages", "0")) + len(lengths)
        self.store.set_meta("lexical_tokens", str(tokens))
        self.store.set_meta("lexical_pages", str(pages))
        return padding(tokens / max(pages, 1), self.config.lexical_b)

    def update_source(self, state: SourceState) -> None:
        self.store.update_source(state)

    def drop_source(self, path: str) -> list[str]:
        gone = self.store.delete_source(path)
        self._removed([v for v, _ in gone])
        for _, page_id in gone:
            self.store.delete_image(page_id)
        return [p for _, p in gone]

    def remove_page(self, page_id: str) -> bool:
        vid = self.store.delete_page(page_id)
        if vid is None:
            return False
        self._removed([vid])
        self.store.delete_image(page_id)
        return True

    def _removed(self, vids: list[int]) -> None:
        if not vids:
            return
        seq = self.store.last_seq()
        for vid in vids:
            self.lexical.remove(vid)
        self.lexical.commit()
        self.store.set_meta(LEXICAL_SEQ, str(seq))
        self.dense.apply(self.store.changes_since(self.dense.seq))
        if self.multi is not None:
            self.multi.load()

    def _catch_up_lexical(self) -> None:
        applied = int(self.store.get_meta(LEXICAL_SEQ, "0"))
        caught = 0
        while True:
            changes = self.store.changes_since(applied, limit=5_000)
            if not changes:
                break
            texts = self.store.page_tokens_source([vid for _, vid, added in changes if added])
            tokens = {vid: tokenize(text) for vid, text in texts.items()}
            pad = self._padding([])
            for _, vid, added in changes:
                if added and vid in tokens:
                    self.lexical.add(vid, tokens[vid], pad)
                elif not added:
                    self.lexical.remove(vid)
            self.lexical.commit()
            applied = changes[-1][0]
            self.store.set_meta(LEXICAL_SEQ, str(applied))
            caught += len(changes)
        if caught:
            log.info("lexical index caught up with %d logged changes", caught)

    # ---- reading -------------------------------------------------------------------------------------
    def count(self) -> int:
        return self.store.count()

    def sources(self) -> dict[str, SourceState]:
        return self.store.sources()

    def taken_page_ids(self, page_ids: list[str]) -> set[str]:
        return self.store.taken_page_ids(page_ids)

    def page(self, page_id: str) -> Page | None:
        return self.store.page(page_id)

    def iter_pages(self) -> Iterator[Page]:
        return self.store.iter_pages()

    def dense_search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, vids): a (dim,) query vector searches FAISS; a (q, dim) query of token vectors
        (late-interaction index) is scored by MaxSim (`maxsim_search`)."""
        if vector.ndim == 2:
            return self.maxsim_search(vector, k)
        return self.dense.search(vector, k)

    def maxsim_search(self, query: np.ndarray, k: int, exact: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (MaxSim scores, vids) for query token vectors (q, dim). Exact over every page when the
        index holds at most `config.maxsim_exact_max_pages` pages (or `exact=True`); otherwise a
        candidate stage first: FAISS over the pages' mean vectors proposes `config.maxsim_candidates`
        pages for the query's mean vector, and exact MaxSim re-ranks them."""
        if self.multi is None:
            raise ValueError(f"the index's embedder {self.config.embedder!r} stores one vector per page, not multi-vectors")
        multi = self.multi
        if not len(multi):
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        if exact is None:
            exact = len(multi) <= self.config.maxsim_exact_max_pages
        if exact:
            vids, starts, counts = multi.vids, multi.starts, multi.counts
        else:
            _, candidates = self.dense.search(mean_vector(query), max(self.config.maxsim_candidates, k))
            vids, starts, counts = multi.spans_of(candidates)
        return top_k(maxsim_scores(query, multi.matrix, starts, counts), vids, k)

    def lexical_search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """tantivy's top k, scored again with exact BM25 (bm25.py's formula, k1 and b of the config):
        tantivy's k1 is fixed at 1.2 and its b emulated (lexical_tantivy.padding); our k1 = 0.9 is not,
        and it decided the sample report's own example question. Costs one read of k pages' term
        counts (store.term_counts: a narrow table, ~2 KB a page)."""
        terms = sorted(set(tokenize(query)))
        _, vids = self.lexical.search(terms, k)
        if not len(vids):
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        found, lengths, tf = self.store.term_counts(vids.tolist(), terms)
        tokens, pages = self.store.get_metas(("lexical_tokens", "lexical_pages"), "0")
        df = np.array([self.lexical.doc_freq(t) for t in terms], np.float32)
        scores = bm25(tf, lengths, df, max(len(self.lexical), 1), int(tokens) / max(int(pages), 1),
                      self.config.lexical_k1, self.config.lexical_b)
        keep = scores > 0
        scores, found = scores[keep], found[keep]
        order = np.lexsort((found, -scores))  # best first, ties by vid
        return scores[order].astype(np.float32), found[order]

    def hit_meta(self, keys: list[int]) -> dict[int, HitMeta]:
        return self.store.hit_meta([int(k) for k in keys])

    def image_path(self, page_id: str) -> Path:
        return self.store.image_path(page_id)

    def describe(self) -> dict:
        described = {"backend": self.name, "dense": self.dense.base.kind if self.dense.base is not None else "flat"}
        if self.multi is not None:
            described |= {"multivector_pages": len(self.multi), "multivector_bytes_per_page": self.multi.bytes_per_page()}
        return described
