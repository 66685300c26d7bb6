"""What the app's first page costs a fresh process: the Ask page's first script run imports no heavy library.

The app starts within 1 s of a bare Streamlit app (issue 16, bench/app_startup.py) only while the
first Ask page, the question box and the example questions, loads nothing it does not draw: no
model library, no index, no HTTP client, no figures. Heavy modules load on first use (a search,
a run's turn view). Each check runs app.py under AppTest in a new interpreter, so nothing an
earlier test imported hides an import.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from support.app_support import APP, ROOT, clean_env, data_root  # noqa: F401 (fixtures)

# Loaded on first use only (what each costs a first page: bench/RESULTS.md, "App start-up").
HEAVY = ("torch", "transformers", "sentence_transformers", "faiss", "fitz", "pymupdf", "openai", "httpx", "numpy",
         "plotly.graph_objects", "tantivy", "pymilvus", "search_engine.index", "search_engine.dense", "agent.figures",
         "agent.policies.offline", "pages.ui.turn_view")

FIRST_RUN = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from streamlit.testing.v1 import AppTest  # itself imports plotly.graph_objects: only what the app adds is counted
before = set(sys.modules)
at = AppTest.from_file(sys.argv[1] + "/app.py", default_timeout=120).run()
print(json.dumps({"exception": [str(e.value) for e in at.exception], "text_areas": [t.label for t in at.text_area],
                  "pills": [p.options for p in at.get("button_group")], "modules": sorted(set(sys.modules) - before)}))
"""


def probe(code: str = FIRST_RUN) -> dict:
    """Run `code` (app.py under AppTest) in a new interpreter; what it drew and the modules the app loaded."""
    done = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_first_ask_page_draws_the_question_box_without_loading_heavy_libraries(data_root):
    assert APP.exists()
    page = probe()
    assert not page["exception"], page["exception"]
    assert "Question" in page["text_areas"]
    assert any("When did the Kestrel Ridge treatment plant open?" in str(options) for options in page["pills"])  # the examples
    loaded = set(page["modules"])
    assert not [m for m in HEAVY if m in loaded], f"the first Ask page imported {[m for m in HEAVY if m in loaded]}"


def test_the_probe_sees_the_turn_view_load_on_a_page_that_draws_turns(data_root):
    """The check above can fail: the same probe sees the turn view and its figures once a page that draws turns runs."""
    page = probe(FIRST_RUN.replace(".run()\n", '.run()\nat.switch_page("pages/trajectories.py").run()\n', 1))
    assert not page["exception"], page["exception"]
    loaded = set(page["modules"])
    assert {"pages.ui.turn_view", "agent.figures", "numpy"} <= loaded, sorted(loaded)


FIRST_SEARCH = """
import json, sys
from pathlib import Path
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from pages.common import open_index
from agent.search import LocalSearcher
index = open_index(Path(sys.argv[2]) / "indexes" / "sample")
hits = LocalSearcher(index).search("When did the Kestrel Ridge treatment plant open?", 3)
print(json.dumps({"hits": [h.page_id for h in hits], "modules": sorted(sys.modules)}))
"""


def test_the_apps_first_search_loads_neither_torch_nor_the_pdf_layout_add_on(data_root):
    """The index the pages open, and a search in it, run on ONNX Runtime: no torch (2-3 CPU-s of a first search
    turn), no pymupdf.layout (0.8 s, search_engine/mupdf.py)."""
    done = subprocess.run([sys.executable, "-c", FIRST_SEARCH, str(ROOT), str(data_root)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["hits"], result
    loaded = set(result["modules"])
    assert {"search_engine.index", "faiss", "onnxruntime", "pymupdf"} <= loaded  # the search really ran here
    assert not loaded & {"torch", "sentence_transformers", "transformers", "pymupdf.layout"}, sorted(
        loaded & {"torch", "sentence_transformers", "transformers", "pymupdf.layout"})
