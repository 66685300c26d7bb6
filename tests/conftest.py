"""Shared fixtures. The demo corpus is reached by its relative path and never copied into the repo."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DEMO_CORPUS = (ROOT / ".." / "shared" / "corpus" / "vrag-demo").resolve()


@pytest.fixture(scope="session")
def demo_corpus() -> Path:
    assert DEMO_CORPUS.is_dir(), f"the demo corpus is expected at {DEMO_CORPUS} (../shared beside the repo)"
    return DEMO_CORPUS


@pytest.fixture(scope="session")
def demo_index(demo_corpus):
    """The 25 demo pages in a persistent index at tests/artifacts/demo-index (git-ignored).

    The first run OCRs every page (about a minute on an idle 2-core machine); later runs find every
    file unchanged and only reopen the index. Tests running in parallel processes take turns through
    the index's writer lock, so they never build it twice.
    """
    from search_engine import DocumentIndex

    index = DocumentIndex.open(ROOT / "tests" / "artifacts" / "demo-index")
    report = index.ingest([demo_corpus])
    assert not report.skipped, report.skipped
    assert len(index) == 25, f"expected the 25 demo pages, found {len(index)}"
    return index
