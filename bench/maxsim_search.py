"""MaxSim search cost against the number of pages, with and without the candidate stage, and memory
per page with and without token pooling. Synthetic multi-vectors; the index's own code.

    nice -n 10 .venv/bin/python bench/maxsim_search.py [--sizes 1000,10000,100000] [--tokens 256]
        [--tokens-at-100k 64] [--queries 20] [--candidates 100,400,1000] [--out bench/results/maxsim_search.json]

Pages: dim 128 unit float16 rows as multivector_store.py keeps them, `--tokens` rows a page (a real
ColQwen2 page at the default resolution has ~700-800; pages here are smaller so 100k pages fit
this machine: at 100k pages `--tokens-at-100k` rows, and the time at `--tokens` rows is extrapolated
linearly in rows, which is how the exact scan scales). Structure: 2,000 "concept" vectors; a page
mixes 6 concepts, each token a concept plus noise (cosine ~0.6 to it), a quarter of them pure
noise; a query takes 8 tokens from 3 of one page's concepts. So exact MaxSim has a right answer
and the mean-vector candidate stage is not trivially right or wrong.

Measured per query (one thread, as the CLI searches): exact = `maxsim_scores` over every page of the
memory-mapped file (the file is read once beforehand, so this is warm-cache compute); staged = the
page mean vectors in search_engine.dense.DenseIndex (FAISS; flat up to 20k pages, HNSW above) for
`candidates` pages, then exact MaxSim of those. recall@10 = |staged top 10 & exact top 10| / 10.
Memory per page: float16 rows + the float32 mean vector, for pool factors 1-4 of colpali-engine's
HierarchicalTokenPooler on 200 synthetic pages (with the pooling time per page and how many of the
unpooled exact top 10 the pooled pages keep).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search_engine.dense import DenseConfig, DenseIndex  # noqa: E402
from search_engine.multivector_search import maxsim_scores, mean_vector, top_k  # noqa: E402

DIM, CONCEPTS, PER_PAGE_CONCEPTS, QUERY_TOKENS = 128, 2000, 6, 8


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class Corpus:
    """Synthetic pages written to a float16 file, with their spans, concepts and mean vectors."""

    def __init__(self, pages: int, tokens: int, folder: Path, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.concepts = unit(rng.normal(size=(CONCEPTS, DIM))).astype(np.float32)
        self.page_concepts = rng.integers(0, CONCEPTS, size=(pages, PER_PAGE_CONCEPTS))
        self.path = folder / f"pages-{pages}-{tokens}.f16"
        self.means = np.empty((pages, DIM), np.float32)
        batch = max(1, 200_000 // tokens)
        with open(self.path, "wb") as f:
            for first in range(0, pages, batch):
                last = min(first + batch, pages)
                vectors = self._pages(rng, self.page_concepts[first:last], tokens)
                f.write(vectors.astype(np.float16).tobytes())
                self.means[first:last] = unit(vectors.mean(axis=1))
        self.starts = np.arange(pages, dtype=np.int64) * tokens
        self.counts = np.full(pages, tokens, np.int64)
        self.matrix = np.memmap(self.path, np.float16, mode="r", shape=(pages * tokens, DIM))

    def _pages(self, rng, concepts: np.ndarray, tokens: int) -> np.ndarray:
        n = len(concepts)
        which = concepts[np.arange(n)[:, None], rng.integers(0, PER_PAGE_CONCEPTS, size=(n, tokens))]
        noise = rng.normal(size=(n, tokens, DIM)).astype(np.float32) / np.sqrt(DIM)
        vectors = self.concepts[which] * 0.75 + noise
        vectors[:, : tokens // 4] = noise[:, : tokens // 4]  # a quarter of a page matches nothing
        return unit(vectors).astype(np.float32)

    def query(self, rng, page: int) -> np.ndarray:
        chosen = self.page_concepts[page][rng.choice(PER_PAGE_CONCEPTS, 3, replace=False)]
        base = self.concepts[chosen[rng.integers(0, 3, QUERY_TOKENS)]]
        return unit(base + rng.normal(size=base.shape) * 0.9 / np.sqrt(DIM)).astype(np.float32)


def ms(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {"p50_ms": round(1000 * statistics.median(ordered), 2),
            "p90_ms": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 2)}


def search_costs(corpus: Corpus, queries: int, candidate_counts: list[int], seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    pages = len(corpus.starts)
    np.asarray(corpus.matrix).sum()  # read the file once: warm page cache, as a searching server has it
    dense = DenseIndex(DIM, DenseConfig())
    started = time.perf_counter()
    dense.add(np.arange(pages, dtype=np.int64), corpus.means)
    build = time.perf_counter() - started
    ids = np.arange(pages, dtype=np.int64)
    exact_t, staged_t = [], {c: [] for c in candidate_counts}
    recall, found_target = {c: [] for c in candidate_counts}, []
    for _ in range(queries):
        target = int(rng.integers(0, pages))
        query = corpus.query(rng, target)
        t = time.perf_counter()
        exact = top_k(maxsim_scores(query, corpus.matrix, corpus.starts, corpus.counts), ids, 10)[1]
        exact_t.append(time.perf_counter() - t)
        found_target.append(target in exact[:1])
        for c in candidate_counts:
            t = time.perf_counter()
            _, cands = dense.search(mean_vector(query)[None, :], c)
            cands = cands[cands >= 0]
            staged = top_k(maxsim_scores(query, corpus.matrix, corpus.starts[cands], corpus.counts[cands]), cands, 10)[1]
            staged_t[c].append(time.perf_counter() - t)
            recall[c].append(len(set(staged.tolist()) & set(exact.tolist())) / 10)
    return {"pages": pages, "tokens_per_page": int(corpus.counts[0]), "dense_kind": dense.kind,
            "candidate_index_build_s": round(build, 2), "exact": ms(exact_t),
            "exact_top1_is_planted_page": sum(found_target) / len(found_target),
            "staged": {str(c): ms(staged_t[c]) | {"recall_at_10": round(float(np.mean(recall[c])), 3)}
                       for c in candidate_counts}}


def pooling_memory(tokens: int, pages: int = 200, seed: int = 2) -> list[dict]:
    import torch

    from search_engine.colpali_modules import import_module

    pooler = import_module("colpali_engine.compression.token_pooling.hierarchical_token_pooling").HierarchicalTokenPooler()
    rng = np.random.default_rng(seed)
    corpus = Corpus.__new__(Corpus)
    corpus.concepts = unit(rng.normal(size=(CONCEPTS, DIM))).astype(np.float32)
    corpus.page_concepts = rng.integers(0, CONCEPTS, size=(pages, PER_PAGE_CONCEPTS))
    full = corpus._pages(rng, corpus.page_concepts, tokens)
    queries = [corpus.query(rng, int(p)) for p in rng.integers(0, pages, 20)]
    ids = np.arange(pages, dtype=np.int64)

    def exact_top10(matrix, counts):
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return [set(top_k(maxsim_scores(q, matrix, starts, counts), ids, 10)[1].tolist()) for q in queries]

    reference = exact_top10(full.reshape(-1, DIM).astype(np.float16), np.full(pages, tokens))
    out = []
    for factor in (1, 2, 3, 4):
        t = time.perf_counter()
        pooled = [p.numpy() for p in pooler.pool_embeddings([torch.from_numpy(p) for p in full], pool_factor=factor)]
        seconds = (time.perf_counter() - t) / pages
        counts = np.array([len(p) for p in pooled])
        tops = exact_top10(np.vstack(pooled).astype(np.float16), counts)
        out.append({"pool_factor": factor, "vectors_per_page": float(counts.mean()),
                    "bytes_per_page": float(counts.mean() * DIM * 2 + DIM * 4),
                    "pooling_ms_per_page": round(1000 * seconds, 1) if factor > 1 else 0.0,
                    "top10_overlap_with_unpooled": round(float(np.mean([len(a & b) / 10 for a, b in zip(tops, reference)])), 3)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--tokens-at-100k", type=int, default=64, dest="tokens_100k")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--candidates", default="100,400,1000")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "maxsim_search.json"))
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    candidate_counts = [int(c) for c in args.candidates.split(",")]
    results = {"load_average": os.getloadavg(), "search": [], "pooling": None}
    with tempfile.TemporaryDirectory(prefix="maxsim-bench-") as tmp:
        for pages in (int(s) for s in args.sizes.split(",")):
            tokens = args.tokens if pages < 100_000 else args.tokens_100k
            started = time.perf_counter()
            corpus = Corpus(pages, tokens, Path(tmp))
            made = time.perf_counter() - started
            row = search_costs(corpus, args.queries, candidate_counts)
            row["file_mb"] = round(os.path.getsize(corpus.path) / 1e6, 1)
            row["generate_s"] = round(made, 1)
            if tokens != args.tokens:
                scale = args.tokens / tokens
                row["exact_extrapolated_to_tokens"] = {"tokens_per_page": args.tokens,
                                                       "p50_ms": round(row["exact"]["p50_ms"] * scale, 1)}
            print(json.dumps(row), flush=True)
            results["search"].append(row)
            del corpus
            for path in Path(tmp).iterdir():
                path.unlink()
    results["pooling"] = pooling_memory(args.tokens)
    print(json.dumps(results["pooling"]), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
