"""A tiny real index for agent tests: a generated 3-page PDF (text layer, so no OCR) ingested by
search_engine.DocumentIndex, cached under tests/artifacts/ (gitignored) so it is built once."""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import pymupdf

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PAGES = [
    ("Quarterly revenue report", "Revenue in 2023 was 4.2 billion dollars, up 12% from 2022."),
    ("Staff and offices", "The company employed 412 staff in 9 offices at the end of the year."),
    ("Cloud pricing", "Object storage costs 12 yuan per terabyte per month in the Hangzhou region."),
]


def write_report_pdf(path: Path) -> Path:
    """A4 pages with a title, a sentence and a coloured block (so crops have structure to compare)."""
    doc = pymupdf.open()
    for i, (title, sentence) in enumerate(PAGES):
        page = doc.new_page()
        page.insert_text((72, 90), title, fontsize=26)
        page.insert_textbox(pymupdf.Rect(72, 120, 520, 260), sentence, fontsize=16)
        page.draw_rect(pymupdf.Rect(72, 300 + 40 * i, 420, 520), color=(0.8, 0.1, 0.1), fill=(0.2, 0.4, 0.2 + 0.3 * i))
        for row in range(6):  # a small table of numbers
            page.insert_text((80, 560 + 22 * row), f"row {row + 1}   {(row + 1) * 37 + i}   {(row + 3) * 11.5:.1f}%", fontsize=12)
    doc.save(path)
    doc.close()
    return path


def tiny_index_folder() -> Path:
    """The folder of the cached tiny index. Every call re-syncs it through the index's own incremental
    ingest: a no-op when it is current, a rebuild when the index format or settings changed."""
    from search_engine.index import DocumentIndex

    key = hashlib.sha256(repr(PAGES).encode() + b"v1").hexdigest()[:10]
    folder = ARTIFACTS / f"agent-tiny-index-{key}"
    if not (folder / "report.pdf").is_file():
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-agent-index-", dir=ARTIFACTS))
        try:
            write_report_pdf(tmp / "report.pdf")
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    index = DocumentIndex.open(folder / "index")
    index.ingest([folder / "report.pdf"])
    assert sorted(p.page_id for p in index.pages()) == ["report_1", "report_2", "report_3"]
    return folder


def open_tiny_index():
    from search_engine.index import DocumentIndex

    return DocumentIndex.open(tiny_index_folder() / "index")
