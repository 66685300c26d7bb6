"""The DocumentIndex contract, on both backends: the local one (SQLite + tantivy + FAISS) and Milvus,
against a real Milvus Lite server that these tests start on 127.0.0.1 (`python -m milvus_lite server`)
and stop after. Ingest, incremental re-ingest, remove, search modes, a kill and a resume, two
processes writing at once: the agent and the app cannot tell the backends apart.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from search_engine import DocumentIndex, IndexConfig, SearchHit
from search_engine.embedders import load_embedder
from search_engine.ingest import EMBED_BATCH
from support.search_helpers import make_pdf

ROOT = Path(__file__).resolve().parents[2]
CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
CHILD = """
import os, signal, sys, json
from search_engine import DocumentIndex
index_dir, folder, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
index = DocumentIndex.open(index_dir)  # the backend comes from the index's config.json
def progress(done, total, message):
    if done == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
report = index.ingest([folder], progress=progress)
print(json.dumps({"added": report.added, "unchanged": report.unchanged_files}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory):
    """A real Milvus Lite gRPC server on a free 127.0.0.1 port; its URI."""
    data, port = tmp_path_factory.mktemp("milvus-data"), free_port()
    server = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data),
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:
        assert server.poll() is None, server.stderr.read()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "Milvus Lite did not start"
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(params=["local", "milvus"])
def config(request) -> IndexConfig:
    if request.param == "local":
        return IndexConfig()
    uri = request.getfixturevalue("milvus_server")
    return IndexConfig(backend="milvus", milvus_uri=uri, milvus_collection=f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("minilm")


def pdfs(folder: Path, names: list[str], pages: int = 2, tag: str = "") -> None:
    folder.mkdir(exist_ok=True, parents=True)
    for name in names:
        make_pdf(folder / f"{name}.pdf", [f"{name} {tag} page {i} about topic {name}{i} and more" for i in range(1, pages + 1)])


def run_child(index_dir: Path, folder: Path, kill_at: int = -1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(index_dir), str(folder), str(kill_at)],
                            cwd=ROOT, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ingest_and_search_modes(tmp_path, config, embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    make_pdf(docs / "harbour.pdf", ["The harbour wall is 312 metres long and was built in 1871.",
                                    "Dredging removed 48,000 cubic metres of silt from the basin."])
    make_pdf(docs / "aliyun.pdf", ["阿里云数据中心网络 增强型NAT网关 SLA 99.99%"], fontname="china-s")
    index = DocumentIndex.open(tmp_path / "index", embedder=embedder, config=config)
    report = index.ingest([docs])
    assert sorted(report.added) == ["aliyun_1", "harbour_1", "harbour_2"] and not report.skipped
    assert len(index) == 3 and index.config.backend == config.backend
    hits = index.search("how long is the harbour wall", top_k=2)
    assert all(isinstance(h, SearchHit) for h in hits) and [h.rank for h in hits] == [1, 2]
    top = hits[0]
    assert top.page_id == "harbour_1" and top.page == 1 and top.source == str(docs / "harbour.pdf")
    assert Path(top.image_file).is_file() and Path(top.image_file).parent == index.folder / "images"
    assert set(top.scores) == {"dense", "lexical"} and top.score >= hits[1].score
    assert [h.page_id for h in index.search("dredging silt", top_k=3, mode="lexical")] == ["harbour_2"]
    assert set(index.search("dredging silt", top_k=3, mode="dense")[0].scores) == {"dense"}
    assert index.search("增强型NAT网关", top_k=1)[0].page_id == "aliyun_1"  # Chinese through BM25
    page = index.page("harbour_2")
    assert page.text_source == "pdf" and "48,000" in page.text and page.boxes[0].box[2] > page.boxes[0].box[0]
    assert sorted(p.page_id for p in index.pages()) == ["aliyun_1", "harbour_1", "harbour_2"]
    with pytest.raises(KeyError, match="no page 'nope'"):
        index.page("nope")
    manifest = json.loads((index.folder / "manifest.json").read_text())
    assert manifest["sources"][str(docs / "harbour.pdf")]["pages"] == ["harbour_1", "harbour_2"]
    reopened = DocumentIndex.open(tmp_path / "index", embedder=embedder)  # the backend from config.json
    assert reopened.config.backend == config.backend and len(reopened) == 3
    assert reopened.search("harbour wall length", top_k=1)[0].page_id == "harbour_1"


def test_incremental_reingest_and_remove(tmp_path, config, embedder):
    docs = tmp_path / "docs"
    pdfs(docs, ["alpha", "beta", "gamma"])
    pdfs(docs / "sub", ["nested"], pages=1)
    index = DocumentIndex.open(tmp_path / "index", embedder=embedder, config=config)
    assert len(index.ingest([docs]).added) == 7
    pdfs(docs, ["beta"], pages=3, tag="revised")
    (docs / "gamma.pdf").unlink()
    os.utime(docs / "alpha.pdf", ns=(time.time_ns(), time.time_ns()))
    report = index.ingest([docs])
    assert sorted(report.added) == ["beta_1", "beta_2", "beta_3"]
    assert sorted(report.removed) == ["beta_1", "beta_2", "gamma_1", "gamma_2"]
    assert report.unchanged_files == 2  # alpha (touched, same bytes) and nested
    assert index.search("revised beta page 3", top_k=1)[0].page_id == "beta_3"
    assert not {"gamma_1", "gamma_2"} & {h.page_id for h in index.search("gamma topic", top_k=10)}

    assert index.remove(["alpha_2"]) == ["alpha_2"]
    assert index.remove([str(docs / "sub")]) == ["nested_1"]
    assert index.remove(["no-such-page"]) == []
    assert sorted(p.page_id for p in index.pages()) == ["alpha_1", "beta_1", "beta_2", "beta_3"]
    assert "alpha_2" not in {h.page_id for h in index.search("alpha topic alpha2", top_k=10)}
    assert index.ingest([docs / "alpha.pdf"]).added == []  # a removed page of an unchanged file stays removed
    assert sorted(os.listdir(index.folder / "images")) == sorted(f"{p.page_id}.jpg" for p in index.pages())


def test_a_kill_inside_a_long_pdf_then_resume(tmp_path, config, embedder):
    docs, index_dir = tmp_path / "docs", tmp_path / "index"
    pdfs(docs, ["long"], pages=100)
    DocumentIndex.open(index_dir, embedder=embedder, config=config)  # create it with this backend
    child = run_child(index_dir, docs, kill_at=70)
    child.wait(timeout=600)
    assert child.returncode == -9, child.stderr.read()

    index = DocumentIndex.open(index_dir, embedder=embedder)
    committed = sorted(int(p.page_id.split("_")[1]) for p in index.pages())
    assert committed == list(range(1, len(committed) + 1)) and 70 - EMBED_BATCH <= len(committed) < 70
    seen = []
    report = index.ingest([docs], progress=lambda done, total, msg: seen.append(msg))
    assert seen[0] == f"long.pdf page {len(committed) + 1}/100"  # resumed inside the file
    assert len(report.added) == 100 - len(committed) and len(index) == 100
    assert index.search("topic long87", top_k=1)[0].page_id == "long_87"


def test_two_processes_ingesting_at_once_take_turns(tmp_path, config):
    docs, index_dir = tmp_path / "docs", tmp_path / "index"
    pdfs(docs, ["p1", "p2", "p3"])
    DocumentIndex.open(index_dir, config=config)
    children = [run_child(index_dir, docs) for _ in range(2)]
    outputs = [json.loads(c.communicate(timeout=600)[0]) for c in children]
    assert sorted(len(o["added"]) for o in outputs) == [0, 6]  # the second found the first's work
    index = DocumentIndex.open(index_dir)
    assert len(index) == 6 and len(list((index_dir / "images").iterdir())) == 6
    assert sorted(p.page_id for p in index.pages()) == sorted(f"p{d}_{p}" for d in (1, 2, 3) for p in (1, 2))


def test_a_reader_sees_another_process_commit(tmp_path, config, embedder):
    """A search process (the server, the app) sees pages another process ingested, without reopening."""
    docs, index_dir = tmp_path / "docs", tmp_path / "index"
    pdfs(docs, ["first"], pages=1)
    reader = DocumentIndex.open(index_dir, embedder=embedder, config=config)
    reader.ingest([docs])
    pdfs(docs, ["second"], pages=1, tag="lighthouse")
    child = run_child(index_dir, docs)
    assert json.loads(child.communicate(timeout=600)[0])["added"] == ["second_1"]
    assert len(reader) == 2 and reader.search("lighthouse second", top_k=1)[0].page_id == "second_1"


def test_a_milvus_lite_file_is_reopened_by_the_cli(tmp_path):
    """`--milvus-uri FILE.db`: the CLI ingests, and later processes (search, serve) find the collections
    again (Milvus keeps them released after a restart: the backend loads them)."""
    (tmp_path / "docs").mkdir()
    make_pdf(tmp_path / "docs" / "orchard.pdf", ["Apple harvest in the north orchard began in August.",
                                                 "Pear blossom by the river mill came early this spring."])
    index, uri = tmp_path / "index", tmp_path / "milvus.db"
    ingest = subprocess.run([sys.executable, "-m", "search_engine", "ingest", str(tmp_path / "docs"), "--index", str(index),
                             "--backend", "milvus", "--milvus-uri", str(uri)], cwd=ROOT, env=CHILD_ENV,
                            capture_output=True, text=True, timeout=600)
    assert ingest.returncode == 0, ingest.stderr
    assert ingest.stdout.splitlines()[-1].startswith("added 2 pages")
    search = subprocess.run([sys.executable, "-m", "search_engine", "search", "--index", str(index), "--json",
                             "pear blossom by the river"], cwd=ROOT, env=CHILD_ENV, capture_output=True, text=True, timeout=600)
    assert search.returncode == 0, search.stderr
    hits = json.loads(search.stdout)
    assert hits[0]["page_id"] == "orchard_2" and set(hits[0]["scores"]) == {"dense", "lexical"}
    assert json.loads((index / "config.json").read_text())["backend"] == "milvus"
    bad = subprocess.run([sys.executable, "-m", "search_engine", "ingest", str(tmp_path / "docs"), "--index",
                          str(tmp_path / "other"), "--backend", "milvus"], cwd=ROOT, env=CHILD_ENV,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "needs --milvus-uri" in bad.stderr and "Traceback" not in bad.stderr
