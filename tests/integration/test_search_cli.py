"""`python -m search_engine ...` as a user runs it: real subprocesses, real files, exit codes and output."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pymupdf
import pytest

from search_engine.query import MAX_QUERY_CHARS, MAX_TOP_K

ROOT = Path(__file__).resolve().parents[2]
PAGES = {
    "harbour survey.pdf": ["The harbour wall is 312 metres long.", "Dredging removed 48,000 cubic metres of silt."],
    "Überblick 2025.pdf": ["The museum welcomed 71,250 visitors in 2025."],
}


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "search_engine", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def assert_user_error(result: subprocess.CompletedProcess, words: str) -> None:
    """Status 2, no traceback, and the last stderr line is a one-line `error: ...` naming the problem."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(("error:", "usage:")) or "error:" in last, result.stderr
    assert words in last, result.stderr


def write_pdf(path: Path, sentences: list[str]) -> Path:
    doc = pymupdf.open()
    for sentence in sentences:
        page = doc.new_page()
        page.insert_textbox(pymupdf.Rect(72, 72, 520, 300), sentence, fontsize=16)
    doc.save(path)
    doc.close()
    return path


# Files that must be skipped, and a word their skip reason must contain.
BAD_FILES = {"empty.pdf": "empty", "corrupt.pdf": "not a readable pdf", "notes.txt": "unsupported", "locked.pdf": "password"}


def write_bad_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.pdf").write_bytes(b"")
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.7\nthis is not really a pdf\n" * 20)
    (folder / "notes.txt").write_text("not a page")
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret minutes")
    doc.save(folder / "locked.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="u", owner_pw="o")
    doc.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli-corpus")
    for name, sentences in PAGES.items():
        write_pdf(folder / name, sentences)
    write_bad_files(folder / "bad")
    return folder


@pytest.fixture(scope="module")
def ingested(corpus, tmp_path_factory):
    index = tmp_path_factory.mktemp("cli-index") / "idx"
    result = run_cli("ingest", str(corpus), "--index", str(index))
    return index, result


def test_ingest_lists_each_skipped_file_with_its_reason_and_indexes_the_rest(ingested, corpus):
    index, result = ingested
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    for name, word in BAD_FILES.items():
        line = next((l for l in lines if l.startswith(f"skipped {corpus / 'bad' / name}")), None)
        assert line is not None, (name, result.stdout)
        reason = line.split(": ", 1)[1]
        assert reason.strip() and word in reason.lower(), line
    summary = lines[-1]
    assert summary.startswith("added 3 pages, removed 0, 0 files unchanged, 4 files skipped"), summary
    assert summary.endswith("has 3 pages")
    assert "page" in result.stderr  # the tqdm bar


def test_ingest_again_touches_nothing(ingested, corpus):
    index, _ = ingested
    result = run_cli("ingest", str(corpus), "--index", str(index))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("added 0 pages, removed 0, 2 files unchanged, 4 files skipped")


def test_ingest_of_nothing_usable_exits_non_zero(corpus, tmp_path):
    result = run_cli("ingest", str(corpus / "bad"), str(tmp_path / "missing-folder"), "--index", str(tmp_path / "idx"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"skipped {tmp_path / 'missing-folder'}: no such file or folder" in result.stdout
    assert "added 0 pages" in result.stdout and "Traceback" not in result.stderr


def test_search_json(ingested, corpus):
    index, _ = ingested
    result = run_cli("search", "--index", str(index), "--top-k", "2", "--json", "how many visitors did the museum welcome")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert len(hits) == 2
    assert [h["rank"] for h in hits] == [1, 2]
    for h in hits:
        assert {"rank", "score", "page_id", "image_file", "source", "page"} <= set(h)
        assert Path(h["image_file"]).is_file()
    assert hits[0]["page_id"] == "Überblick 2025_1"
    assert hits[0]["source"] == str(corpus / "Überblick 2025.pdf") and hits[0]["page"] == 1
    assert hits[0]["score"] >= hits[1]["score"]


def test_search_table_and_modes(ingested):
    index, _ = ingested
    result = run_cli("search", "--index", str(index), "--mode", "lexical", "dredging", "silt")  # words are joined
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    assert rows[0].split() == ["rank", "score", "page_id", "page", "source"]
    assert len(rows) == 2  # lexical mode: only the page that has the words
    assert rows[1].split()[:4] == ["1", rows[1].split()[1], "harbour", "survey_2"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["", "--top-k", "3"], "the query is empty"),
        (["   "], "the query is empty"),
        (["water", "--top-k", "0"], f"top_k must be between 1 and {MAX_TOP_K}, got 0"),
        (["water", "--top-k", "10000"], "got 10000"),
        (["x" * 100_000], f"the maximum is {MAX_QUERY_CHARS:,}"),
        (["water", "--top-k", "ten"], "invalid int value: 'ten'"),
        (["water", "--mode", "magic"], "invalid choice: 'magic'"),
    ],
)
def test_search_bad_queries_are_one_line_errors(ingested, args, words):
    index, _ = ingested
    assert_user_error(run_cli("search", "--index", str(index), *args), words)


def test_search_or_serve_a_missing_index(tmp_path):
    for command in (["search", "--index", str(tmp_path / "nope"), "water"], ["serve", "--index", str(tmp_path / "nope")]):
        result = run_cli(*command)
        assert_user_error(result, f"no index at {tmp_path / 'nope'}")
        assert not (tmp_path / "nope").exists()  # search and serve never create an index
    (tmp_path / "plain").mkdir()
    assert_user_error(run_cli("search", "--index", str(tmp_path / "plain"), "water"), "no index at")


def test_ingest_bad_arguments(tmp_path, corpus):
    (tmp_path / "file").write_text("x")
    assert_user_error(run_cli("ingest", str(corpus), "--index", str(tmp_path / "file")), "is a file, not a folder")
    assert_user_error(run_cli("ingest", str(corpus), "--index", str(tmp_path / "i"), "--dpi", "5000"), "--dpi must be")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve(ingested):
    index, _ = ingested
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "search_engine", "serve", "--index", str(index), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "serve did not come up"
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.3)
        assert health.json()["pages"] == 3
        results = httpx.get(f"http://127.0.0.1:{port}/search", params={"queries": ["harbour wall length"]}, timeout=60).json()
        assert [r["idx"] for r in results[0]] == [0, 1, 2]
        assert Path(results[0][0]["image_file"]).stem == "harbour survey_1"
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    assert f"on http://127.0.0.1:{port}" in out
    assert "Traceback" not in err


def test_ingest_keeps_the_index_settings_unless_dpi_is_asked(corpus, tmp_path):
    pdf, index = corpus / "harbour survey.pdf", tmp_path / "idx"
    assert run_cli("ingest", str(pdf), "--index", str(index), "--dpi", "72").returncode == 0
    again = run_cli("ingest", str(pdf), "--index", str(index))  # no --dpi: keep 72, touch nothing
    assert again.stdout.splitlines()[-1].startswith("added 0 pages, removed 0, 1 files unchanged")
    changed = run_cli("ingest", str(pdf), "--index", str(index), "--dpi", "144")
    assert changed.returncode == 0, changed.stderr
    assert "--dpi 144 differs from the index's 72: every page will be rendered again" in changed.stdout
    from PIL import Image

    with Image.open(index / "images" / "harbour survey_1.jpg") as image:
        assert image.width == 1190  # A4 at 144 dpi (it was 595 at 72)
