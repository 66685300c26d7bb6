"""The Library page under AppTest: named indexes, ingesting a server folder, uploads and zips, skipped files,
deleting an index, the page grid and the opened page, the index kept in the URL."""
from __future__ import annotations

import io
import json
import shutil
import stat
import zipfile

from streamlit.testing.v1 import AppTest

from support.app_support import APP, all_text, app, clean_env, data_root, texts, unescape_md  # noqa: F401 (fixtures)
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
    lines = at.table[-1].value  # the OCR text, wrapped in a table beside the page
    assert len(lines) > 3 and any("2020" in t for t in lines["text"])
    assert list(lines.columns) == ["line", "text", "confidence"]
    figure = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert not figure["layout"].get("shapes")  # the text boxes are off until asked for
    at.toggle(key="library_boxes").set_value(True).run()
    figure = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert len(figure["layout"]["shapes"]) == len(lines)  # one numbered outline per OCR line

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


def hostile_zip() -> bytes:
    """A zip of two real slides (one in a folder), a note, and the tricks a stranger's zip may hold."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"deck/{SLIDES[0]}", (DEMO_CORPUS / SLIDES[0]).read_bytes())
        zf.writestr(SLIDES[1], (DEMO_CORPUS / SLIDES[1]).read_bytes())
        zf.writestr("notes.txt", "not a document")
        zf.writestr("../../../escaped.jpg", (DEMO_CORPUS / SLIDES[0]).read_bytes())
        zf.writestr("/tmp/absolute.jpg", b"jpeg")
        link = zipfile.ZipInfo("link.jpg")
        link.create_system, link.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def test_a_zip_of_documents_is_unpacked_safely_and_indexed_with_one_skip_report(data_root):
    at = new_index(app("pages/library.py"), "zipped")
    at.file_uploader(key="library_uploads").set_value([("slides.zip", hostile_zip(), "application/zip")]).run()
    next(b for b in at.button if b.label == "Index the uploads").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert sorted(manifest_pages(data_root / "indexes" / "zipped")) == sorted(n.removesuffix(".jpg") for n in SLIDES)
    assert texts(at.warning)[0].startswith("2 pages added, 0 removed, 0 files unchanged, 4 skipped")
    skipped = at.dataframe[1].value
    why = dict(zip([f.split(" → ", 1)[1] for f in skipped["file"]], skipped["why it was skipped"]))
    assert set(why) == {"notes.txt", "../../../escaped.jpg", "/tmp/absolute.jpg", "link.jpg"}
    assert "climbs out" in why["../../../escaped.jpg"] and "absolute path" in why["/tmp/absolute.jpg"] and "symbolic link" in why["link.jpg"]
    unpacked = data_root / "uploads" / "zipped" / "slides (zip)"
    assert sorted(str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file()) == sorted([SLIDES[1], f"deck/{SLIDES[0]}"])
    assert not (data_root / "uploads" / "zipped" / "slides.zip").exists()  # unpacked, so not kept twice
    assert not any(p.name == "escaped.jpg" for p in data_root.parent.rglob("escaped.jpg"))


def delete_button(at, label):
    return next(b for b in at.button if b.label == label)


def test_an_index_is_deleted_after_a_confirmation(data_root):
    from search_engine.index import DocumentIndex

    DocumentIndex.open(data_root / "indexes" / "old")
    uploads = data_root / "uploads" / "old"
    uploads.mkdir(parents=True)
    (uploads / "a.pdf").write_bytes(b"%PDF")
    at = app("pages/library.py")
    at.selectbox(key="library_delete_name").set_value("old").run()
    assert at.checkbox(key="library_delete_uploads").label == "Also delete the 1 files uploaded into it"
    at.selectbox(key="library_delete_name").set_value("sample").run()
    assert not at.checkbox  # nothing was uploaded into the sample index: nothing to offer
    at.selectbox(key="library_delete_name").set_value("old").run()
    delete_button(at, "Delete this index…").click().run()
    assert any("Delete the index **old** and its 0 pages?" in w for w in texts(at.warning))
    delete_button(at, "Cancel").click().run()
    assert (data_root / "indexes" / "old").is_dir() and not any("Delete the index" in w for w in texts(at.warning))

    at.checkbox(key="library_delete_uploads").check().run()
    delete_button(at, "Delete this index…").click().run()
    delete_button(at, "Yes, delete old").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert not (data_root / "indexes" / "old").exists() and not uploads.exists()
    assert any("Deleted the index old (0 pages and 1 uploaded files)" in unescape_md(s) for s in texts(at.success))
    assert list(at.dataframe[0].value["name"]) == ["sample"]


def test_deleting_the_active_index_falls_back_and_a_new_one_of_that_name_starts_empty(data_root):
    at = app("pages/library.py")
    assert at.query_params["index"] == "sample"
    delete_button(at, "Delete this index…").click().run()
    delete_button(at, "Yes, delete sample").click().run()
    assert not at.exception
    assert "No index yet." in " ".join(texts(at.info)) and not (data_root / "indexes" / "sample").exists()


def test_an_index_being_written_cannot_be_deleted(data_root):
    import threading

    from pages import jobs

    gate = threading.Event()
    folder = data_root / "indexes" / "sample"
    at = app("pages/library.py")
    assert not delete_button(at, "Delete this index…").disabled
    jobs.start_job(str(folder), "Indexing into sample", lambda progress: gate.wait(30))
    try:
        at.run()
        assert delete_button(at, "Delete this index…").disabled
        assert any("being added to this index" in c for c in texts(at.caption))
    finally:
        gate.set()


def test_the_active_index_is_kept_in_the_url_and_checked(data_root):
    from search_engine.index import DocumentIndex

    DocumentIndex.open(data_root / "indexes" / "empty")
    at = app("pages/library.py")
    at.selectbox(key="library_active").set_value("empty").run()
    assert at.query_params["index"] == "empty"
    # a reload is a new session with the same URL: the index is still "empty"
    reloaded = AppTest.from_file(str(APP), default_timeout=240)
    reloaded.query_params["index"] = "empty"
    reloaded.run()
    reloaded.switch_page("pages/library.py").run()
    assert reloaded.session_state["active_index"] == "empty" and reloaded.selectbox(key="library_active").value == "empty"
    # a name that is no index is said, and replaced by one that is
    wrong = AppTest.from_file(str(APP), default_timeout=240)
    wrong.query_params["index"] = "../../etc"
    wrong.run()
    assert any("There is no index named ../../etc; showing sample instead." == unescape_md(w) for w in texts(wrong.warning))
    assert wrong.query_params["index"] == "sample"


def test_a_bad_index_name_is_refused(data_root):
    at = new_index(app("pages/library.py"), "../escape")
    assert any("An index name is" in e for e in texts(at.error))
    assert next(b for b in at.button if b.label == "Index this path").disabled
    at.text_input(key="library_new_name").input("sample").run()
    assert any("exists already" in unescape_md(e) for e in texts(at.error))
