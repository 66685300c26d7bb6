"""The generated sample report and its index: what `make run` shows on a fresh machine."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pymupdf
import pytest

from search_engine.sample_corpus import (
    EXAMPLE_QUESTIONS,
    REPORT_FILE,
    REPORT_STEM,
    SAMPLE_INDEX_NAME,
    build_sample_index,
    write_report_pdf,
    write_sample_corpus,
)

ROOT = Path(__file__).resolve().parents[2]


def test_report_has_a_paragraph_a_table_a_chart_and_a_scanned_page(tmp_path):
    doc = pymupdf.open(write_report_pdf(tmp_path / "r.pdf"))
    assert doc.page_count == 4
    texts = [page.get_text() for page in doc]
    assert "Kestrel Ridge treatment plant opened on 12 September 2025" in " ".join(texts[0].split())
    assert "管网漏损率从14.2%降至9.8%" in texts[0]
    assert "Table 1." in texts[1] and "3,340" in texts[1] and "24,185" in texts[1]  # the total row adds up
    assert "Figure 1." in texts[2] and "42.7" in texts[2]
    assert len(doc[2].get_drawings()) >= 4  # the bars are vector shapes, not a picture
    assert texts[3].strip() == ""  # the memo has no text layer...
    assert len(doc[3].get_images()) == 1  # ...only a picture of text, so OCR must read it


def test_sample_files_are_written_once(tmp_path):
    [path] = write_sample_corpus(tmp_path)
    assert path.name == REPORT_FILE
    before = (path.stat().st_mtime_ns, path.read_bytes())
    assert write_sample_corpus(tmp_path) == [path]
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before  # stable content hash: no re-ingest


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    data = tmp_path_factory.mktemp("sample-data")
    calls = []
    index = build_sample_index(data, progress=lambda done, total, message: calls.append((done, total)))
    return data, index, calls


def test_build_sample_index(sample):
    data, index, calls = sample
    assert index.folder == (data / "indexes" / SAMPLE_INDEX_NAME).resolve()
    assert (data / "samples" / REPORT_FILE).is_file()
    assert sorted(p.page_id for p in index.pages()) == [f"{REPORT_STEM}_{i}" for i in range(1, 5)]
    assert [index.page(f"{REPORT_STEM}_{i}").text_source for i in range(1, 5)] == ["pdf", "pdf", "pdf", "ocr"]
    assert calls[-1] == (4, 4)


@pytest.mark.parametrize("example", EXAMPLE_QUESTIONS, ids=lambda e: e.page_id + ":" + e.question[:20])
def test_example_questions_are_answerable_from_their_gold_page(sample, example):
    _, index, _ = sample
    text = " ".join(index.page(example.page_id).text.split())
    for number in re.findall(r"\d+(?:[.,]\d+)*", example.answer):  # OCR included, for the memo page
        assert number in text, (number, example.page_id, text[:500])
    hits = index.search(example.question, top_k=4)
    assert hits[0].page_id == example.page_id, [(h.page_id, h.score) for h in hits]


def test_second_build_reuses_the_index(sample):
    data, index, _ = sample
    stamps = {p.page_id: Path(p.image_file).stat().st_mtime_ns for p in index.pages()}
    again = build_sample_index(data)
    assert len(again) == 4
    assert {p.page_id: Path(p.image_file).stat().st_mtime_ns for p in again.pages()} == stamps


def test_cli_sample_command(sample):
    data, _, _ = sample
    result = subprocess.run(
        [sys.executable, "-m", "search_engine", "sample", "--data", str(data)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"the sample index at {data.resolve() / 'indexes' / 'sample'} has 4 pages")
