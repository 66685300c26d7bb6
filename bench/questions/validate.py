"""Check the hand-made question sets against the page images they point at.

    .venv/bin/python bench/questions/validate.py [--corpus ../shared/corpus/vrag-demo] [FILE ...]

Checks, for every example: the required fields; that the page image exists in the corpus; that the page id,
file name and 1-based page number agree with the corpus naming (`slide_{n}_1024.jpg`, `aliyun4_{n}.jpg`);
that every evidence box is a well-formed box inside the full-resolution image; that uids are unique and no
query appears in both splits. Prints counts per split, language and question type. Exit code 1 on any problem.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = (HERE / ".." / ".." / ".." / "shared" / "corpus" / "vrag-demo").resolve()
DEFAULT_FILES = [HERE / "vrag_demo_dev.json", HERE / "vrag_demo_test.json"]
LANGUAGES = {"en", "zh"}
QUESTION_TYPES = {"table", "chart", "text", "diagram", "map"}
# The deck page number is the n in slide_{n}_1024 / aliyun4_{n}.
PAGE_ID = re.compile(r"(?:slide_(\d+)_1024|aliyun4_(\d+))")


def page_number(page_id: str) -> int | None:
    m = PAGE_ID.fullmatch(page_id)
    return int(m.group(1) or m.group(2)) if m else None


def check_box(box, size, what: str) -> list[str]:
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) for v in box)):
        return [f"{what} must be 4 integers [x1, y1, x2, y2], got {box!r}"]
    x1, y1, x2, y2 = box
    w, h = size
    problems = []
    if not (x1 < x2 and y1 < y2):
        problems.append(f"{what} {box} is empty or inverted")
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
        problems.append(f"{what} {box} leaves the {w}x{h} image")
    return problems


def check_example(ex: dict, corpus: Path, sizes: dict) -> list[str]:
    problems = []
    for key in ("uid", "query", "reference_answer", "meta_info"):
        if not ex.get(key):
            problems.append(f"missing {key}")
    meta = ex.get("meta_info") or {}
    for key in ("file_name", "reference_page", "reference_images", "page_ids", "language", "question_type", "evidence_box"):
        if key not in meta:
            problems.append(f"missing meta_info.{key}")
    if problems:
        return problems
    if meta["language"] not in LANGUAGES:
        problems.append(f"language {meta['language']!r} not in {sorted(LANGUAGES)}")
    if meta["question_type"] not in QUESTION_TYPES:
        problems.append(f"question_type {meta['question_type']!r} not in {sorted(QUESTION_TYPES)}")
    ids, images, pages = meta["page_ids"], meta["reference_images"], meta["reference_page"]
    if not (len(ids) == len(images) == len(pages) >= 1):
        problems.append("page_ids, reference_images and reference_page must be non-empty and the same length")
        return problems
    if meta["file_name"] != images[0]:
        problems.append(f"file_name {meta['file_name']!r} is not the first reference image {images[0]!r}")
    for pid, img, page in zip(ids, images, pages):
        if img != f"{pid}.jpg":
            problems.append(f"reference image {img!r} does not match page id {pid!r}")
        if page_number(pid) != page:
            problems.append(f"reference_page {page} does not match page id {pid!r}")
        path = corpus / img
        if not path.is_file():
            problems.append(f"{img} is not in the corpus {corpus}")
        elif img not in sizes:
            with Image.open(path) as im:
                sizes[img] = im.size
    if images[0] in sizes:
        # Boxes are pixels of the first reference image at its full resolution.
        for key in ("evidence_box", "evidence_row_box"):
            if key in meta:
                problems += check_box(meta[key], sizes[images[0]], key)
        if "evidence_row_box" in meta and not problems:
            b, r = meta["evidence_box"], meta["evidence_row_box"]
            if not (r[0] <= b[0] and r[1] <= b[1] and b[2] <= r[2] and b[3] <= r[3]):
                problems.append(f"evidence_box {b} is not inside evidence_row_box {r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path, default=DEFAULT_FILES)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = ap.parse_args(argv)

    sizes: dict = {}
    bad = 0
    uids: Counter = Counter()
    queries: dict[str, set[str]] = {}
    covered: set[str] = set()
    for file in args.files:
        examples = json.loads(file.read_text(encoding="utf-8"))["examples"]
        counts = Counter()
        for ex in examples:
            uids[ex.get("uid")] += 1
            queries.setdefault(file.name, set()).add(ex.get("query", "").strip().lower())
            for p in check_example(ex, args.corpus, sizes):
                print(f"{file.name} {ex.get('uid')}: {p}")
                bad += 1
            meta = ex.get("meta_info", {})
            covered.update(meta.get("page_ids", []))
            counts[(meta.get("language"), meta.get("question_type"))] += 1
        langs = Counter(lang for (lang, _), n in counts.items() for _ in range(n))
        types = Counter(t for (_, t), n in counts.items() for _ in range(n))
        print(f"{file.name}: {len(examples)} examples; languages {dict(langs)}; types {dict(types)}")
    for uid, n in uids.items():
        if n > 1:
            print(f"uid {uid} used {n} times")
            bad += 1
    names = list(queries)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for query in queries[a] & queries[b]:
                print(f"query in both {a} and {b}: {query!r}")
                bad += 1
    if args.corpus.is_dir():
        missing = sorted(p.stem for p in args.corpus.glob("*.jpg") if p.stem not in covered)
        print(f"pages covered: {len(covered)}; corpus pages with no question: {missing or 'none'}")
    print("OK" if not bad else f"{bad} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
