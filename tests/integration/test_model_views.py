"""Model views (search_engine/model_views.py): the exact protocol JPEG of every page, made once and kept.

Checked against an independent rewrite of the reference client's image handling (test_agent_http's
`ref_process`) on every real page of the demo corpus; then the cache's rules: a new sizing reads new
views, a damaged, missing or stale view is made again (never sent), ingest makes them and removal
deletes them, and the search server serves them byte for byte."""
from __future__ import annotations

import json
import os
import shutil

import httpx
import pytest
from PIL import Image

import PIL
from agent import protocol
from agent.search import HttpSearcher, LocalSearcher, SearchError
from support.agent_index import write_report_pdf
from search_engine import DocumentIndex
from search_engine.model_views import FOLDER, ModelView, ModelViews, Sizing, make_view
from search_engine.server import create_app
from support.served import serving
from support.reference_client import ref_process

DEMO_PAGES = 25


def demo_pages(demo_corpus):
    pages = sorted(demo_corpus.glob("*.jpg"))
    assert len(pages) == DEMO_PAGES
    return pages


def test_the_view_of_every_demo_page_is_the_reference_bytes(demo_corpus, tmp_path):
    views = ModelViews(tmp_path)
    sizes = set()
    for path in demo_pages(demo_corpus):
        shown, reference_jpeg = ref_process(Image.open(path))
        view = views.get(path.stem, path)
        assert view.jpeg == reference_jpeg, path.name
        assert view.input_size == shown.size and view.raw_size == Image.open(path).size
        assert views.read(path.stem, path) == view  # kept: the next search turn reads it
        assert protocol.prepare_image(Image.open(path))[1] == reference_jpeg  # the protocol's name for the rule
        sizes.add(view.raw_size)
    assert (5334, 3000) in sizes and (1024, 768) in sizes
    assert len(list(views.folder.glob("*.view"))) == DEMO_PAGES


def test_a_new_sizing_reads_new_views(demo_corpus, tmp_path):
    page = demo_corpus / "slide_1_1024.jpg"
    default, smaller = ModelViews(tmp_path), ModelViews(tmp_path, Sizing(100_000, 200_000))
    a, b = default.get(page.stem, page), smaller.get(page.stem, page)
    assert default.folder != smaller.folder and default.folder.parent == smaller.folder.parent == tmp_path / FOLDER
    assert a.input_size == (731, 548) and b.input_size == protocol.input_size(1024, 768, 100_000, 200_000) != a.input_size
    assert b.jpeg == protocol.prepare_image(Image.open(page), 100_000, 200_000)[1] != a.jpeg
    assert default.read(page.stem, page) == a  # the default's view is untouched
    described = json.loads((smaller.folder / "sizing.json").read_text())
    assert described["key"] == smaller.sizing.key and described["max_pixels"] == 200_000
    assert described["pillow"] == PIL.__version__ and described["libjpeg_turbo"]


def test_the_key_names_the_libraries_that_make_the_bytes(monkeypatch):
    key = Sizing().key
    assert key.startswith("200704-401408-")
    monkeypatch.setattr(PIL, "__version__", "0.0.1")
    assert Sizing().key != key  # an upgraded Pillow may resize or encode differently: new views
    with pytest.raises(ValueError, match="min_pixels <= max_pixels"):
        Sizing(500, 100)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped byte", "empty", "wrong sizes", "other page"])
def test_a_damaged_view_is_made_again_never_sent(demo_corpus, tmp_path, damage):
    page = demo_corpus / "slide_2_1024.jpg"
    views = ModelViews(tmp_path)
    good = views.get(page.stem, page)
    path = views.path(page.stem)
    data = path.read_bytes()
    header, jpeg = data.split(b"\n", 1)
    fields = json.loads(header)
    if damage == "garbage":
        path.write_bytes(b"\xff\xd8 not a view at all")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) - 1000])
    elif damage == "flipped byte":
        path.write_bytes(header + b"\n" + jpeg[:500] + bytes([jpeg[500] ^ 1]) + jpeg[501:])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "wrong sizes":
        path.write_bytes(json.dumps({**fields, "input_size": [10, 10]}).encode() + b"\n" + jpeg)
    else:  # a view copied from another page
        other = demo_corpus / "slide_3_1024.jpg"
        views.get(other.stem, other)
        shutil.copy(views.path(other.stem), path)
    assert views.read(page.stem, page) is None
    again = views.get(page.stem, page)
    assert again == good and again.jpeg == ref_process(Image.open(page))[1]
    assert path.read_bytes() == data  # rewritten whole


def test_a_missing_view_is_made_and_a_changed_page_image_gets_a_new_one(demo_corpus, tmp_path):
    image = tmp_path / "page.jpg"
    shutil.copy(demo_corpus / "slide_4_1024.jpg", image)
    views = ModelViews(tmp_path / "index")
    assert views.read("page", image) is None  # an index older than views: nothing yet
    first = views.get("page", image)
    assert views.path("page").is_file() and first.jpeg == ref_process(Image.open(image))[1]
    # the page is re-ingested under the same id with another image: the old view must not be sent
    shutil.copy(demo_corpus / "aliyun4_2.jpg", tmp_path / "new.jpg")
    os.replace(tmp_path / "new.jpg", image)
    assert views.read("page", image) is None
    second = views.get("page", image)
    assert second.raw_size == (5334, 3000) and second.jpeg == ref_process(Image.open(image))[1]
    image.unlink()
    with pytest.raises(FileNotFoundError):
        views.get("page", image)
    assert not list(views.folder.glob(".*"))  # no temporary file left behind


def test_page_ids_that_are_not_file_names_are_refused(tmp_path):
    views = ModelViews(tmp_path)
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="not a page id"):
            views.path(bad)


def test_make_view_matches_what_a_search_turn_sent_before_views(demo_corpus):
    image = Image.open(demo_corpus / "aliyun4_3.jpg")
    resized, jpeg = protocol.prepare_image(image)
    assert make_view(image) == ModelView(jpeg, resized.size, (5334, 3000))


# --- with an index: made at ingest, deleted with their page, served over HTTP -------------------------

@pytest.fixture(scope="module")
def report_index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("views-index")
    write_report_pdf(folder / "report.pdf")
    index = DocumentIndex.open(folder / "index")
    index.ingest([folder / "report.pdf"])
    yield index
    index.close()


def test_ingest_makes_the_views_so_a_search_turn_decodes_nothing(report_index, monkeypatch):
    views = ModelViews(report_index.folder)
    pages = {p.page_id: p for p in report_index.pages()}
    assert sorted(pages) == ["report_1", "report_2", "report_3"]
    for page_id, page in pages.items():
        assert views.read(page_id, page.image_file).jpeg == ref_process(Image.open(page.image_file))[1]

    def no_decoding(*args, **kwargs):
        raise AssertionError("a search turn decoded a page")

    monkeypatch.setattr(ModelViews, "build", no_decoding)
    monkeypatch.setattr(LocalSearcher, "page_image", no_decoding)
    view = LocalSearcher(report_index).model_view("report_2")
    assert view.raw_size == (pages["report_2"].width, pages["report_2"].height)
    with pytest.raises(SearchError, match="not in the index"):
        LocalSearcher(report_index).model_view("report_9")


def test_removed_pages_lose_their_views(tmp_path):
    write_report_pdf(tmp_path / "report.pdf")
    index = DocumentIndex.open(tmp_path / "index")
    index.ingest([tmp_path / "report.pdf"])
    views = ModelViews(index.folder)
    assert len(list(views.folder.glob("*.view"))) == 3
    (tmp_path / "report.pdf").unlink()
    report = index.ingest([tmp_path])
    assert sorted(report.removed) == ["report_1", "report_2", "report_3"]
    assert not list(views.folder.glob("*.view"))
    index.close()


def test_the_server_serves_the_views_byte_for_byte(report_index):
    local = LocalSearcher(report_index)
    with serving(create_app(report_index)) as url:
        response = httpx.get(f"{url}/pages/report_1/model-view")
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        view = local.model_view("report_1")
        assert response.content == view.jpeg
        assert response.headers["x-input-size"] == "%dx%d" % view.input_size == "532x753"
        assert response.headers["x-raw-size"] == "1190x1684"
        assert response.headers["x-model-view-sizing"] == Sizing().key
        assert HttpSearcher(url).model_view("report_1") == view
        other = httpx.get(f"{url}/pages/report_1/model-view", params={"max_pixels": 1000})
        assert other.status_code == 404 and "max_pixels=401408 only" in other.json()["error"]
        missing = httpx.get(f"{url}/pages/nope/model-view")
        assert missing.status_code == 404 and "no page 'nope'" in missing.json()["error"]
        with pytest.raises(SearchError, match="HTTP 404"):
            HttpSearcher(url).model_view("nope")


def test_the_http_searcher_makes_the_view_itself_when_the_server_cannot(report_index):
    expected = LocalSearcher(report_index).model_view("report_3")
    # a server whose views are made under other bounds than the client's
    other_bounds = ModelViews(report_index.folder, Sizing(100_000, 200_000))
    with serving(create_app(report_index, views=other_bounds)) as url:
        assert HttpSearcher(url).model_view("report_3") == expected
    # a server from before views: no such endpoint; the client stops asking
    app = create_app(report_index)
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", "") != "/pages/{page_id}/model-view"]
    asked = []
    with serving(app) as url:
        client = httpx.Client(event_hooks={"request": [lambda request: asked.append(request.url.path)]})
        searcher = HttpSearcher(url, client=client)
        assert searcher.model_view("report_3") == expected
        assert searcher.model_view("report_3") == expected
    assert asked == ["/pages/report_3/model-view", "/pages/report_3/image", "/pages/report_3/image"]
