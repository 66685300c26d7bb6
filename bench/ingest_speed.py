"""Ingestion speed for an image-only corpus (every page OCR'd): ../shared/corpus/vrag-demo by default.

    .venv/bin/python bench/ingest_speed.py                     # 1 worker, then 2 workers, same run
    .venv/bin/python bench/ingest_speed.py --workers 2 --corpus some/folder/of/scans

Ingests the corpus into a fresh temporary index once per worker count (`IndexConfig.workers`: the
processes that render and OCR pages; 1 = one core for OCR, as before the process pool), with the
embedder already loaded, and reports pages/s (wall), CPU seconds per page (this process and its
workers), and the speed-up over the first worker count. The machine is shared, so the load average
is printed too. (bench/ingest_pdf_speed.py measures born-digital PDFs.)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search_engine import DocumentIndex, IndexConfig  # noqa: E402
from search_engine.embedders import load_embedder  # noqa: E402


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(corpus: str, workers: int, embedder) -> dict:
    with tempfile.TemporaryDirectory(prefix="vrag-ingest-speed-") as work:
        index = DocumentIndex.open(Path(work) / "index", embedder=embedder, config=IndexConfig(workers=workers))
        load = os.getloadavg()[0]
        started, cpu_started = time.perf_counter(), cpu_seconds()
        report = index.ingest([corpus])
        wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
        pages = len(report.added)
        return {"workers": workers, "pages": pages, "skipped": len(report.skipped), "ingest_s": round(wall, 1),
                "pages_per_s": round(pages / wall, 3), "cpu_s_per_page": round(cpu / pages, 2),
                "load_avg_at_start": round(load, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT / ".." / "shared" / "corpus" / "vrag-demo"))
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, in order")
    args = parser.parse_args()

    embedder = load_embedder("minilm")
    embedder.encode_texts(["warm up"])
    runs = [run(args.corpus, int(w), embedder) for w in args.workers.split(",")]
    for r in runs[1:]:
        r["speedup_vs_first"] = round(r["pages_per_s"] / runs[0]["pages_per_s"], 2)
    print(json.dumps({"corpus": str(Path(args.corpus).resolve()), "runs": runs,
                      "load_avg_end": [round(x, 1) for x in os.getloadavg()]}, indent=1))


if __name__ == "__main__":
    main()
