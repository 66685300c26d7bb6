"""Keeping an index in sync: incremental re-ingest, removal, a killed ingest, outdated indexes, two writers."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search_engine import DocumentIndex, IndexConfig
from search_engine.ingest import EMBED_BATCH
from search_engine.embedders import load_embedder
from support.search_helpers import make_pdf

ROOT = Path(__file__).resolve().parents[2]
CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

# A child process that ingests a folder, optionally SIGKILLing itself after `kill_at` pages.
CHILD = """
import os, signal, sys, json
from search_engine import DocumentIndex
index_dir, folder, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
index = DocumentIndex.open(index_dir)
def progress(done, total, message):
    if done == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
report = index.ingest([folder], progress=progress)
print(json.dumps({"added": report.added, "unchanged": report.unchanged_files}))
"""


def run_child(index_dir: Path, folder: Path, kill_at: int = -1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(index_dir), str(folder), str(kill_at)],
                            cwd=ROOT, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def pdfs(folder: Path, names: list[str], pages: int = 3, tag: str = "") -> None:
    folder.mkdir(exist_ok=True)
    for name in names:
        make_pdf(folder / f"{name}.pdf", [f"{name} {tag} page {i} about topic {name}{i} and more" for i in range(1, pages + 1)])


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("minilm")


def test_reingest_touches_only_changed_files_and_drops_deleted_ones(tmp_path, embedder):
    docs = tmp_path / "docs"
    pdfs(docs, ["alpha", "beta", "gamma"], pages=2)
    index = DocumentIndex.open(tmp_path / "index", embedder=embedder)
    assert len(index.ingest([docs]).added) == 6

    seen = []
    nothing = index.ingest([docs], progress=lambda done, total, msg: seen.append(msg))
    assert (nothing.added, nothing.removed, nothing.unchanged_files, seen) == ([], [], 3, [])

    pdfs(docs, ["beta"], pages=3, tag="revised")  # changed content, one more page
    (docs / "gamma.pdf").unlink()  # deleted
    pdfs(docs, ["delta"], pages=1)  # new
    os.utime(docs / "alpha.pdf", ns=(time.time_ns(), time.time_ns()))  # touched, same bytes
    report = index.ingest([docs], progress=lambda done, total, msg: seen.append((done, total, msg)))
    assert sorted(report.added) == ["beta_1", "beta_2", "beta_3", "delta_1"]
    assert sorted(report.removed) == ["beta_1", "beta_2", "gamma_1", "gamma_2"]
    assert report.unchanged_files == 1  # alpha: hashed, found identical, not re-read
    assert [(d, t) for d, t, _ in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]  # only the 4 new pages
    assert sorted(p.page_id for p in index.pages()) == ["alpha_1", "alpha_2", "beta_1", "beta_2", "beta_3", "delta_1"]
    assert "revised" in index.page("beta_3").text
    assert index.search("revised beta page 3", 1)[0].page_id == "beta_3"
    assert sorted(p.name for p in (tmp_path / "index" / "images").iterdir()) == sorted(
        f"{p.page_id}.jpg" for p in index.pages())

    # a fresh process sees the same state
    reopened = DocumentIndex.open(tmp_path / "index", embedder=embedder)
    assert sorted(p.page_id for p in reopened.pages()) == sorted(p.page_id for p in index.pages())
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert sorted(Path(s).name for s in manifest["sources"]) == ["alpha.pdf", "beta.pdf", "delta.pdf"]


def test_ingest_only_drops_what_is_gone_under_the_given_paths(tmp_path, embedder):
    pdfs(tmp_path / "one", ["first"], pages=1)
    pdfs(tmp_path / "two", ["second"], pages=1)
    index = DocumentIndex.open(tmp_path / "index", embedder=embedder)
    index.ingest([tmp_path / "one", tmp_path / "two"])
    assert index.ingest([tmp_path / "one"]).removed == []  # two/ was not named: left alone
    assert len(index) == 2
    (tmp_path / "two" / "second.pdf").unlink()
    assert index.add([tmp_path / "two"]).removed == []  # add never drops
    assert index.ingest([tmp_path / "two"]).removed == ["second_1"]


def test_remove_by_page_id_source_and_folder(tmp_path, embedder):
    pdfs(tmp_path / "docs", ["keep", "drop"], pages=2)
    pdfs(tmp_path / "docs" / "sub", ["nested"], pages=1)
    index = DocumentIndex.open(tmp_path / "index", embedder=embedder)
    index.ingest([tmp_path / "docs"])
    assert index.remove(["keep_2"]) == ["keep_2"]
    assert index.remove([str(tmp_path / "docs" / "drop.pdf")]) == ["drop_1", "drop_2"]
    assert index.remove([tmp_path / "docs" / "sub"]) == ["nested_1"]
    assert index.remove(["no-such-page"]) == []
    assert [p.page_id for p in index.pages()] == ["keep_1"]
    assert [h.page_id for h in index.search("topic", 5)] == ["keep_1"]
    # a removed page of an unchanged file stays removed, also after reopening
    assert index.ingest([tmp_path / "docs" / "keep.pdf"]).added == []
    assert [p.page_id for p in DocumentIndex.open(tmp_path / "index", embedder=embedder).pages()] == ["keep_1"]


def test_a_killed_ingest_leaves_a_loadable_index_and_the_next_run_resumes(tmp_path, embedder):
    docs, index_dir = tmp_path / "docs", tmp_path / "index"
    pdfs(docs, ["d1", "d2", "d3", "d4"], pages=12)
    # Read pages are committed once EMBED_BATCH (32) wait, or after a few seconds: when d4's 4th page
    # is read, at least d1, d2 and 8 pages of d3 are on disk, and d4 is not.
    child = run_child(index_dir, docs, kill_at=40)
    child.wait(timeout=600)
    assert child.returncode == -9, child.stderr.read()

    index = DocumentIndex.open(index_dir, embedder=embedder)
    order = [f"d{d}_{p}" for d in range(1, 5) for p in range(1, 13)]
    kept = [pid for pid in order if pid in {p.page_id for p in index.pages()}]
    assert kept == order[: len(kept)] and 40 - EMBED_BATCH <= len(kept) < 40  # a prefix, at most one chunk lost
    assert index.search("topic d13", 1)[0].page_id == "d1_3"  # dense + lexical rebuilt from the records
    seen = []
    report = index.ingest([docs], progress=lambda done, total, msg: seen.append(msg))
    assert sorted(report.added) == sorted(order[len(kept):])  # resumed inside d3 where the commit stopped
    assert len(seen) == 48 - len(kept)
    assert len(index) == 48 and len(list((index_dir / "images").iterdir())) == 48  # half-written images gone

    # killed again while re-reading a changed file: its old pages are gone, nothing is half-there
    pdfs(docs, ["d2"], pages=3, tag="v2")
    child = run_child(index_dir, docs, kill_at=2)
    child.wait(timeout=600)
    assert child.returncode == -9
    index = DocumentIndex.open(index_dir, embedder=embedder)
    assert len(index) == 36 and not any(p.page_id.startswith("d2_") for p in index.pages())  # d2: 12 -> 3 pages
    assert {h.page_id for h in index.search("topic d22", 10)}.isdisjoint({"d2_1", "d2_2", "d2_3"})
    report = index.ingest([docs])
    assert sorted(report.added) == ["d2_1", "d2_2", "d2_3"] and "v2" in index.page("d2_2").text
    assert index.search("topic d22 v2", 1)[0].page_id == "d2_2"


def test_a_kill_inside_a_long_pdf_loses_at_most_one_chunk(tmp_path, embedder):
    docs, index_dir = tmp_path / "docs", tmp_path / "index"
    pdfs(docs, ["long"], pages=150)
    child = run_child(index_dir, docs, kill_at=100)  # SIGKILL at page 100 of 150
    child.wait(timeout=600)
    assert child.returncode == -9, child.stderr.read()

    index = DocumentIndex.open(index_dir, embedder=embedder)  # loadable right after the kill
    committed = sorted(int(p.page_id.split("_")[1]) for p in index.pages())
    assert committed == list(range(1, len(committed) + 1))  # pages 1..k, no gap
    assert 100 - EMBED_BATCH <= len(committed) < 100, len(committed)
    assert index.search(f"topic long{len(committed)}", 1)[0].page_id == f"long_{len(committed)}"

    seen = []
    report = index.ingest([docs], progress=lambda done, total, msg: seen.append(msg))
    redone = 100 - len(committed)
    assert redone <= EMBED_BATCH  # at most one chunk of the pages read before the kill is read again
    assert seen[0] == f"long.pdf page {len(committed) + 1}/150" and len(seen) == 150 - len(committed)
    assert sorted(report.added, key=lambda p: int(p.split("_")[1])) == [f"long_{i}" for i in range(len(committed) + 1, 151)]
    assert report.removed == [] and report.unchanged_files == 0
    assert len(index) == 150 and index.search("topic long137", 1)[0].page_id == "long_137"
    assert json.loads((index_dir / "manifest.json").read_text())["sources"][str(docs / "long.pdf")]["complete"] is True
    again = DocumentIndex.open(index_dir, embedder=embedder).ingest([docs])
    assert (again.added, again.unchanged_files) == ([], 1)


def test_two_processes_ingesting_at_once_take_turns(tmp_path):
    docs, index_dir = tmp_path / "docs", tmp_path / "index"
    pdfs(docs, ["p1", "p2", "p3"], pages=2)
    children = [run_child(index_dir, docs) for _ in range(2)]
    outputs = [json.loads(c.communicate(timeout=600)[0]) for c in children]
    assert sorted(len(o["added"]) for o in outputs) == [0, 6]  # the second found the first's work
    index = DocumentIndex.open(index_dir)
    assert len(index) == 6 and len(list((index_dir / "images").iterdir())) == 6


def test_an_outdated_index_is_rebuilt_not_misread(tmp_path, embedder, caplog):
    pdfs(tmp_path / "docs", ["old"], pages=2)
    DocumentIndex.open(tmp_path / "index", embedder=embedder).ingest([tmp_path / "docs"])
    config_path = tmp_path / "index" / "config.json"
    config = json.loads(config_path.read_text())
    config["format_version"] = 0
    config_path.write_text(json.dumps(config))

    with caplog.at_level(logging.WARNING, logger="search_engine"):
        index = DocumentIndex.open(tmp_path / "index", embedder=embedder)
    assert "rebuilding" in caplog.text
    assert json.loads(config_path.read_text())["format_version"] == IndexConfig().format_version
    assert sorted(p.page_id for p in index.pages()) == ["old_1", "old_2"]

    caplog.clear()  # asking for another DPI also rebuilds: pages are re-rendered
    with caplog.at_level(logging.WARNING, logger="search_engine"):
        index = DocumentIndex.open(tmp_path / "index", embedder=embedder, config=IndexConfig(dpi=72))
    assert "rebuilding" in caplog.text
    assert index.page("old_1").width == 612 and index.page_image("old_1").size == (612, 792)

    caplog.clear()  # a search-time setting only is not a rebuild
    with caplog.at_level(logging.WARNING, logger="search_engine"):
        index = DocumentIndex.open(tmp_path / "index", embedder=embedder, config=IndexConfig(dpi=72, candidates=7))
    assert "rebuilding" not in caplog.text and len(index) == 2 and index.config.candidates == 7


def test_images_a_killed_ingest_left_are_deleted_by_the_next_change_and_only_then(tmp_path, embedder, monkeypatch):
    """A kill leaves page images written for pages never committed; the next change of the index
    (here an ingest after the file was deleted, so nothing rewrites them) deletes them. A change
    after one that finished does not list the images folder at all (store.IndexStore.begin_changes)."""
    from search_engine.store import CHANGES_MARKER, IndexStore

    docs, index_dir = tmp_path / "docs", tmp_path / "index"
    pdfs(docs, ["d1", "d2", "d3", "d4"], pages=12)
    child = run_child(index_dir, docs, kill_at=40)  # d4's first pages are read, not committed
    child.wait(timeout=600)
    assert child.returncode == -9, child.stderr.read()
    assert (index_dir / CHANGES_MARKER).exists()
    assert any(p.name.startswith("d4_") for p in (index_dir / "images").iterdir())  # written, never committed
    (docs / "d4.pdf").unlink()

    listings = []
    original = IndexStore.remove_orphan_images
    monkeypatch.setattr(IndexStore, "remove_orphan_images", lambda self, is_page: listings.append(1) or original(self, is_page))
    index = DocumentIndex.open(index_dir, embedder=embedder)
    index.ingest([docs])
    assert listings == [1] and not (index_dir / CHANGES_MARKER).exists()
    assert len(index) == 36
    assert sorted(p.stem for p in (index_dir / "images").iterdir()) == sorted(p.page_id for p in index.pages())

    pdfs(docs, ["d5"], pages=2)
    assert index.add([docs / "d5.pdf"]).added == ["d5_1", "d5_2"]
    index.remove(["d5_1"])
    assert listings == [1]  # the last change finished: nothing to look for
    assert not (index_dir / CHANGES_MARKER).exists()


def test_the_page_count_kept_with_the_records_follows_every_change(tmp_path, embedder):
    """store.count reads a counter changed in the same transactions as the pages (count(*) reads every
    row: 15 s at a million pages, cold); records written before the counter get it counted once."""
    import sqlite3

    from search_engine.store import PAGE_COUNT

    def counted() -> int:
        with sqlite3.connect(tmp_path / "index" / "records.db") as db:
            return db.execute("SELECT count(*) FROM pages").fetchone()[0]

    pdfs(tmp_path / "docs", ["one", "two", "three"], pages=2)
    index = DocumentIndex.open(tmp_path / "index", embedder=embedder)
    index.ingest([tmp_path / "docs"])
    assert len(index) == counted() == 6
    index.remove(["one_1"])
    index.remove([str(tmp_path / "docs" / "two.pdf")])
    assert len(index) == counted() == 3
    pdfs(tmp_path / "docs", ["three"], pages=3, tag="longer")  # replaces 2 pages with 3; two.pdf comes back
    index.ingest([tmp_path / "docs"])
    assert len(index) == counted() == 6

    with sqlite3.connect(tmp_path / "index" / "records.db") as db:  # as an index from before the counter
        db.execute("DELETE FROM meta WHERE key = ?", (PAGE_COUNT,))
    reopened = DocumentIndex.open(tmp_path / "index", embedder=embedder)
    assert len(reopened) == 6  # counted without the counter
    reopened.remove(["three_1"])
    assert len(reopened) == counted() == 5
    with sqlite3.connect(tmp_path / "index" / "records.db") as db:
        assert db.execute("SELECT value FROM meta WHERE key = ?", (PAGE_COUNT,)).fetchone() == ("5",)
    assert len(DocumentIndex.open(tmp_path / "index", embedder=embedder)) == 5


def test_a_removed_pages_vid_is_never_handed_out_again(tmp_path, embedder):
    """The derived indexes name pages by vid (tombstones, the change log), so a new page must not get
    the vid of a removed one: not while the log holds the removal, nor after the log is forgotten."""
    import sqlite3

    def vids() -> dict[str, int]:
        with sqlite3.connect(tmp_path / "index" / "records.db") as db:
            return dict(db.execute("SELECT page_id, vid FROM pages"))

    pdfs(tmp_path / "docs", ["first"], pages=2)
    index = DocumentIndex.open(tmp_path / "index", embedder=embedder)
    index.ingest([tmp_path / "docs"])
    last = max(vids().values())
    index.remove(["first_2"])  # the page with the largest vid: the log's last row is its removal
    pdfs(tmp_path / "docs", ["second"], pages=1)
    index.add([tmp_path / "docs" / "second.pdf"])
    assert vids()["second_1"] > last
    last = vids()["second_1"]
    index.remove(["second_1"])
    store = index._backend.store
    store.forget_changes(store.last_seq())  # every logged row gone: meta next_vid remembers
    pdfs(tmp_path / "docs", ["third"], pages=1)
    DocumentIndex.open(tmp_path / "index", embedder=embedder).add([tmp_path / "docs" / "third.pdf"])
    assert vids()["third_1"] > last


def test_fused_search_with_bm25_in_a_second_thread_is_the_serial_fusion(tmp_path, embedder):
    """DocumentIndex.search runs BM25 in a worker thread beside the query embedding: the hits are the
    fusion of the two rankings computed one after the other, also with eight searches at once."""
    from concurrent.futures import ThreadPoolExecutor

    from search_engine.fusion import fuse

    pdfs(tmp_path / "docs", ["harbour", "bridge", "tunnel", "canal"], pages=3)
    index = DocumentIndex.open(tmp_path / "index", embedder=embedder)
    index.ingest([tmp_path / "docs"])
    backend = index._backend
    queries = [f"topic {name}{i} page" for name in ("harbour", "bridge", "tunnel", "canal") for i in (1, 2, 3)]

    def serial(query: str) -> list[tuple[str, float]]:
        k = max(5, index.config.candidates)
        rankings = {"dense": backend.dense_search(embedder.encode_query(query), k), "lexical": backend.lexical_search(query, k)}
        scores, vids = fuse(rankings, index.config.fusion, 15)
        ids = backend.hit_meta(vids.tolist())
        return [(ids[int(v)].page_id, round(float(s), 5)) for s, v in zip(scores[:5], vids[:5])]

    def threaded(query: str) -> list[tuple[str, float]]:
        return [(h.page_id, round(h.score, 5)) for h in index.search(query, top_k=5)]

    expected = [serial(q) for q in queries]
    assert [threaded(q) for q in queries] == expected
    assert expected[0][0][0] == "harbour_1"
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(threaded, queries * 3)) == expected * 3
    index.close()
