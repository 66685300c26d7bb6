"""Paths ingest cannot read: folders that cannot be listed, files without read permission, links.

Tests run as root, and root reads everything. The ingest under test therefore runs in a real child
process (the real CLI) that gives up the two capabilities that let root ignore file permissions
(CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, dropped from its bounding set before exec), so the kernel
refuses it exactly as it refuses an ordinary user. The capabilities are dropped by a small launcher
that then execs the command, not by a `preexec_fn`: that needs a plain fork of the test process, and
once an earlier test has loaded gRPC (pymilvus) the fork runs gRPC's fork handlers, which aborted the
child now and then.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from search_engine import DocumentIndex
from support.search_helpers import make_pdf

ROOT = Path(__file__).resolve().parents[2]
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2


AS_USER = f"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for cap in ({CAP_DAC_OVERRIDE}, {CAP_DAC_READ_SEARCH}):
    if libc.prctl({PR_CAPBSET_DROP}, cap, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def as_user(*python_args: str) -> list[str]:
    """The command line that runs `python *python_args` without root's permission override."""
    return [sys.executable, "-c", AS_USER, *python_args]


def ingest_as_user(index: Path, *paths: Path) -> tuple[int, dict, str]:
    """`python -m search_engine ingest PATH... --index INDEX --json` in a child that obeys permissions."""
    result = subprocess.run(
        as_user("-m", "search_engine", "ingest", *map(str, paths), "--index", str(index), "--json"),
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


@pytest.fixture
def docs(tmp_path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    make_pdf(docs / "a.pdf", ["alpha page about lighthouses"])
    make_pdf(docs / "sub" / "b.pdf", ["bravo page about glaciers"])
    make_pdf(docs / "sub" / "c.pdf", ["charlie page about orchards"])
    make_pdf(docs / "x.pdf", ["xray page about volcanoes"])
    yield docs
    for path in (docs / "sub", docs / "x.pdf"):
        path.chmod(0o755)


def test_the_check_itself_is_real(docs):
    """The child really is refused (else every test below would pass for the wrong reason)."""
    (docs / "sub").chmod(0)
    listing = subprocess.run(as_user("-c", f"import os; os.listdir({str(docs / 'sub')!r})"), capture_output=True, text=True)
    assert listing.returncode == 1 and "PermissionError" in listing.stderr
    assert os.listdir(docs / "sub")  # this (root) process still reads it


def test_unreadable_folder_and_file_are_reported_and_their_pages_kept(docs, tmp_path):
    index_dir = tmp_path / "index"
    status, first, _ = ingest_as_user(index_dir, docs)
    assert status == 0 and sorted(first["added"]) == ["a_1", "b_1", "c_1", "x_1"] and not first["skipped"]

    (docs / "sub").chmod(0)
    (docs / "x.pdf").chmod(0)
    (docs / "link").symlink_to(tmp_path, target_is_directory=True)
    status, report, _ = ingest_as_user(index_dir, docs)
    assert status == 0, report
    assert report["removed"] == [] and report["index_pages"] == 4  # nothing dropped as if it were gone
    reasons = {Path(s["path"]).name: (s["kind"], s["reason"]) for s in report["skipped"]}
    assert set(reasons) == {"sub", "x.pdf", "link"}, reasons
    assert reasons["sub"][0] == "folder" and reasons["sub"][1].startswith("cannot list the folder: permission denied")
    assert "its 2 indexed files are kept" in reasons["sub"][1]
    assert reasons["x.pdf"][0] == "file" and "permission denied" in reasons["x.pdf"][1]
    assert "indexed pages are kept" in reasons["x.pdf"][1]
    assert reasons["link"][0] == "link" and "not followed" in reasons["link"][1]

    (docs / "sub").chmod(0o755)  # readable again: nothing to redo, the pages were never dropped
    (docs / "x.pdf").chmod(0o644)
    status, report, _ = ingest_as_user(index_dir, docs)
    assert (report["added"], report["removed"], report["unchanged_files"]) == ([], [], 4)
    assert [h.page_id for h in DocumentIndex.open(index_dir).search("glaciers", top_k=1)] == ["b_1"]


def test_nothing_readable_exits_non_zero_with_every_reason(docs, tmp_path):
    (docs / "sub").chmod(0)
    status, report, _ = ingest_as_user(tmp_path / "index", docs / "sub", docs / "sub" / "b.pdf")
    assert status == 1 and report["added"] == [] and report["index_pages"] == 0
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert reasons[str(docs / "sub")].startswith("cannot list the folder: permission denied")
    assert "permission denied" in reasons[str(docs / "sub" / "b.pdf")]  # a file inside it: a reason, no traceback

    text = subprocess.run(as_user("-m", "search_engine", "ingest", str(docs / "sub"), "--index", str(tmp_path / "i2")),
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert text.returncode == 1 and "Traceback" not in text.stderr
    assert f"skipped {docs / 'sub'}: cannot list the folder: permission denied" in text.stdout
    assert "1 files skipped" in text.stdout.splitlines()[-1]
