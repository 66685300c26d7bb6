"""BM25 over pre-tokenised pages (see tokenize.py), as a sparse page-by-term weight matrix.

Written out with scipy rather than through bm25s because pages come and go one file at a time and
bm25s fails on an empty corpus or all-empty pages. The index is a pure function of the stored page
tokens, so it is rebuilt (lazily, on the next search) after any change instead of being persisted:
tokenising and weighting 10k pages takes well under a second.

Score (Lucene's BM25): sum over distinct query terms t of
    idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(page) / avg_len)),
    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
from scipy import sparse


class LexicalIndex:
    # b = 0.4 rather than the textbook 0.75: title and divider slides are a few words long, and full
    # length normalisation let them outrank the content slide on shared topic words. On the 66 tuning
    # questions (bench/questions dev + bench/retrieval_own_questions.json) BM25 alone went from 58 to
    # 60 top-1 hits (k1 = 0.9 or 1.2 within one question of each other).
    def __init__(self, k1: float = 0.9, b: float = 0.4):
        self.k1, self.b = k1, b
        self._docs: dict[int, Counter] = {}
        self._built: tuple[np.ndarray, dict[str, int], sparse.csc_matrix] | None = None

    def __len__(self) -> int:
        return len(self._docs)

    def add(self, doc_id: int, tokens: list[str]) -> None:
        self._docs[int(doc_id)] = Counter(tokens)
        self._built = None

    def remove(self, doc_id: int) -> None:
        if self._docs.pop(int(doc_id), None) is not None:
            self._built = None

    def _build(self) -> tuple[np.ndarray, dict[str, int], sparse.csc_matrix]:
        ids = np.fromiter(self._docs, dtype=np.int64, count=len(self._docs))
        vocab: dict[str, int] = {}
        rows, cols, tfs = [], [], []
        lengths = np.zeros(len(ids), np.float32)
        for row, counts in enumerate(self._docs.values()):
            lengths[row] = sum(counts.values())
            for term, tf in counts.items():
                rows.append(row)
                cols.append(vocab.setdefault(term, len(vocab)))
                tfs.append(tf)
        rows, cols, tfs = np.array(rows, np.int64), np.array(cols, np.int64), np.array(tfs, np.float32)
        df = np.bincount(cols, minlength=len(vocab)).astype(np.float32)
        idf = np.log1p((len(ids) - df + 0.5) / (df + 0.5))
        norm = 1 - self.b + self.b * lengths / max(float(lengths.mean()) if len(ids) else 1.0, 1.0)
        weights = idf[cols] * tfs * (self.k1 + 1) / (tfs + self.k1 * norm[rows])
        matrix = sparse.csc_matrix((weights, (rows, cols)), shape=(len(ids), len(vocab)))
        return ids, vocab, matrix

    def search(self, query_tokens: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k pages with a positive score: (scores, ids), best first; fewer than k if fewer match."""
        if self._built is None:
            self._built = self._build()
        ids, vocab, matrix = self._built
        cols = sorted({vocab[t] for t in query_tokens if t in vocab})
        if not cols:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores = np.asarray(matrix[:, cols].sum(axis=1)).ravel()
        hits = np.flatnonzero(scores > 0)
        if len(hits) > k:  # select before sorting: a common word matches half of a 1M-page index
            hits = hits[np.argpartition(-scores[hits], k - 1)[:k]]
        order = hits[np.argsort(-scores[hits], kind="stable")]
        return scores[order].astype(np.float32), ids[order]
