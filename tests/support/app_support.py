"""Shared set-up for the app tests (tests/test_app_*.py and tests/browser/test_browser.py).

A "small real index" is the project's own sample index (a generated 4-page report PDF, one page
of it OCR'd), built once per test process and copied into each test's data root, so every test
starts from the same real index without paying for ingestion again.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import tempfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app.py"
ENV_VARS = ("VRAG_STUDIO_DATA", "VRAG_STUDIO_INDEX", "VRAG_BASE_URL", "VRAG_MODEL", "VRAG_POLICY", "VRAG_SEARCH_URL", "VRAG_TRANSFORMERS_MODEL",
            "VRAG_API_KEY", "VRAG_PROTOCOL", "VRAG_ATTENTION_URL", "VRAG_ATTENTION_TOKEN")


@functools.lru_cache(maxsize=1)
def _sample_template() -> Path:
    from search_engine.sample_corpus import build_sample_index

    root = Path(tempfile.mkdtemp(prefix="vrag-app-template-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    build_sample_index(root)
    return root


def copy_sample_data(dest: Path) -> Path:
    """A data root at `dest` holding data/indexes/sample (and its source PDF under samples/)."""
    shutil.copytree(_sample_template(), dest)
    return dest


@pytest.fixture
def clean_env(monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture
def data_root(tmp_path, clean_env) -> Path:
    """A data root with the sample index, set as VRAG_STUDIO_DATA for the app under test."""
    root = copy_sample_data(tmp_path / "data")
    clean_env.setenv("VRAG_STUDIO_DATA", str(root))
    return root


def app(page: str | None = None, timeout: float = 240) -> AppTest:
    """The app as a browser session would see it: app.py run once, then switched to `page`."""
    at = AppTest.from_file(str(APP), default_timeout=timeout).run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(page).run()
        assert not at.exception, at.exception
    return at


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def all_text(at: AppTest) -> str:
    """Every text-like value on the page (markdown, captions, alerts, text, code), joined."""
    parts = []
    for kind in ("markdown", "caption", "text", "code", "error", "warning", "info", "success", "title", "subheader"):
        parts += texts(getattr(at, kind))
    return "\n".join(parts)


def unescape_md(text: str) -> str:
    """Undo pages.common.md_escape (what the reader sees)."""
    import re

    return re.sub(r"\\(.)", r"\1", text)


SCRIPT = [  # a full episode as the released model would play it: search, crop, crop of the crop, answer
    "<think>Search the table. <b>bold?</b> <script>alert(1)</script></think><search>Hillcrest delivered 2025</search>",
    "<think>Zoom on the table.</think><bbox>[40, 90, 480, 330]</bbox>",
    "<think>Zoom again, closer.</think><bbox>[100, 100, 500, 300]</bbox>",
    "<think>Found it.</think><answer>3,340 million litres</answer>",
]


def scripted_trajectory(data: Path, question: str, script: list, gold: dict | None = None):
    """Run a real episode over the data root's sample index, the replies served over HTTP by the
    local OpenAI-compatible test server, and save it to data/trajectories. Returns the trajectory."""
    from agent.loop import AgentConfig, new_trajectory, run_to_end
    from agent.policies import make_policy
    from agent.rewards import score_trajectory
    from agent.search import LocalSearcher
    from agent.trajectory import TrajectoryStore
    from support.fake_openai_server import FakeOpenAIServer
    from search_engine.index import DocumentIndex

    searcher = LocalSearcher(DocumentIndex.open(data / "indexes" / "sample"))
    with FakeOpenAIServer(list(script)) as server:
        policy = make_policy("vllm", base_url=server.base_url)
        config = AgentConfig(max_turns=10)
        trajectory = run_to_end(new_trajectory(question, policy, config, gold=gold, index="sample"), policy, searcher, config)
    if gold:
        trajectory.rewards = score_trajectory(trajectory)
    TrajectoryStore(data / "trajectories").save(trajectory)
    return trajectory


@contextlib.contextmanager
def search_server(index_folder: Path):
    """Our search server (search_engine/server.py) over `index_folder` on a free 127.0.0.1 port."""
    from search_engine.index import DocumentIndex
    from search_engine.server import create_app
    from support.served import serving

    with serving(create_app(DocumentIndex.open(index_folder))) as url:
        yield url


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(env: dict, log_path: Path, startup_seconds: float = 60):
    """`streamlit run app.py` on a free 127.0.0.1 port with `env` added; yields its URL; stopped after."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1", "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + startup_seconds
            while True:
                assert process.poll() is None, f"streamlit exited: see {log_path}"
                try:
                    with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, f"streamlit did not start within {startup_seconds} s: see {log_path}"
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def chromium():
    """Headless Debian chromium driven by the playwright package (no browser download)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
