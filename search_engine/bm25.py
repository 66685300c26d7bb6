"""The BM25 formula over term counts: arrays in, arrays out (no index, no scipy).

    score = sum over distinct query terms t of idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len)),
    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))

Lucene's BM25, as lexical.LexicalIndex computes it. The local backend scores tantivy's candidates with
it (backend_local.LocalBackend.lexical_search), from the term counts kept per page (store.encode_terms).
"""
from __future__ import annotations

import numpy as np


def bm25(tf: np.ndarray, lengths: np.ndarray, df: np.ndarray, n_pages: int, mean_length: float,
         k1: float, b: float) -> np.ndarray:
    """BM25 scores of pages from their term counts: tf (pages, terms), lengths (pages,), df (terms,)
    over an index of `n_pages` pages of `mean_length` tokens on average. The formula above, in float64."""
    tf, lengths, df = (np.asarray(a, np.float64) for a in (tf, lengths, df))
    idf = np.log1p((n_pages - df + 0.5) / (df + 0.5))
    norm = (1 - b + b * lengths / max(mean_length, 1.0))[:, None]
    return (idf * tf * (k1 + 1) / (tf + k1 * norm)).sum(axis=1)
