"""The HTTP API, over real HTTP: a real uvicorn server on 127.0.0.1 serving a real index.

The index holds the generated sample report (4 pages, the last one OCR'd) and a 12-page filler PDF
with a space and a non-ASCII letter in its name, so that the reference "top 10" is really cut at 10
and page ids need URL quoting.
"""
from __future__ import annotations

import http.client
import json
from pathlib import Path
from urllib.parse import quote

import httpx
import pymupdf
import pytest
import requests
from PIL import Image

from search_engine.index import DocumentIndex
from search_engine.query import MAX_QUERY_CHARS, MAX_TOP_K
from search_engine.sample_corpus import REPORT_STEM, write_sample_corpus
from search_engine.server import MAX_QUERIES, create_app, uvicorn_config
from support.served import serving

FILLER_TOPICS = [
    "Beekeeping: a hive of 40,000 bees makes about 25 kg of honey each summer.",
    "Lighthouses: the Fastnet lighthouse stands 54 metres above the sea.",
    "Glaciers: the Aletsch glacier is 23 kilometres long.",
    "Volcanoes: Mauna Loa last erupted in November 2022.",
    "Orchards: a mature apple tree yields 400 apples a season.",
    "Railways: the Gotthard base tunnel is 57 kilometres long.",
    "Coffee: arabica plants grow best between 1,000 and 2,000 metres.",
    "Sailing: a clipper ship could cover 400 nautical miles a day.",
    "Chess: a knight's tour visits all 64 squares exactly once.",
    "Tides: the Bay of Fundy has tides of up to 16 metres.",
    "Bridges: the Akashi Kaikyo bridge has a central span of 1,991 metres.",
    "Owls: a barn owl can hear a mouse under 30 cm of snow.",
]
FILLER_NAME = "field notes ü.pdf"  # a space and a non-ASCII letter, on purpose


def write_filler_pdf(path: Path) -> Path:
    doc = pymupdf.open()
    for i, sentence in enumerate(FILLER_TOPICS, start=1):
        page = doc.new_page()
        page.insert_text((72, 90), f"Field note {i}", fontsize=22)
        page.insert_textbox(pymupdf.Rect(72, 120, 520, 300), sentence, fontsize=14)
    doc.save(path)
    doc.close()
    return path


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> DocumentIndex:
    data = tmp_path_factory.mktemp("server-data")
    sources = write_sample_corpus(data / "samples") + [write_filler_pdf(data / FILLER_NAME)]
    index = DocumentIndex.open(data / "index")
    report = index.ingest(sources)
    assert not report.skipped and len(index) == 16, report
    return index


@pytest.fixture(scope="module")
def base_url(index):
    with serving(create_app(index)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=60) as c:
        yield c


def page_id_of(image_file: str) -> str:
    return Path(image_file).stem


# ---- the reference API ---------------------------------------------------------------------------
def test_get_search_has_the_reference_shape(client, index):
    r = client.get("/search", params={"queries": ["When did the Kestrel Ridge treatment plant open?", "Hillcrest district water"]})
    assert r.status_code == 200
    results = r.json()
    assert isinstance(results, list) and len(results) == 2
    for hits in results:
        assert len(hits) == 10  # 16 pages indexed: the reference cut is 10
        assert [h["idx"] for h in hits] == list(range(10))
        assert all(set(h) == {"idx", "image_file"} for h in hits)
        for h in hits:
            path = Path(h["image_file"])
            assert path.is_absolute() and path.is_file() and path.is_relative_to(index.folder)
    assert page_id_of(results[0][0]["image_file"]) == f"{REPORT_STEM}_1"
    assert page_id_of(results[1][0]["image_file"]) == f"{REPORT_STEM}_2"


def test_the_reference_client_works_unchanged(base_url):
    """What the reference VRAG agent does with a search action: requests.get(url, params={"queries": [q]}),
    take result[0]'s image_file list in order, and open the first image with PIL."""
    search_url = base_url + "/search"
    response = requests.get(search_url, params={"queries": ["board approved water tariff 2026"]})
    results = response.json()
    image_paths = [item["image_file"] for item in results[0]]
    assert page_id_of(image_paths[0]) == f"{REPORT_STEM}_4"  # the scanned memo, found through OCR
    with Image.open(image_paths[0]) as image:
        assert image.size == (1190, 1684)  # A4 at 144 dpi


def test_post_vrag_ret_gives_the_reference_shape(client):
    r = client.post("/search", json={"queries": ["Kestrel Ridge", "tunnel length"], "top_k": 3, "vrag_ret": True})
    assert r.status_code == 200
    results = r.json()
    assert [len(hits) for hits in results] == [3, 3]
    assert all(set(h) == {"idx", "image_file"} for hits in results for h in hits)
    assert page_id_of(results[1][0]["image_file"]) == "field notes ü_6"  # the Gotthard tunnel note


def test_post_without_content_type_is_read_as_json_like_the_reference(base_url):
    # The reference server calls `await request.json()` whatever the Content-Type says.
    r = httpx.post(base_url + "/search", content=json.dumps({"queries": ["Kestrel"], "top_k": 2}),
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and len(r.json()["results"][0]["hits"]) == 2


# ---- the rich API ------------------------------------------------------------------------------------
def test_post_rich_results(client, index):
    r = client.post("/search", json={"queries": ["capital spending by project", "barn owl hearing"], "top_k": 5})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [res["query"] for res in results] == ["capital spending by project", "barn owl hearing"]
    for res in results:
        hits = res["hits"]
        assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)
        for h in hits:
            page = index.page(h["page_id"])
            assert h["image_file"] == page.image_file and h["source"] == page.source and h["page"] == page.page
            assert set(h["scores"]) <= {"dense", "lexical"} and h["scores"]
            assert h["image_url"] == f"/pages/{quote(h['page_id'], safe='')}/image"
    assert results[0]["hits"][0]["page_id"] == f"{REPORT_STEM}_3"
    assert results[1]["hits"][0]["page_id"] == "field notes ü_12"


def test_post_defaults_to_the_reference_top_3_and_takes_one_string(client):
    r = client.post("/search", json={"queries": "glacier length"})
    hits = r.json()["results"][0]["hits"]
    assert len(hits) == 3 and hits[0]["page_id"] == "field notes ü_3"


@pytest.mark.parametrize("mode", ["dense", "lexical"])
def test_post_single_retriever_modes(client, mode):
    r = client.post("/search", json={"queries": ["Gotthard base tunnel"], "top_k": 2, "mode": mode})
    hits = r.json()["results"][0]["hits"]
    assert hits[0]["page_id"] == "field notes ü_6"
    assert set(hits[0]["scores"]) == {mode}


def test_image_endpoint_serves_the_stored_bytes(client, index):
    for page in (index.page(f"{REPORT_STEM}_3"), index.page("field notes ü_1")):
        hit = client.post("/search", json={"queries": [page.text[:200]], "top_k": 1}).json()["results"][0]["hits"][0]
        assert hit["page_id"] == page.page_id
        r = client.get(hit["image_url"])
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/jpeg"
        assert r.content == Path(page.image_file).read_bytes()


def test_page_record_has_text_and_boxes(client, index):
    r = client.get(f"/pages/{REPORT_STEM}_4")
    assert r.status_code == 200
    record = r.json()
    assert record["text_source"] == "ocr"  # the image-only memo
    assert "2.15" in record["text"] and record["width"] == 1190
    assert record["boxes"] and all(len(b["box"]) == 4 and b["text"] for b in record["boxes"])
    for b in record["boxes"]:
        x1, y1, x2, y2 = b["box"]
        assert 0 <= x1 < x2 <= record["width"] and 0 <= y1 < y2 <= record["height"]
    assert client.get(f"/pages/{REPORT_STEM}_1").json()["text_source"] == "pdf"


def test_health(client, index):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["pages"] == len(index) == 16
    assert body["embedder"] == "minilm" and body["version"] and body["index"] == index.folder.name == "index"
    assert str(index.folder.parent) not in r.text  # the name of the index, never its path on the server


def test_default_bind_is_this_machine_only(index):
    assert uvicorn_config(create_app(index)).host == "127.0.0.1"


# ---- never a file outside the index folder -----------------------------------------------------------
def raw_get(base_url: str, path: str) -> tuple[int, bytes]:
    """http.client sends the path byte for byte (httpx and requests would normalise `..` away)."""
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path",
    [
        "/pages/../../../../etc/passwd/image",
        "/pages/..%2F..%2F..%2F..%2Fetc%2Fpasswd/image",
        "/pages/%2E%2E%2F%2E%2E%2Fsecret.txt/image",
        "/pages/%2Fetc%2Fpasswd/image",
        "/pages//etc/passwd/image",
        "/pages/..%5C..%5Csecret.txt/image",
        "/pages/..%252F..%252Fsecret.txt/image",
        "/pages/../../secret.txt",
        "/pages/%2E%2E/image",
        "/pages/../images",
        "/../../etc/passwd",
    ],
)
def test_path_traversal_is_refused(base_url, index, path):
    secret = index.folder.parent / "secret.txt"
    secret.write_text("TOP SECRET")
    status, body = raw_get(base_url, path)
    assert status in (400, 404), (path, status)
    assert b"TOP SECRET" not in body and b"root:" not in body
    assert "error" in json.loads(body)


def test_a_stored_image_that_links_outside_the_folder_is_not_served(client, index):
    """Even if the index folder itself is tampered with, the server resolves links and refuses."""
    page = index.page("field notes ü_2")
    stored = Path(page.image_file)
    outside = index.folder.parent / "outside.jpg"
    original = stored.read_bytes()
    outside.write_bytes(b"NOT FOR YOU")
    stored.unlink()
    stored.symlink_to(outside)
    try:
        r = client.get(f"/pages/{quote(page.page_id, safe='')}/image")
        assert r.status_code == 404 and b"NOT FOR YOU" not in r.content
        assert "no image" in r.json()["error"]
    finally:
        stored.unlink()
        stored.write_bytes(original)
    assert client.get(f"/pages/{quote(page.page_id, safe='')}/image").content == original


# ---- bad input: a clear 4xx, never a traceback ----------------------------------------------------------
LONG = "water " * (100_000 // 6)  # ~100 kB


@pytest.mark.parametrize(
    "method, url, payload, status, words",
    [
        ("GET", "/search", None, 422, "queries: Field required"),
        ("GET", "/search?queries=", None, 400, "query is empty"),
        ("GET", "/search?queries=%20%20%09", None, 400, "query is empty"),
        ("GET", "/search?queries=" + quote(LONG), None, 400, f"maximum is {MAX_QUERY_CHARS:,}"),
        ("GET", "/search?queries=water&top_k=0", None, 400, f"between 1 and {MAX_TOP_K}"),
        ("GET", "/search?queries=water&top_k=10000", None, 400, "got 10000"),
        ("GET", "/search?queries=water&top_k=ten", None, 422, "top_k: Input should be a valid integer"),
        ("POST", "/search", {"queries": [""]}, 400, "query is empty"),
        ("POST", "/search", {"queries": [LONG]}, 400, "99,995 characters long"),
        ("POST", "/search", {"queries": ["ok", LONG]}, 400, "maximum is"),
        ("POST", "/search", {"queries": ["water"], "top_k": 0}, 400, "top_k must be between"),
        ("POST", "/search", {"queries": ["water"], "top_k": 10_000}, 400, "got 10000"),
        ("POST", "/search", {"queries": ["water"], "top_k": "lots"}, 422, "top_k"),
        ("POST", "/search", {"queries": ["water"], "top_k": True}, 422, "top_k: Input should be a valid integer"),
        ("POST", "/search", {"queries": ["water"], "top_k": "3"}, 422, "top_k: Input should be a valid integer"),
        ("POST", "/search", {"queries": ["water"], "top_k": 2.0}, 422, "top_k: Input should be a valid integer"),
        ("POST", "/search", {"queries": []}, 400, "at least one query"),
        ("POST", "/search", {"queries": ["w"] * (MAX_QUERIES + 1)}, 400, f"at most {MAX_QUERIES} queries"),
        ("POST", "/search", {"top_k": 3}, 422, "queries: Field required"),
        ("POST", "/search", {"queries": [1, 2]}, 422, "queries"),
        ("POST", "/search", {"queries": ["water"], "mode": "magic"}, 422, "mode"),
        ("POST", "/search", "{not json", 422, "Invalid JSON"),
        ("POST", "/search", "", 422, "Invalid JSON"),
        ("POST", "/search", "[1, 2]", 422, "Input should be an object"),
        ("GET", "/pages/no-such-page", None, 404, "no page 'no-such-page'"),
        ("GET", "/pages/no-such-page/image", None, 404, "no page 'no-such-page'"),
        ("GET", "/nowhere", None, 404, "no endpoint GET /nowhere"),
        ("DELETE", "/search", None, 405, "DELETE is not allowed"),
    ],
)
def test_bad_requests_get_a_clear_json_error(base_url, method, url, payload, status, words):
    # requests, not httpx: httpx refuses URLs over 64 kB on the client side, before the server sees them.
    if isinstance(payload, str):
        r = requests.request(method, base_url + url, data=payload.encode(), headers={"content-type": "application/json"})
    else:
        r = requests.request(method, base_url + url, json=payload)
    assert r.status_code == status, r.text[:300]
    assert r.headers["content-type"] == "application/json"
    message = r.json()["error"]
    assert words in message, message
    assert "Traceback" not in r.text and len(message) < 300
