"""Realistic page records for the scale benchmarks, written through a backend's own commit API.

    .venv/bin/python bench/scale_corpus.py build --index /work/bench-data/scale-1m --pages 1000000
    .venv/bin/python bench/scale_corpus.py build --index /work/bench-data/scale-100k-milvus --pages 100000 --backend milvus
    .venv/bin/python bench/scale_corpus.py compare --index /work/bench-data/scale-1m --real /work/bench-data/real-10k

Rendering and OCR a million pages would take days here, so `build` writes what an ingest would
commit, through the same call (`backend.commit(state, pages, vectors, tokens)`, one chunk per
`--chunk` pages): born-digital report pages of about 264 word boxes in reading order (lines of
words from a Zipf-distributed vocabulary of 50,000 pronounceable words plus numbers, with a heading
line, page coordinates like a 144-dpi A4 page), grouped into 50-page PDFs. Vectors are synthetic
384-d unit vectors around 256 centres (embedding a million pages with MiniLM would take ten hours);
queries use real MiniLM embeddings of their text, so the search cost is real. No page images
are written (searching never reads them).

`--fts5 FILE` also writes the same tokens into a SQLite FTS5 table, for bench/lexical_backends.py.
`compare` checks the synthetic records against an index built by the real ingest path (per-page
box count, text length, tokens and bytes on disk).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sqlite3
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DIM = 384
VOCAB = 50_000
PAGES_PER_SOURCE = 50
BOXES_PER_PAGE = 264
# Our tokens keep '.' and "'" inside them (12.5, don't); FTS5 doubles a quote inside a quoted option.
FTS5_TOKENIZER = """unicode61 remove_diacritics 0 tokenchars '.'''"""
_ONSETS = "b c d f g h j k l m n p r s t v w br cr dr fr gr pr tr bl cl fl gl pl sl st sp sh ch th".split()
_VOWELS = "a e i o u ai ea ee oa ou io".split()
_CODAS = ["", "", "n", "r", "s", "t", "l", "m", "nd", "rt", "st", "ng", "ck"]


def vocabulary(seed: int = 11) -> list[str]:
    """VOCAB distinct pronounceable words of 1-4 syllables (what a tokenizer sees of English prose)."""
    rng = random.Random(seed)
    words: dict[str, None] = {}
    while len(words) < VOCAB:
        syllables = rng.choice([1, 2, 2, 3, 3, 4])
        words.setdefault("".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                                 for _ in range(syllables)), None)
    return list(words)


def zipf(n: int) -> np.ndarray:
    p = 1.0 / (np.arange(n) + 2.7) ** 1.1
    return p / p.sum()


class PageMaker:
    """Deterministic realistic pages: page i is the same in every run."""

    def __init__(self):
        self.words = vocabulary()
        self.cdf = np.cumsum(zipf(VOCAB))

    def words_of(self, i: int) -> list[str]:
        rng = np.random.default_rng(i)
        ids = np.minimum(np.searchsorted(self.cdf, rng.random(BOXES_PER_PAGE)), VOCAB - 1).tolist()
        words = [self.words[j] for j in ids]
        for j, r in zip(rng.integers(0, BOXES_PER_PAGE, 8).tolist(), rng.random(8).tolist()):
            words[j] = f"{int(r * 99999):,}" if r < 0.5 else f"{r * 100:.1f}%"  # numbers, as reports have
        return words


def layout(words: list[str]) -> list[tuple]:
    """Word boxes in reading order on a 1190 x 1684 page: a heading line of 12 words, then body lines."""
    boxes, x, y = [], 120.0, 140.0
    for j, word in enumerate(words):
        width = 9.0 * len(word) + 4
        if j == 12 or x + width > 1070:
            x, y = 120.0, y + (44.0 if j == 12 else 24.0)
        boxes.append((word, (x, y, x + width, y + 18.0)))
        x += width + 8
    return boxes


_maker: PageMaker | None = None  # one per worker process


def make_chunk(bounds: tuple[int, int]) -> tuple[int, list[list[tuple]], list[list[str]]]:
    """Boxes and lexical tokens of pages [start, end), made in a worker process."""
    global _maker
    from search_engine.tokenize import tokenize

    if _maker is None:
        _maker = PageMaker()
    start, end = bounds
    boxes, tokens = [], []
    for i in range(start, end):
        words = _maker.words_of(i)
        boxes.append(layout(words))
        tokens.append(tokenize("\n".join(words)))
    return start, boxes, tokens


def query_texts(count: int, seed: int = 3) -> list[str]:
    """Questions of 3-6 topical words (mid-frequency: the 30 most frequent words act as stop words)."""
    words, rng = vocabulary(), np.random.default_rng(seed)
    out = []
    for _ in range(count):
        ranks = 30 + rng.zipf(1.3, size=rng.integers(3, 7)) * 7
        out.append(" ".join(words[min(int(r), VOCAB - 1)] for r in ranks))
    return out


def unit_vectors(n: int, start: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(10_000_000 + start)
    v = centres[rng.integers(0, len(centres), n)] + 0.8 * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def build(args) -> dict:
    from search_engine.config import IndexConfig
    from search_engine.index import DocumentIndex
    from search_engine.store import Chunk, SourceState
    from search_engine.types import Page, TextBox

    config = IndexConfig(backend=args.backend, milvus_uri=args.milvus_uri or "", dense_checkpoint_every=10**9)
    index = DocumentIndex.open(args.index, config=config)
    backend = index.backend
    centres = np.random.default_rng(5).standard_normal((256, DIM)).astype(np.float32)
    fts = None
    if args.fts5:
        fts = sqlite3.connect(args.fts5, isolation_level=None)
        fts.execute("PRAGMA journal_mode=WAL")
        fts.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS pages USING fts5(tokens, tokenize = \"{FTS5_TOKENIZER}\")")
    have = len(index)
    started = time.perf_counter()
    timings = {"wait_s": 0.0, "commit_s": 0.0}
    images = backend.images.images_dir
    bounds = [(s, min(s + args.chunk, args.pages)) for s in range(have, args.pages, args.chunk)]
    pool = multiprocessing.get_context("forkserver").Pool(args.workers)
    with index._folder_store.writer_lock():
        backend.begin_write()
        t0 = time.perf_counter()
        for start, chunk_boxes, tokens in pool.imap(make_chunk, bounds):
            t1 = time.perf_counter()
            n = len(tokens)
            pages = []
            for i, boxes in zip(range(start, start + n), chunk_boxes):
                source = f"/corpus/reports/report-{i // PAGES_PER_SOURCE:06d}.pdf"
                number = i % PAGES_PER_SOURCE + 1
                page_id = f"report-{i // PAGES_PER_SOURCE:06d}_{number}"
                pages.append(Page(page_id, source, number, str(images / f"{page_id}.jpg"), 1190, 1684, "pdf",
                                  [TextBox(w, box, 1.0) for w, box in boxes]))
            vectors = unit_vectors(n, start, centres)
            by_source: dict[str, list[int]] = {}
            for j, p in enumerate(pages):
                by_source.setdefault(p.source, []).append(j)
            chunks = []
            for source, rows in by_source.items():
                last = pages[rows[-1]].page
                state = SourceState(source, f"{zlib.crc32(source.encode()):064x}", 1, 1, PAGES_PER_SOURCE, last,
                                    last == PAGES_PER_SOURCE, Path(source).stem)
                chunks.append(Chunk(state, [pages[j] for j in rows], vectors[rows], [tokens[j] for j in rows]))
            backend.commit(chunks)
            if fts is not None:
                fts.execute("BEGIN")
                fts.executemany("INSERT INTO pages(rowid, tokens) VALUES (?, ?)",
                                [(start + j, " ".join(t)) for j, t in enumerate(tokens)])
                fts.execute("COMMIT")
            t2 = time.perf_counter()
            timings["wait_s"] += t1 - t0
            timings["commit_s"] += t2 - t1
            t0 = t2
            done = start + n
            if done % (args.chunk * 20) == 0 or done == args.pages:
                rate = (done - have) / (time.perf_counter() - started)
                print(f"  {done:,} pages, {rate:.0f} pages/s (waiting for pages {timings['wait_s']:.0f} s, "
                      f"commit {timings['commit_s']:.0f} s)", file=sys.stderr, flush=True)
        pool.close()
        t3 = time.perf_counter()
        if hasattr(backend, "dense"):
            backend.dense.maybe_checkpoint(force=True)  # the one HNSW build
        timings["dense_checkpoint_s"] = time.perf_counter() - t3
        backend.end_write(index.config.format_version)
    return {"pages": len(index), "seconds": round(time.perf_counter() - started, 1),
            **{k: round(v, 1) for k, v in timings.items()}, "disk": disk_usage(Path(args.index))}


def disk_usage(folder: Path) -> dict:
    sizes: dict[str, int] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            part = path.relative_to(folder).parts[0]
            key = "lexical" if part == "lexical" else ("dense" if part.startswith("dense") else part)
            sizes[key] = sizes.get(key, 0) + path.stat().st_size
    return {k: round(v / 2**20, 1) for k, v in sorted(sizes.items())}


def page_stats(folder: Path, sample: int = 2000) -> dict:
    """Per-page figures of an index's records: boxes, characters, tokens, bytes of boxes JSON."""
    from search_engine.tokenize import tokenize

    db = sqlite3.connect(f"file:{folder / 'records.db'}?mode=ro", uri=True)
    n = db.execute("SELECT count(*) FROM pages").fetchone()[0]
    rows = db.execute("SELECT boxes FROM pages ORDER BY random() LIMIT ?", (sample,)).fetchall()
    boxes = [json.loads(r[0]) for r in rows]
    texts = ["\n".join(b[0] for b in page) for page in boxes]
    record_bytes = (folder / "records.db").stat().st_size + sum(
        p.stat().st_size for p in folder.glob("records.db-wal"))
    return {"pages": n, "boxes_per_page": round(float(np.mean([len(b) for b in boxes])), 1),
            "chars_per_page": round(float(np.mean([len(t) for t in texts])), 1),
            "tokens_per_page": round(float(np.mean([len(tokenize(t)) for t in texts])), 1),
            "distinct_tokens_per_page": round(float(np.mean([len(set(tokenize(t))) for t in texts])), 1),
            "boxes_json_bytes_per_page": round(float(np.mean([len(r[0].encode()) for r in rows])), 1),
            "records_db_kb_per_page": round(record_bytes / max(n, 1) / 1024, 2),
            "lexical_kb_per_page": round(sum(p.stat().st_size for p in (folder / "lexical").glob("*")) / max(n, 1) / 1024, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--index", required=True)
    b.add_argument("--pages", type=int, default=1_000_000)
    b.add_argument("--chunk", type=int, default=1000, help="pages per commit")
    b.add_argument("--workers", type=int, default=2, help="processes making page text")
    b.add_argument("--backend", default="local", choices=["local", "milvus"])
    b.add_argument("--milvus-uri", default=None)
    b.add_argument("--fts5", default=None, help="also write the tokens into this SQLite FTS5 file")
    c = sub.add_parser("compare")
    c.add_argument("--index", required=True)
    c.add_argument("--real", required=True, help="an index built by the real ingest path")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.command == "build":
        print(json.dumps(build(args), indent=1))
    else:
        print(json.dumps({"synthetic": page_stats(Path(args.index)), "real_ingest": page_stats(Path(args.real))}, indent=1))


if __name__ == "__main__":
    main()
