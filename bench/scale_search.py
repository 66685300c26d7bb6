"""The scale figures of issue 11 on an index built by bench/scale_corpus.py (local or Milvus backend).

    .venv/bin/python bench/scale_search.py --index /work/bench-data/scale-1m --queries 300
    .venv/bin/python bench/scale_search.py --index /work/bench-data/scale-100k-milvus --queries 200
    .venv/bin/python bench/scale_search.py --index /work/bench-data/scale-1m --figures open,add --cold

Each figure runs in a fresh process (clean memory), searching on one thread as the CLI, the server
and the app do:
- open: RSS after the libraries and the embedder are loaded, then `DocumentIndex.open` and the first
  fused query (seconds), RSS after it; memory held for page records alone (opening the records and
  reading 1,000 pages by id), per page;
- latency: p50/p99 wall and CPU of fused, dense-only and lexical-only `DocumentIndex.search` over
  questions of 3-6 topical words (real MiniLM query embeddings), after a first fused pass over the
  same questions (reported too: it reads what the queries need from disk, unless it is cached);
- add: a real 10-page born-digital PDF added with `DocumentIndex.add` to the open index, and the
  time until a search finds its pages (the figure a user waits for), with the CPU time of this
  process and its workers;
- dense recall@10 of the index's dense search against exact search over the stored vectors.

`--runtime torch` runs MiniLM on sentence-transformers instead of ONNX Runtime (the figures before
search_engine/minilm_onnx.py). Each figure records the load average when it started.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from proc_memory import rss_mb  # noqa: E402


def percentiles(wall: list[float], cpu: list[float]) -> dict:
    w, c = np.asarray(wall) * 1000, np.asarray(cpu) * 1000
    return {"p50_ms": round(float(np.percentile(w, 50)), 2), "p99_ms": round(float(np.percentile(w, 99)), 2),
            "cpu_p50_ms": round(float(np.percentile(c, 50)), 2), "cpu_p99_ms": round(float(np.percentile(c, 99)), 2)}


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the ingest's workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def one_thread() -> None:
    import faiss
    import torch

    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)


def open_index(folder: Path, runtime: str):
    from search_engine.embedders import load_embedder
    from search_engine.index import DocumentIndex

    return DocumentIndex.open(folder, embedder=load_embedder("minilm", runtime=runtime))


def measure_open(folder: Path, runtime: str) -> dict:
    from search_engine.embedders import load_embedder
    from search_engine.index import DocumentIndex

    one_thread()
    embedder = load_embedder("minilm", runtime=runtime)
    embedder.encode_query("warm up")
    import tantivy  # noqa: F401  (libraries loaded before the baseline)
    before = rss_mb()
    started = time.perf_counter()
    index = DocumentIndex.open(folder, embedder=embedder)
    opened = time.perf_counter() - started
    hits = index.search("annual revenue growth in the region", top_k=10)
    first = time.perf_counter() - started
    return {"pages": len(index), "open_s": round(opened, 2), "open_and_first_query_s": round(first, 2),
            "first_query_hits": len(hits), "rss_before_open_mb": round(before, 1),
            "rss_after_first_query_mb": round(rss_mb(), 1), "rss_index_mb": round(rss_mb() - before, 1),
            "runtime": embedder.runtime}


def measure_records(folder: Path, runtime: str) -> dict:
    """What the page records hold in memory: open them (no retrievers), count, then read 1,000 random
    pages by id one after the other (as search hits and the page views do), keeping none."""
    import gc

    from search_engine import backend_local, backend_milvus  # noqa: F401 (libraries before the baseline)
    from search_engine.config import IndexConfig
    from search_engine.index import make_backend

    config = IndexConfig.from_dict(json.loads((folder / "config.json").read_text()))
    gc.collect()
    before = rss_mb()
    backend = make_backend(folder, config)
    if config.backend == "local":
        n = backend.store.count()
        ids = [r[0] for r in backend.store._query("SELECT page_id FROM pages ORDER BY random() LIMIT 1000")]
    else:
        backend.load()
        n = backend.count()
        ids = [r["page_id"] for r in backend._query("", ["page_id"], limit=1000)]
    boxes = 0
    for page_id in ids:
        boxes += len(backend.page(page_id).boxes)
    gc.collect()
    used = rss_mb() - before
    return {"pages": n, "pages_read": len(ids), "boxes_read": boxes, "rss_mb": round(used, 1),
            "bytes_per_page": round(used * 2**20 / max(n, 1), 1)}


def measure_latency(folder: Path, runtime: str, queries: int) -> dict:
    from scale_corpus import query_texts

    one_thread()
    index = open_index(folder, runtime)
    texts = query_texts(queries)
    out = {"runtime": index.embedder.runtime}
    wall, cpu = [], []
    for text in texts:  # a first pass brings the pages of the files these queries read into memory
        w, c = time.perf_counter(), time.process_time()
        index.search(text, top_k=10)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    out["fused_first_pass"] = percentiles(wall, cpu)
    wall, cpu = [], []
    for text in texts:  # the query embedding alone: most of a fused search's cost, whatever the index size
        w, c = time.perf_counter(), time.process_time()
        index.embedder.encode_query(text)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    out["query_embedding_only"] = percentiles(wall, cpu)
    for mode in ("fused", "dense", "lexical"):
        wall, cpu = [], []
        for text in texts:
            w, c = time.perf_counter(), time.process_time()
            index.search(text, top_k=10, mode=mode)
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
        out[mode] = percentiles(wall, cpu)
    out["rss_mb"] = round(rss_mb(), 1)
    return out


def measure_add(folder: Path, runtime: str) -> dict:
    from ingest_pdf_speed import write_pdf

    one_thread()
    index = open_index(folder, runtime)
    index.search("warm up the embedder", top_k=3)
    work = Path(tempfile.mkdtemp(prefix="vrag-add-"))
    pdf = write_pdf(work / f"added-{os.getpid()}.pdf", 10, seed=int(time.time()))
    started, cpu = time.perf_counter(), cpu_seconds()
    report = index.add([pdf])
    added, add_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    page = index.page(report.added[-1])
    words = " ".join(b.text for b in page.boxes[:12])
    found = [h.page_id for h in index.search(words, top_k=5)]
    searchable = time.perf_counter() - started
    return {"pages_added": len(report.added), "add_s": round(added, 2), "searchable_after_s": round(searchable, 2),
            "add_cpu_s": round(add_cpu, 2), "workers": index.config.workers, "runtime": index.embedder.runtime,
            "found_in_top5": report.added[-1] in found, "pages_now": len(index)}


def measure_recall(folder: Path, runtime: str, queries: int = 50) -> dict:
    """Dense top 10 of the index against exact inner product over every live vector. An HNSW
    checkpoint holds its vectors uncompressed (IndexHNSWFlat), so the exact scan runs over the
    checkpoint's own storage (memory-mapped, a second or two warm at 1M) and the delta's vectors;
    otherwise over the stored vectors in the records (over 10 minutes cold at 1M)."""
    one_thread()
    index = open_index(folder, runtime)
    backend = index.backend
    if backend.name != "local":
        return {"skipped": "exact vectors are read from the local records"}
    store, dense = backend.store, backend.dense
    rng = np.random.default_rng(7)
    vids = [r[0] for r in store._query("SELECT vid FROM pages ORDER BY random() LIMIT ?", (queries,))]
    base = np.vstack([store.vectors([v])[v] for v in vids])
    q = base + 0.5 * rng.standard_normal(base.shape).astype(np.float32) / np.sqrt(base.shape[1])
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    started = time.perf_counter()
    found = [set(backend.dense_search(row, 10)[1].tolist()) for row in q]
    searched = time.perf_counter() - started
    started = time.perf_counter()
    exact = exact_top10(dense, q) if dense.base is not None and dense.base.kind == "hnsw" else exact_top10_records(store, q)
    recall = np.mean([len(found[j] & set(exact[j])) / 10 for j in range(queries)])
    kind = dense.base.kind if dense.base is not None else "flat"
    return {"dense_kind": kind, "mapped": dense._mapped, "recall_at_10": round(float(recall), 3),
            "ef_search": index.config.dense.ef_search, "queries": queries, "pages": len(index),
            "index_search_ms": round(1000 * searched / queries, 2), "exact_s": round(time.perf_counter() - started, 1)}


def exact_top10(dense, q: np.ndarray) -> list[list[int]]:
    """Exact top 10 over the HNSW checkpoint's storage (its vectors as added) and the delta, without
    the tombstones."""
    import faiss

    idmap = dense.base._index
    storage = faiss.downcast_index(faiss.downcast_index(idmap.index).storage)
    ids = faiss.vector_to_array(idmap.id_map)
    removed = set(dense.base._deleted)
    extra = 10 + len(removed)
    scores, rows = storage.search(q, extra)
    candidates = [[(float(s), int(ids[r])) for s, r in zip(sr, rr) if r >= 0 and int(ids[r]) not in removed]
                  for sr, rr in zip(scores, rows)]
    if dense.delta is not None and len(dense.delta):
        d_scores, d_ids = dense.delta.search(q, 10)
        for j in range(len(q)):
            candidates[j] += [(float(s), int(i)) for s, i in zip(d_scores[j], d_ids[j]) if i >= 0]
    return [[i for _, i in sorted(c, key=lambda x: -x[0])[:10]] for c in candidates]


def exact_top10_records(store, q: np.ndarray) -> list[list[int]]:
    best_s = np.full((len(q), 10), -np.inf)
    best_i = np.zeros((len(q), 10), np.int64)
    for ids, vectors in store.iter_vectors(100_000):
        scores = q @ vectors.T
        s = np.concatenate([best_s, scores], 1)
        i = np.concatenate([best_i, np.broadcast_to(ids, scores.shape)], 1)
        top = np.argsort(-s, 1)[:, :10]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_i.tolist()


def evict(folder: Path) -> float:
    """Drop the files under `folder` from the page cache (clean pages no process maps); MB asked."""
    asked = 0
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            asked += path.stat().st_size
    return round(asked / 2**20, 1)


FIGURES = {"open": measure_open, "records": measure_records, "latency": measure_latency, "add": measure_add,
           "recall": measure_recall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--figures", default="records,open,latency,recall,add")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--runtime", default="auto", choices=["auto", "onnx", "torch"], help="MiniLM's (embedders.py)")
    parser.add_argument("--cold", action="store_true",
                        help="drop the index's files from the page cache before each figure (posix_fadvise "
                             "DONTNEED: a server started long after the index was last read; libraries and the "
                             "model stay cached)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        fn = FIGURES[args.one]
        result = fn(args.index, args.runtime, args.queries) if args.one == "latency" else fn(args.index, args.runtime)
        print(json.dumps(result))
        return
    results = {"index": str(args.index), "load_avg_start": os.getloadavg()}
    for name in args.figures.split(","):
        if args.cold:
            results.setdefault("evicted_mb", {})[name] = evict(args.index)
        load = os.getloadavg()
        out = subprocess.run([sys.executable, __file__, "--index", str(args.index), "--queries", str(args.queries),
                              "--runtime", args.runtime, "--one", name],
                             capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false"))
        if out.returncode != 0:
            results[name] = {"error": out.stderr[-2000:]}
        else:
            results[name] = {**json.loads(out.stdout.strip().splitlines()[-1]), "load_avg_at_start": load}
        print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
    results["load_avg_end"] = os.getloadavg()
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
