"""The Library page under AppTest: named indexes, ingesting a server folder or uploads, skipped files, the page grid."""
from __future__ import annotations

import json
import shutil

from app_support import all_text, app, clean_env, data_root, texts, unescape_md  # noqa: F401 (fixtures)
from conftest import DEMO_CORPUS

NEW = "a new index…"
SLIDES = ("slide_3_1024.jpg", "slide_16_1024.jpg")


def manifest_pages(folder) -> list[str]:
    data = json.loads((folder / "manifest.json").read_text())
    return [p for s in data["sources"].values() for p in s["pages"]]


def new_index(at, name: str):
    at.selectbox(key="library_target").set_value(NEW).run()
    at.text_input(key="library_new_name").input(name).run()
    return at


def test_lists_indexes_and_switches_the_active_one(data_root):
    from search_engine.index import DocumentIndex

    DocumentIndex.open(data_root / "indexes" / "empty")  # a second, empty index beside the sample
    at = app("pages/library.py")
    table = at.dataframe[0].value
    assert list(table["name"]) == ["empty", "sample"]
    assert list(table["pages"]) == [0, 4]
    assert at.selectbox(key="library_active").value == "sample"  # the index with pages is active
    assert any(i.startswith("aurora_water_report_2025_1") for image in at.image for i in image.captions)
    at.selectbox(key="library_active").set_value("empty").run()
    assert at.session_state["active_index"] == "empty"
    assert "This index has no pages yet." in texts(at.info)
    at.switch_page("pages/ask.py").run()
    assert "the index **empty**" in all_text(at)


def test_ingests_a_server_folder_with_progress_and_lists_what_was_skipped(data_root, tmp_path):
    folder = tmp_path / "my docs"
    folder.mkdir()
    for name in SLIDES:
        shutil.copy(DEMO_CORPUS / name, folder / name)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (folder / "notes.txt").write_text("not a document")

    at = new_index(app("pages/library.py"), "mine")
    at.text_input(key="library_path").input(str(folder)).run()
    next(b for b in at.button if b.label == "Index this path").click().run()
    assert not at.exception and not at.error, texts(at.error)

    index_folder = data_root / "indexes" / "mine"
    assert sorted(manifest_pages(index_folder)) == sorted(n.removesuffix(".jpg") for n in SLIDES)
    [summary] = texts(at.warning)
    assert summary.startswith("2 pages added, 0 removed, 0 files unchanged, 2 skipped")
    skipped = at.dataframe[1].value  # [0] is the index table
    reasons = dict(zip([p.rsplit("/", 1)[-1] for p in skipped["file"]], skipped["why it was skipped"]))
    assert set(reasons) == {"broken.pdf", "notes.txt"} and all(reasons.values())
    # the new index is active for this session, and its pages are browsable with their OCR boxes
    assert at.session_state["active_index"] == "mine"
    assert at.selectbox(key="library_target").value == "mine"
    assert sorted(c.split(" · ")[0] for image in at.image for c in image.captions) == sorted(n.removesuffix(".jpg") for n in SLIDES)
    at.selectbox(key="library_open_mine").set_value("slide_3_1024").run()
    boxes = at.dataframe[-1].value
    assert len(boxes) > 3 and any("2020" in t for t in boxes["text"])
    figure = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert len(figure["layout"]["shapes"]) == len(boxes)  # one numbered outline per OCR line

    # ingesting the same folder again touches nothing
    next(b for b in at.button if b.label == "Index this path").click().run()
    assert texts(at.warning)[0].startswith("0 pages added, 0 removed, 2 files unchanged, 2 skipped")


def test_a_folder_that_does_not_exist_is_a_clear_error(data_root):
    at = app("pages/library.py")
    at.text_input(key="library_path").input("/no/such/folder").run()
    next(b for b in at.button if b.label == "Index this path").click().run()
    assert not at.exception
    assert [unescape_md(e) for e in texts(at.error)] == ["There is no file or folder at /no/such/folder on the server."]
    assert manifest_pages(data_root / "indexes" / "sample") == [f"aurora_water_report_2025_{i}" for i in range(1, 5)]
    assert at.image  # the page grid still shows


def test_uploads_index_documents_and_report_files_that_are_not_documents(data_root):
    at = new_index(app("pages/library.py"), "uploads")
    at.file_uploader(key="library_uploads").set_value([
        ("slide 3 (copy).jpg", (DEMO_CORPUS / SLIDES[0]).read_bytes(), "image/jpeg"),
        ("minutes.pdf", b"definitely not a PDF", "application/pdf"),
    ]).run()
    next(b for b in at.button if b.label == "Index the uploads").click().run()
    assert not at.exception
    assert texts(at.warning)[0].startswith("1 pages added")
    skipped = at.dataframe[1].value
    assert [p.rsplit("/", 1)[-1] for p in skipped["file"]] == ["minutes.pdf"]
    assert manifest_pages(data_root / "indexes" / "uploads") == ["slide 3 (copy)"]
    assert (data_root / "uploads" / "uploads" / "slide 3 (copy).jpg").is_file()


def test_an_upload_with_nothing_indexable_is_an_error(data_root):
    at = app("pages/library.py")
    at.file_uploader(key="library_uploads").set_value([("notes.txt", b"hello", "text/plain")]).run()
    next(b for b in at.button if b.label == "Index the uploads").click().run()
    assert not at.exception
    [error] = texts(at.error)
    assert error.startswith("Nothing could be indexed.")
    assert at.dataframe[1].value["file"][0].endswith("notes.txt")


def test_a_bad_index_name_is_refused(data_root):
    at = new_index(app("pages/library.py"), "../escape")
    assert any("An index name is" in e for e in texts(at.error))
    assert next(b for b in at.button if b.label == "Index this path").disabled
    at.text_input(key="library_new_name").input("sample").run()
    assert any("exists already" in unescape_md(e) for e in texts(at.error))
