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
