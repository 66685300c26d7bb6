"""Ingestion on real files: text-layer boxes, OCR, page ids, and every kind of bad input."""
from __future__ import annotations

import os

import pymupdf
import pytest

from search_engine import DocumentIndex, IndexConfig
from search_engine.embedders import EmbedderError, load_embedder
from search_engine.ocr import OcrEngine
from search_helpers import ink_box, make_pdf, make_png_header_bomb, make_text_image


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("minilm")


@pytest.fixture(scope="module")
def ocr():
    return OcrEngine()


@pytest.fixture
def open_index(tmp_path, embedder, ocr):
    def _open(name="index", config=None):
        return DocumentIndex.open(tmp_path / name, embedder=embedder, ocr=ocr, config=config)
    return _open


# ---- text layer and OCR --------------------------------------------------------------------------
@pytest.mark.parametrize("rotation", [0, 90])
def test_pdf_text_layer_gives_word_boxes_in_page_pixels(tmp_path, open_index, rotation):
    make_pdf(tmp_path / "memo.pdf", ["Quarterly"], fontsize=30, rotation=rotation)
    index = open_index(config=IndexConfig(min_text_chars=5))  # one word is a text layer here: no OCR
    report = index.ingest([tmp_path / "memo.pdf"])
    assert report.added == ["memo_1"]
    page = index.page("memo_1")
    assert page.text_source == "pdf" and [b.text for b in page.boxes] == ["Quarterly"]
    # 144 dpi = 2 px per point: US Letter is 1224 x 1584 px (sideways when rotated)
    assert (page.width, page.height) == ((1224, 1584) if rotation == 0 else (1584, 1224))
    x1, y1, x2, y2 = page.boxes[0].box
    ink = ink_box(index.page_image("memo_1"))
    # the drawn word's ink lies inside its box, and the box is not much larger than the ink
    assert x1 - 1 <= ink[0] and y1 - 1 <= ink[1] and ink[2] <= x2 + 1 and ink[3] <= y2 + 1
    assert (ink[0] - x1) + (x2 - ink[2]) + (ink[1] - y1) + (y2 - ink[3]) < 60
    if rotation == 0:  # written at x = 72 pt -> 144 px; baseline y = 100 pt -> 200 px
        assert abs(x1 - 144) < 3 and 195 < y2 < 225


def test_image_and_scanned_pdf_pages_are_ocrd(tmp_path, open_index):
    make_text_image(tmp_path / "scan.png", ["Invoice 4711", "Total 99.50 EUR"])
    doc = pymupdf.open()  # a scanned PDF: the page holds only a picture of text
    page = doc.new_page(width=450, height=200)
    page.insert_image(page.rect, filename=str(tmp_path / "scan.png"))
    doc.save(tmp_path / "scanned.pdf")
    index = open_index()
    report = index.ingest([tmp_path])
    assert sorted(report.added) == ["scan", "scanned_1"]
    for page_id in report.added:
        page = index.page(page_id)
        assert page.text_source == "ocr"
        assert "4711" in page.text and "99.50" in page.text
        box = next(b for b in page.boxes if "4711" in b.text).box
        assert box[0] < box[2] <= page.width and box[1] < box[3] <= page.height
    assert index.search("invoice 4711", top_k=2)[0].page_id in report.added


# ---- page ids ------------------------------------------------------------------------------------
def test_page_ids_follow_reference_naming_and_stay_unique(tmp_path, open_index):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    make_pdf(tmp_path / "a" / "report.pdf", ["alpha report, first page", "alpha report, second page"])
    make_pdf(tmp_path / "b" / "report.pdf", ["beta report, the only page"])
    make_pdf(tmp_path / "a" / "report_1.pdf", ["gamma report, the only page"])  # would give report_1_1: no clash
    make_text_image(tmp_path / "a" / "report_2.png", ["Delta"])  # clashes with report_2 of a/report.pdf
    index = open_index()
    report = index.ingest([tmp_path / "a", tmp_path / "b"])
    ids = sorted(report.added)
    assert "report_1" in ids and "report_2" in ids and "report_1_1" in ids
    others = [i for i in ids if i.startswith("report-") or i.startswith("report_2-")]
    assert len(others) == 2, ids  # b/report.pdf -> report-XXXXXX_1, the image -> report_2-XXXXXX
    assert index.page(next(i for i in ids if i.startswith("report-"))).source.endswith("b/report.pdf")
    assert len(set(ids)) == len(ids) == 5
    # the same files re-ingested in a fresh index get the same ids (path-derived suffixes)
    again = open_index("again").ingest([tmp_path / "a", tmp_path / "b"])
    assert sorted(again.added) == ids


def test_odd_file_names(tmp_path, open_index):
    folder = tmp_path / "my docs ü"
    folder.mkdir()
    make_pdf(folder / "Annual report 2023 – 年报.pdf", ["Net income rose by four percent"])
    index = open_index()
    report = index.ingest([folder])
    assert report.added == ["Annual report 2023 – 年报_1"] and not report.skipped
    assert index.page_image("Annual report 2023 – 年报_1").size == (1224, 1584)
    assert index.search("net income", 1)[0].page_id == "Annual report 2023 – 年报_1"


# ---- bad input -----------------------------------------------------------------------------------
def test_bad_inputs_are_skipped_with_reasons_and_the_rest_is_indexed(tmp_path, open_index):
    d = tmp_path / "mixed"
    d.mkdir()
    make_pdf(d / "good.pdf", ["Good page about solar panels"])
    make_pdf(d / "locked.pdf", ["a secret page nobody can open"], encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="pw", owner_pw="own")
    make_pdf(d / "owner-only.pdf", ["readable wind turbines"], encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="own")
    (d / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
    (d / "no-pages.pdf").write_bytes(b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")
    (d / "empty.pdf").write_bytes(b"")
    (d / "zero.jpg").write_bytes(b"")
    (d / "garbage.png").write_bytes(os.urandom(500))
    make_text_image(d / "full.jpg", ["Truncated"])
    (d / "truncated.jpg").write_bytes((d / "full.jpg").read_bytes()[:3000])
    (d / "full.jpg").unlink()
    make_png_header_bomb(d / "bomb.png", 40_000, 40_000)
    (d / "notes.txt").write_text("not a page")
    (d / "noext").write_bytes(b"data")
    (d / "broken.png").symlink_to(d / "missing.png")
    (d / ".DS_Store").write_bytes(b"hidden: ignored silently")

    index = open_index()
    report = index.ingest([d, tmp_path / "does-not-exist"])
    reasons = {os.path.basename(s.path): s.reason for s in report.skipped}
    assert sorted(report.added) == ["good_1", "owner-only_1"]  # encrypted but openable: indexed
    expected = {
        "locked.pdf": "password-protected",
        "corrupt.pdf": "not a readable PDF",
        "no-pages.pdf": "not a readable PDF (corrupt or truncated): no page",
        "empty.pdf": "empty file",
        "zero.jpg": "empty file",
        "garbage.png": "not a readable image",
        "truncated.jpg": "truncated",
        "bomb.png": "1,600,000,000 pixels exceeds the limit of 100,000,000 (decompression-bomb guard",
        "notes.txt": "unsupported file type '.txt'",
        "noext": "unsupported file type '(no extension)'",
        "broken.png": "cannot read",
        "does-not-exist": "no such file",
    }
    assert set(reasons) == set(expected), reasons
    for name, fragment in expected.items():
        assert fragment in reasons[name], (name, reasons[name])
    assert index.search("solar panels", 1)[0].page_id == "good_1"


def test_the_bomb_message_quotes_the_configured_limit(tmp_path, open_index):
    make_png_header_bomb(tmp_path / "big.png", 12_000, 10_000)  # 120M: under PIL's guard, over ours
    make_png_header_bomb(tmp_path / "huge.png", 20_000, 20_000)  # 400M: PIL's own guard refuses it first
    report = open_index(config=IndexConfig(max_image_pixels=50_000_000)).ingest([tmp_path])
    reasons = {os.path.basename(s.path): s.reason for s in report.skipped}
    assert reasons["big.png"].startswith("image too large: 120,000,000 pixels exceeds the limit of 50,000,000")
    assert reasons["huge.png"].startswith("image too large: 400,000,000 pixels exceeds the limit of 50,000,000")
    assert "200,000,000" not in " ".join(reasons.values())  # PIL's limit is not the user's


def test_a_poster_sized_pdf_page_is_rendered_within_the_pixel_limit(tmp_path, open_index):
    doc = pymupdf.open()
    doc.new_page(width=14400, height=14400).insert_text((100, 200), "Giant poster headline for the summer fair", fontsize=120)
    doc.save(tmp_path / "poster.pdf")
    index = open_index(config=IndexConfig(max_image_pixels=4_000_000))
    index.ingest([tmp_path / "poster.pdf"])
    page = index.page("poster_1")
    assert page.width * page.height <= 4_000_000 and page.width == page.height
    assert "headline" in page.text


def test_visual_embedder_without_weights_fails_clearly():
    with pytest.raises(EmbedderError) as error:
        load_embedder("colqwen2")
    assert "vidore/colqwen2-v1.0" in str(error.value) and "colpali-engine" in str(error.value)
    with pytest.raises(EmbedderError, match="unknown embedder"):
        load_embedder("clip")


def test_embedder_and_config_must_agree(tmp_path, embedder):
    with pytest.raises(ValueError, match="does not match"):
        DocumentIndex.open(tmp_path / "x", embedder=embedder, config=IndexConfig(embedder="colqwen2"))


def test_unknown_page_is_a_key_error(open_index):
    with pytest.raises(KeyError, match="no page 'nope'"):
        open_index().page("nope")
