"""BM25 on disk with tantivy, over our own tokens (tokenize.py: English words, CJK bigrams).

Pages are indexed as their tokens joined by spaces, through a whitespace tokenizer, so tantivy sees
exactly the terms tokenize.py makes and Chinese keeps working; a query is the OR of its distinct
tokens. tantivy keeps immutable segments on disk (memory-mapped), merges them in the background and
finds the top k with block-max WAND, so a search does not score every page that shares a common word.
Adding or removing pages writes a new small segment and a delete list: no rebuild.

Length normalisation. tantivy's BM25 has k1 = 1.2 and b = 0.75 built in; our retrieval was tuned with
b = 0.4 (lexical.py: short title slides must not outrank the content slide; with tantivy's b the dev
and held-out figures each lost a question). The normalisation term is 1 - b + b * len / avg_len.
Adding P copies of a filler term that no query contains to every page, with P = avg_len * (0.75 / B - 1),
turns tantivy's 0.25 + 0.75 * (len + P) / (avg_len + P) into exactly 1 - B + B * len / avg_len, so
the ranking is that of b = B (k1 stays 1.2; k1 0.9 and 1.2 were within a question of each other).
`avg_len` is the running mean page length when a page is added (kept in the records' meta), so
pages added long after a corpus changed character are normalised slightly off; re-ingesting fixes it.
k1 cannot be emulated so, so the local backend scores tantivy's top candidates again with exact BM25
(backend_local.LocalBackend.lexical_search): tantivy finds the candidates fast, the formula stays ours.
bench/lexical_backends.py compares this with SQLite FTS5 at 1M pages; tantivy was kept (faster).

Writes are done only by the index's writer (store.writer_lock); tantivy's own lock file would refuse
a second writer anyway. Each `commit` is atomic (tantivy swaps its meta.json).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import tantivy

log = logging.getLogger(__name__)

TOKENIZER = "vrag_tokens"  # whitespace only: the text is already our tokens
FILLER = "\u2042"  # a term tokenize.py never makes (see `padding`)
TANTIVY_B = 0.75


def padding(mean_length: float, b: float) -> int:
    """Filler terms per page that make tantivy's length normalisation that of BM25 with this `b`."""
    return max(0, round(mean_length * (TANTIVY_B / b - 1)))


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("vid", stored=False, indexed=True, fast=True)
    builder.add_text_field("text", stored=False, tokenizer_name=TOKENIZER, index_option="freq")
    return builder.build()


class TantivyLexical:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._schema = _schema()
        try:
            self._index = tantivy.Index(self._schema, path=str(self.folder), reuse=True)
        except ValueError as e:  # a damaged or foreign folder: it is derived data, start it again
            log.warning("lexical index at %s unreadable (%s): starting it again", self.folder, e)
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            self._index = tantivy.Index(self._schema, path=str(self.folder), reuse=False)
        self._index.register_tokenizer(TOKENIZER, tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace()).build())
        self._writer: tantivy.IndexWriter | None = None
        self._searcher = self._index.searcher()

    # ---- writing (the index's writer only) -----------------------------------------------------------
    def _w(self) -> tantivy.IndexWriter:
        if self._writer is None:
            self._writer = self._index.writer(heap_size=64_000_000, num_threads=1)
        return self._writer

    def add(self, vid: int, tokens: list[str], pad: int = 0) -> None:
        """Index a page (replacing any page of that vid: replaying the change log twice is harmless),
        with `pad` filler terms (see `padding`)."""
        writer = self._w()
        writer.delete_documents_by_term("vid", int(vid))
        doc = tantivy.Document()
        doc.add_integer("vid", int(vid))
        doc.add_text("text", " ".join(tokens) + (" " + FILLER) * pad)
        writer.add_document(doc)

    def remove(self, vid: int) -> None:
        self._w().delete_documents_by_term("vid", int(vid))

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.commit()
            self.refresh()

    def close_writer(self) -> None:
        """Release tantivy's writer lock and its memory (merges in flight finish first)."""
        if self._writer is not None:
            self._writer.commit()
            self._writer.wait_merging_threads()
            self._writer = None
            self.refresh()

    # ---- reading -------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """See what the writer (this process or another) committed since."""
        self._index.reload()
        self._searcher = self._index.searcher()

    def __len__(self) -> int:
        return self._searcher.num_docs

    def doc_freq(self, token: str) -> int:
        """Pages holding `token` (deleted ones count until tantivy merges them away)."""
        return self._searcher.doc_freq("text", token)

    def search(self, query_tokens: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k pages with a positive score: (scores, vids), best first; fewer than k if fewer match."""
        terms = sorted(set(query_tokens))
        if not terms or not self._searcher.num_docs:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        query = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(self._schema, "text", t)) for t in terms])
        hits = self._searcher.search(query, limit=k, count=False).hits
        if not hits:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        vids = self._searcher.fast_field_values("vid", [address for _, address in hits])
        return np.array([score for score, _ in hits], np.float32), np.array(vids, np.int64)
