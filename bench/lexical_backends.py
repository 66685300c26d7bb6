"""Two on-disk BM25 options over the same tokens (tokenize.py), at the scale of a built index.

    .venv/bin/python bench/lexical_backends.py --index /work/bench-data/scale-1m --fts5 /work/bench-data/scale-1m-fts5.db

- tantivy: the index's own lexical/ folder (lexical_tantivy.py), top 100 by BM25 with block-max WAND;
- SQLite FTS5: the same pages' tokens in an FTS5 table (written by `scale_corpus.py build --fts5`),
  top 100 by its bm25() (`ORDER BY bm25(pages) LIMIT 100` over the OR of the query's tokens).
Both answer the same 3-6 word questions (scale_corpus.query_texts); also timed: adding 10 pages and
making them searchable (one commit), which is what an incremental ingest does. The faster is kept
as the engine's lexical index.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scale_corpus import query_texts  # noqa: E402
from search_engine.tokenize import tokenize  # noqa: E402


def timed(fn, queries) -> dict:
    wall, cpu = [], []
    for q in queries:
        w, c = time.perf_counter(), time.process_time()
        fn(q)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    w, c = np.asarray(wall) * 1000, np.asarray(cpu) * 1000
    return {"p50_ms": round(float(np.percentile(w, 50)), 2), "p99_ms": round(float(np.percentile(w, 99)), 2),
            "cpu_p50_ms": round(float(np.percentile(c, 50)), 2), "cpu_p99_ms": round(float(np.percentile(c, 99)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--fts5", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()

    from search_engine.lexical_tantivy import TantivyLexical

    queries = [tokenize(t) for t in query_texts(args.queries)]
    lexical = TantivyLexical(args.index / "lexical")
    fts = sqlite3.connect(args.fts5, isolation_level=None)
    pages = fts.execute("SELECT count(*) FROM pages").fetchone()[0]

    def fts_search(tokens):
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in sorted(set(tokens)))
        return fts.execute("SELECT rowid, bm25(pages) AS s FROM pages WHERE pages MATCH ? ORDER BY s LIMIT 100",
                           (match,)).fetchall()

    for q in queries[:5]:  # warm both (page cache, mapped segments)
        lexical.search(q, 100)
        fts_search(q)
    overlap = []
    for q in queries[:50]:  # do they find the same pages? (scores differ: b = 0.4 emulated vs 0.75)
        a = set(lexical.search(q, 10)[1].tolist())
        b = {r[0] for r in fts_search(q)[:10]}
        overlap.append(len(a & b) / 10 if a or b else 1.0)
    results = {"pages_tantivy": len(lexical), "pages_fts5": pages,
               "tantivy": timed(lambda q: lexical.search(q, 100), queries),
               "fts5": timed(fts_search, queries),
               "top10_overlap": round(float(np.mean(overlap)), 3)}

    # incremental: 10 new pages, committed and searchable (into a throwaway copy of neither: FTS5 in a
    # transaction rolled back, tantivy into a scratch index would not be the same size, so it is timed
    # on the real index and the pages are deleted again)
    new_tokens = [tokenize(f"incremental probe page {i} zyxwvut{i}") for i in range(10)]
    started = time.perf_counter()
    for i, t in enumerate(new_tokens):
        lexical.add(10**12 + i, t)
    lexical.commit()
    found = len(lexical.search(["zyxwvut3"], 5)[1])
    results["tantivy_add_10_s"] = round(time.perf_counter() - started, 3)
    for i in range(10):
        lexical.remove(10**12 + i)
    lexical.close_writer()
    started = time.perf_counter()
    fts.execute("BEGIN")
    fts.executemany("INSERT INTO pages(rowid, tokens) VALUES (?, ?)", [(10**12 + i, " ".join(t)) for i, t in enumerate(new_tokens)])
    fts.execute("COMMIT")
    found_fts = len(fts_search(["zyxwvut3"]))
    results["fts5_add_10_s"] = round(time.perf_counter() - started, 3)
    fts.execute("DELETE FROM pages WHERE rowid >= ?", (10**12,))
    results["probe_found"] = {"tantivy": found, "fts5": found_fts}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
