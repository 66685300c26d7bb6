"""`python -m search_engine ingest --embedder colqwen2 --model-path DIR` in a real process: it indexes
the pages, prints indexing time and memory per page, and `search` then answers with MaxSim."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from support.tiny_visual import tiny_colqwen2_dir

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "search_engine", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_ingest_prints_time_and_memory_per_page_then_search_answers(tmp_path, demo_corpus):
    model = tiny_colqwen2_dir(tmp_path)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("aliyun4_3.jpg", "slide_5_1024.jpg"):
        shutil.copy(demo_corpus / name, corpus / name)
    done = _run("ingest", str(corpus), "--index", str(tmp_path / "index"), "--embedder", "colqwen2",
                "--model-path", str(model), "--workers", "0")
    assert done.returncode == 0, done.stderr
    line = next(l for l in done.stdout.splitlines() if l.startswith("embedder colqwen2:"))
    assert "s per page" in line and "KiB of vectors per page" in line and "multi-vectors" in line and "MiB" in line
    found = _run("search", "--index", str(tmp_path / "index"), "--mode", "dense", "--json", "cloud", "server")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert sorted(h["page_id"] for h in hits) == ["aliyun4_3", "slide_5_1024"]
    config = json.loads((tmp_path / "index" / "config.json").read_text())
    assert config["embedder"] == "colqwen2" and config["model_path"] == str(model)


def test_a_visual_embedder_without_weights_is_one_error_line(tmp_path, demo_corpus):
    done = _run("ingest", str(demo_corpus / "aliyun4_3.jpg"), "--index", str(tmp_path / "index"),
                "--embedder", "colqwen2", "--model-path", str(tmp_path / "nothing-here"))
    assert done.returncode == 2 and done.stderr.startswith("error:") and "huggingface-cli download" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "index").exists()  # nothing was made
