"""Ingestion speed for an image-only corpus (every page OCR'd): ../shared/corpus/vrag-demo by default.

    .venv/bin/python bench/ingest_speed.py
    .venv/bin/python bench/ingest_speed.py --corpus some/folder/of/scans

Ingests the corpus into a fresh temporary index with the models already loaded, and reports pages/s
(wall), CPU seconds per page, and how much of the wall time OCR and embedding took. The machine is
shared, so the load average is printed too. (bench/ingest_pdf_speed.py measures born-digital PDFs.)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search_engine import DocumentIndex  # noqa: E402
from search_engine.embedders import load_embedder  # noqa: E402
from search_engine.ocr import OcrEngine  # noqa: E402


class Timed:
    """Wraps one method of an object and adds up the wall time spent in it."""

    def __init__(self, obj, method: str):
        self.seconds, inner = 0.0, getattr(obj, method)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        setattr(obj, method, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT / ".." / "shared" / "corpus" / "vrag-demo"))
    args = parser.parse_args()

    started = time.perf_counter()
    embedder, ocr = load_embedder("minilm"), OcrEngine()
    embedder.encode_texts(["warm up"])
    load_s = time.perf_counter() - started
    ocr_time, embed_time = Timed(ocr, "read"), Timed(embedder, "encode_texts")

    with tempfile.TemporaryDirectory(prefix="vrag-ingest-speed-") as work:
        index = DocumentIndex.open(Path(work) / "index", embedder=embedder, ocr=ocr)
        started, cpu_started = time.perf_counter(), time.process_time()
        report = index.ingest([args.corpus])
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        pages = len(report.added)
        print(json.dumps({
            "corpus": str(Path(args.corpus).resolve()),
            "pages": pages,
            "skipped": len(report.skipped),
            "ingest_s": round(wall, 1),
            "pages_per_s": round(pages / wall, 3),
            "cpu_s_per_page": round(cpu / pages, 2),
            "ocr_share_of_wall": round(ocr_time.seconds / wall, 3),
            "embed_share_of_wall": round(embed_time.seconds / wall, 3),
            "model_load_s": round(load_s, 1),
            "load_avg": [round(x, 1) for x in os.getloadavg()],
        }, indent=1))


if __name__ == "__main__":
    main()
