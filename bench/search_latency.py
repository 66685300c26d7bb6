"""Search latency at 1k, 100k and 1M pages, index size on disk and memory, on synthetic data.

    .venv/bin/python bench/search_latency.py                       # all three sizes (1M: ~1 h, cached)
    .venv/bin/python bench/search_latency.py --sizes 1000,100000 --queries 300

What a search costs (DocumentIndex.search, fused mode): embed the query with MiniLM, ask FAISS for
`config.candidates` (100) pages, ask BM25 for 100 pages, fuse the rankings. Each size runs in its own
subprocess (clean memory figures) and measures, with FAISS on one OpenMP thread as the CLI and the
server run it:
- dense: `DenseIndex` configured as the index configures itself at that size (DenseConfig defaults:
  exact flat search up to 20k vectors, HNSW above), 384-d unit vectors, queries = noisy copies of
  stored vectors; p50/p99 and recall@10 against exact search; build time, file size, RSS.
- lexical: `LexicalIndex` over synthetic pages (Zipf-distributed vocabulary of 50k words, 120 tokens
  a page); p50/p99 of a 3-6 word query; build time and RSS. Its own `_build` is used up to
  `--lexical-python-max` pages; above that the same matrix is built with vectorised numpy (checked
  equal on 5k pages first), because the Python build needs tens of GB at 1M pages (see RESULTS.md).
- pipeline: MiniLM query embedding + dense + lexical + fusion per query, end to end.
Built dense indexes are cached in --cache so a re-run only measures.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from proc_memory import rss_mb  # noqa: E402 (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DIM = 384
CANDIDATES = 100  # IndexConfig.candidates: what each retriever is asked for in a fused search
VOCAB = 50_000
PAGE_TOKENS = 120


def percentiles(seconds: list[float], cpu_seconds: list[float] | None = None) -> dict:
    """Wall-clock p50/p99 and, when given, the CPU time per query. Everything runs on one thread, so
    CPU time is what the wall time would be on an idle core: the machine this ran on was shared with
    other jobs (load average 6-12 on 2 cores), which inflates the wall-clock tail."""
    ms = np.asarray(seconds) * 1000
    out = {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
           "mean_ms": round(float(ms.mean()), 3)}
    if cpu_seconds is not None:
        cpu = np.asarray(cpu_seconds) * 1000
        out |= {"cpu_p50_ms": round(float(np.percentile(cpu, 50)), 3), "cpu_p99_ms": round(float(np.percentile(cpu, 99)), 3)}
    return out


class Timer:
    """Wall and CPU time of a block, appended to two lists."""

    def __init__(self, wall: list, cpu: list):
        self.wall, self.cpu = wall, cpu

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()

    def __exit__(self, *exc):
        self.wall.append(time.perf_counter() - self.w)
        self.cpu.append(time.process_time() - self.c)


# ---- synthetic data -------------------------------------------------------------------------------
def unit_vectors(rng: np.random.Generator, n: int, batch: int = 100_000):
    """Vectors with some cluster structure (real embeddings are not uniform on the sphere)."""
    centres = rng.standard_normal((256, DIM)).astype(np.float32)
    for start in range(0, n, batch):
        m = min(batch, n - start)
        v = centres[rng.integers(0, len(centres), m)] + 0.8 * rng.standard_normal((m, DIM)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        yield start, v


def zipf_probabilities() -> np.ndarray:
    p = 1.0 / (np.arange(VOCAB) + 2.7) ** 1.1
    return p / p.sum()


def page_tokens(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, PAGE_TOKENS) word ids drawn from a Zipf-like distribution."""
    return rng.choice(VOCAB, size=(n, PAGE_TOKENS), p=zipf_probabilities()).astype(np.int32)


def query_words(rng: np.random.Generator, count: int) -> list[list[str]]:
    # Questions use topical words: skip the 30 most frequent (stop-word-like) and favour mid ranks.
    queries = []
    for _ in range(count):
        ranks = 30 + rng.zipf(1.3, size=rng.integers(3, 7)) * 7
        queries.append([f"w{min(int(r), VOCAB - 1)}" for r in ranks])
    return queries


# ---- dense ----------------------------------------------------------------------------------------
def dense_index(n: int, cache: Path, rng: np.random.Generator):
    from search_engine.dense import DenseConfig, DenseIndex

    path = cache / f"dense-{n}.npz"
    if path.exists():
        started = time.perf_counter()
        index = DenseIndex.load(path, DenseConfig())
        return index, {"cached": True, "load_s": round(time.perf_counter() - started, 1)}
    index = DenseIndex(DIM, DenseConfig())
    started = time.perf_counter()
    for start, vectors in unit_vectors(rng, n):
        index.add(np.arange(start, start + len(vectors)), vectors)  # in batches, as a long ingest would
        print(f"  dense {n:,}: {start + len(vectors):,} vectors in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    build_s = time.perf_counter() - started
    cache.mkdir(parents=True, exist_ok=True)
    index.save(path)
    return index, {"cached": False, "build_s": round(build_s, 1)}


def dense_figures(n: int, queries: int, cache: Path) -> tuple[object, dict]:
    import faiss

    rng = np.random.default_rng(n)
    before = rss_mb()
    index, built = dense_index(n, cache, rng)
    faiss.omp_set_num_threads(1)
    figures = {"kind": index.kind, **built, "file_mb": round((cache / f"dense-{n}.npz").stat().st_size / 2**20, 1),
               "rss_mb": round(rss_mb() - before, 1)}
    # Queries near stored pages (a stored vector plus noise), so that recall@10 means something. Their
    # own seed: the same queries whether the index was just built or loaded from the cache.
    rng = np.random.default_rng(n + 7)
    picks = rng.integers(0, n, queries)
    base = np.vstack([index._index.reconstruct(int(i)) for i in picks])
    q = base + 0.5 * rng.standard_normal(base.shape).astype(np.float32) / np.sqrt(DIM)  # noise of norm ~0.5
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    index.search(q[:5], CANDIDATES)  # warm up
    times, cpu, found = [], [], []
    for row in q:
        with Timer(times, cpu):
            _, ids = index.search(row[None, :], CANDIDATES)
        found.append(ids[0][:10])
    figures.update(percentiles(times, cpu))
    figures["recall_at_10"] = recall_at_10(index, q[:50], found[:50]) if index.kind == "hnsw" else 1.0
    return index, figures


def recall_at_10(index, queries: np.ndarray, found: list[np.ndarray]) -> float:
    """Share of the exact top 10 that the approximate search returned (exact = brute force, in blocks)."""
    ntotal = index._index.ntotal
    best = [np.full(10, -np.inf) for _ in queries], [np.zeros(10, np.int64) for _ in queries]
    for start in range(0, ntotal, 100_000):
        ids = np.arange(start, min(start + 100_000, ntotal))
        block = index._index.reconstruct_batch(ids)
        scores = queries @ block.T
        for i in range(len(queries)):
            s = np.concatenate([best[0][i], scores[i]])
            j = np.concatenate([best[1][i], ids])
            top = np.argsort(-s)[:10]
            best[0][i], best[1][i] = s[top], j[top]
    hits = [len(set(best[1][i].tolist()) & set(found[i].tolist())) for i in range(len(queries))]
    return round(float(np.mean(hits)) / 10, 4)


# ---- lexical --------------------------------------------------------------------------------------
def vectorised_build(lexical, tokens: np.ndarray):
    """LexicalIndex._build's matrix, computed with numpy instead of per-token Python loops.
    Same formula (see lexical.py); columns are ordered by word id instead of first appearance."""
    from scipy import sparse

    n = len(tokens)
    ids = np.arange(n, dtype=np.int64)
    keys = np.repeat(ids, tokens.shape[1]) * VOCAB + tokens.ravel()
    keys, tfs = np.unique(keys, return_counts=True)
    rows, cols = keys // VOCAB, keys % VOCAB
    lengths = np.full(n, tokens.shape[1], np.float32)
    df = np.bincount(cols, minlength=VOCAB).astype(np.float32)
    idf = np.log1p((n - df + 0.5) / (df + 0.5))
    norm = 1 - lexical.b + lexical.b * lengths / max(float(lengths.mean()), 1.0)
    tfs = tfs.astype(np.float32)
    weights = idf[cols] * tfs * (lexical.k1 + 1) / (tfs + lexical.k1 * norm[rows])
    vocab = {f"w{i}": i for i in range(VOCAB)}
    return ids, vocab, sparse.csc_matrix((weights, (rows, cols)), shape=(n, VOCAB))


def lexical_index(n: int, rng: np.random.Generator, python_max: int):
    from search_engine.lexical import LexicalIndex

    tokens = page_tokens(rng, n)
    lexical = LexicalIndex()
    before = rss_mb()
    started = time.perf_counter()
    if n <= python_max:
        words = np.array([f"w{i}" for i in range(VOCAB)], dtype=object)
        for i, row in enumerate(tokens):
            lexical.add(i, list(words[row]))
        add_s = time.perf_counter() - started
        lexical._built = lexical._build()  # what the first search after an ingest does
        how = "LexicalIndex.add + _build"
    else:
        lexical._built = vectorised_build(lexical, tokens)
        add_s = 0.0
        how = "vectorised numpy build (the Python build does not fit in memory at this size)"
    build_s = time.perf_counter() - started
    return lexical, {"build": how, "add_s": round(add_s, 1), "build_s": round(build_s, 1),
                     "rss_mb": round(rss_mb() - before, 1)}


def check_vectorised_build() -> None:
    """The vectorised build must rank exactly like LexicalIndex's own build."""
    from search_engine.lexical import LexicalIndex

    rng = np.random.default_rng(7)
    tokens = page_tokens(rng, 5000)
    words = np.array([f"w{i}" for i in range(VOCAB)], dtype=object)
    own, fast = LexicalIndex(), LexicalIndex()
    for i, row in enumerate(tokens):
        own.add(i, list(words[row]))
    fast._built = vectorised_build(fast, tokens)
    for q in query_words(rng, 50):
        (s1, i1), (s2, i2) = own.search(q, CANDIDATES), fast.search(q, CANDIDATES)
        assert np.allclose(s1, s2, rtol=1e-5), q  # same scores in the same order (ties may swap ids)
        fast_scores = dict(zip(i2.tolist(), s2.tolist()))
        assert all(np.isclose(fast_scores[i], s, rtol=1e-5) for i, s in zip(i1.tolist(), s1.tolist()) if i in fast_scores)


def lexical_figures(n: int, queries: int, python_max: int) -> tuple[object, list[list[str]], dict]:
    rng = np.random.default_rng(n + 1)
    lexical, figures = lexical_index(n, rng, python_max)
    qs = query_words(rng, queries)
    lexical.search(qs[0], CANDIDATES)
    times, cpu, matched = [], [], []
    for q in qs:
        with Timer(times, cpu):
            lexical.search(q, CANDIDATES)
    # How many pages a query touches drives the cost (the score vector is dense over all pages).
    ids, vocab, matrix = lexical._built
    for q in qs[:50]:
        cols = sorted({vocab[t] for t in q if t in vocab})
        matched.append(int((np.asarray(matrix[:, cols].sum(axis=1)).ravel() > 0).sum()))
    figures.update(percentiles(times, cpu))
    figures["median_pages_matched"] = int(np.median(matched))
    return lexical, qs, figures


# ---- the whole fused search ---------------------------------------------------------------------------
def pipeline_figures(dense, lexical, qs: list[list[str]]) -> dict:
    from search_engine.embedders import load_embedder
    from search_engine.fusion import FusionConfig, fuse
    from search_engine.tokenize import tokenize

    embedder = load_embedder("minilm")
    config = FusionConfig()
    texts = [" ".join(q) for q in qs]
    embedder.encode_query(texts[0])
    embed_t, embed_c, total_t, total_c = [], [], [], []
    for text in texts:
        with Timer(total_t, total_c):
            with Timer(embed_t, embed_c):
                vector = embedder.encode_query(text)
            scores, ids = dense.search(vector[None, :], CANDIDATES)
            rankings = {"dense": (scores[0][ids[0] >= 0], ids[0][ids[0] >= 0]),
                        "lexical": lexical.search(tokenize(text), CANDIDATES)}
            fuse(rankings, config, 10)
    return {"embed": percentiles(embed_t, embed_c), "total": percentiles(total_t, total_c)}


def page_records_rss(n: int = 10_000, words: int = 260) -> dict:
    """DocumentIndex keeps every Page with its TextBoxes in memory. RSS of n born-digital pages with
    `words` word boxes each (the ingest benchmark's pages average ~260), scaled to 100k pages."""
    from search_engine.types import Page, TextBox

    before = rss_mb()
    pages = [
        Page(f"doc_{i}", "/data/doc.pdf", i, f"/index/images/doc_{i}.jpg", 1190, 1684, "pdf",
             [TextBox(f"word{j}", (10.0 + j, 20.0, 40.0 + j, 32.0), 1.0) for j in range(words)])
        for i in range(n)
    ]
    used = rss_mb() - before
    assert len(pages) == n
    return {"pages": n, "word_boxes_per_page": words, "rss_mb": round(used, 1),
            "rss_mb_per_100k_pages": round(used * 100_000 / n, 0)}


def one_size(n: int, queries: int, cache: Path, python_max: int) -> dict:
    import torch

    # One thread for FAISS and torch, as the CLI and the server run searches: with OpenMP's default of
    # one thread per core, a busy 2-core machine made single queries 5-30x slower (see RESULTS.md).
    # Building (batch adds) keeps FAISS's default threads; dense_figures switches to one before searching.
    torch.set_num_threads(1)
    started_rss = rss_mb()
    dense, dense_fig = dense_figures(n, queries, cache)
    lexical, qs, lexical_fig = lexical_figures(n, queries, python_max)
    pipeline = pipeline_figures(dense, lexical, qs)
    return {"pages": n, "dense": dense_fig, "lexical": lexical_fig, "pipeline": pipeline,
            "rss_total_mb": round(rss_mb() - started_rss, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/vrag-bench-cache"))
    parser.add_argument("--lexical-python-max", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "search_latency.json")
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)  # internal: run one size in this process
    parser.add_argument("--records-rss", action="store_true", help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.records_rss:
        print(json.dumps(page_records_rss()))
        return
    if args.one_size:
        print(json.dumps(one_size(args.one_size, args.queries, args.cache, args.lexical_python_max)))
        return
    check_vectorised_build()
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        print(f"== {n:,} pages", file=sys.stderr)
        out = subprocess.run(
            [sys.executable, __file__, "--one-size", str(n), "--queries", str(args.queries), "--cache", str(args.cache),
             "--lexical-python-max", str(args.lexical_python_max)],
            capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1"),
        )
        if out.returncode != 0:
            sys.exit(f"size {n} failed:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(result, indent=1), file=sys.stderr)
        results.append(result)
    records = subprocess.run([sys.executable, __file__, "--records-rss"], capture_output=True, text=True, check=True)
    page_records = json.loads(records.stdout.strip().splitlines()[-1])
    print(json.dumps(page_records), file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "results": results, "page_records": page_records}, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)


def machine() -> dict:
    return {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(), "python": sys.version.split()[0]}


if __name__ == "__main__":
    main()
