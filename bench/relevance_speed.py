"""Relevance-map cost per page on the 25 demo pages (target: under 200 ms per already-indexed page).

    .venv/bin/python bench/relevance_speed.py [--index tests/artifacts/demo-index] [--torch-threads N] [--out F]

For every page of the index, three costs of `relevance_map` (box scores painted on the default grid):
- cold: the first map of a page: reading contexts, box and context embeddings (once per page);
- new query: a warm page and a query not seen before (one query embedding plus the numpy work);
  this is the "already indexed page, new query" cost the target is about;
- same query: a warm page and a query already embedded (the app maps one query over every hit).
Queries come from bench/questions/vrag_demo_dev.json. Prints p50 / p90 / max per cost as JSON,
wall time (what a user waits) and process CPU time (all threads; what the work costs), plus the
machine's load average, since other jobs on a shared 2-core machine inflate wall time.

The index is the one the tests build (tests/conftest.py `demo_index`); if it is missing it is built
here from ../shared/corpus/vrag-demo (OCR of 25 pages, a minute or two).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search_engine import DocumentIndex  # noqa: E402
from search_engine.relevance import BoxCache, relevance_map  # noqa: E402

CORPUS = (ROOT / ".." / "shared" / "corpus" / "vrag-demo").resolve()
QUESTIONS = ROOT / "bench" / "questions" / "vrag_demo_dev.json"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
        "max": round(ordered[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default=str(ROOT / "tests" / "artifacts" / "demo-index"))
    parser.add_argument("--torch-threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--out", default=None, help="also write the JSON here (e.g. bench/results/relevance_speed.json)")
    args = parser.parse_args()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)

    index = DocumentIndex.open(args.index)
    if len(index) == 0:
        print(f"building {args.index} from {CORPUS} (OCR, a minute or two)", file=sys.stderr)
        index.ingest([CORPUS])
    cache = BoxCache.for_index(index)
    queries = [q["query"] for q in json.loads(QUESTIONS.read_text(encoding="utf-8"))["examples"]]
    cache.query_vector("warm up the embedder")  # model load is not a per-page cost

    pages = index.pages()
    costs = {"cold": ([], []), "new_query": ([], []), "same_query": ([], [])}
    for k, page in enumerate(pages):
        first, fresh = queries[k % len(queries)], queries[(k + 1) % len(queries)] + f" (page {k})"
        for name, query in (("cold", first), ("new_query", fresh), ("same_query", fresh)):
            wall, cpu = timed(lambda: relevance_map(query, page, cache))
            costs[name][0].append(wall)
            costs[name][1].append(cpu)

    import torch

    result = {
        "pages": len(pages),
        "boxes_per_page": summary([len(p.boxes) for p in pages]),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    for name, (wall, cpu) in costs.items():
        result[f"{name}_wall_ms"] = summary(wall)
        result[f"{name}_cpu_ms"] = summary(cpu)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
