"""The first search turn of a fresh app, timed in a real browser (issue 16).

A new `streamlit run app.py` process (nothing loaded, nothing cached) searching the 25 demo pages
(the `demo_index` fixture) with the vllm policy against the local OpenAI-compatible test server,
whose first reply is a <search>. The clock starts at the click on Ask and stops when the page the
search turn showed the model is drawn in the turn view (its picture in the figure, loaded, at a
real size): what a person waits for after asking the first question of a session. That includes
opening the index and loading the query embedder, which happen on first use, not at the app's
start (bench/app_startup.py). The figure is printed and written to
tests/artifacts/first-search-turn.json.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from support.app_support import ROOT, chromium, streamlit_server
from support.fake_openai_server import FakeOpenAIServer, Slow
from support.browser_steps import RUN_SECONDS, ask, settled, trajectories

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = ROOT / "tests" / "artifacts"
QUESTION = "How many outbound trips, in millions, is China expected to make in 2020?"
# Generous for a shared 2-core machine: 4.5-6 s measured here at load average 4-5.5 (it was 25-40 s while the
# first search imported torch and sentence-transformers, ~9 CPU-s, and 6-8 s while it still imported torch to set
# its thread count and PyMuPDF's layout add-on; bench/RESULTS.md, "App start-up"). A first turn that loaded
# torch again on a busy machine, or re-read the index (a minute of OCR here), would fail it.
FIRST_TURN_BOUND_S = 30.0

# The turn view's figure shows the page with its picture (a plotly image layer): drawn when the
# image element is there, its data loaded and laid out at a real size.
PICTURE_DRAWN = """() => { const i = document.querySelector('.js-plotly-plot .imagelayer image');
  if (!i) return false; const r = i.getBoundingClientRect(); const href = i.getAttribute('href') || '';
  return r.width > 100 && r.height > 100 && href.startsWith('data:image'); }"""


def test_first_search_turn_of_a_fresh_app_is_drawn_within_the_bound(demo_index, tmp_path):
    data = tmp_path / "data"
    replies = [
        "<think>Search the slides.</think><search>China outbound trips 2020</search>",
        Slow(25.0, "<think>The slide says it.</think><answer>200 million</answer>"),  # keeps turn 1 the newest while timed
    ]
    with FakeOpenAIServer(replies) as fake:
        env = {"VRAG_STUDIO_DATA": str(data), "VRAG_STUDIO_INDEX": str(demo_index.folder), "VRAG_POLICY": "vllm",
               "VRAG_BASE_URL": fake.base_url, "HF_HUB_OFFLINE": "1"}
        with streamlit_server(env, ARTIFACTS / "browser-first-turn-streamlit.log") as url, chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            clicked = ask(page, QUESTION, label="Model server")
            page.get_by_text("Turn 1 of", exact=False).first.wait_for(timeout=RUN_SECONDS)
            turn_shown = time.monotonic() - clicked
            page.wait_for_function(PICTURE_DRAWN, timeout=RUN_SECONDS, polling=20)
            picture_drawn = time.monotonic() - clicked
            # still the run's only turn: the picture is the search turn's page, not a later turn's
            assert page.get_by_role("button", name="Stop").is_enabled() and not page.get_by_text("Final answer").count()
            page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "browser-first-turn.png"))
            page.get_by_text("Final answer").wait_for(timeout=RUN_SECONDS)
            settled(page)

    [saved] = [t for t in trajectories(data) if t["question"] == QUESTION]
    first = saved["turns"][0]
    assert first["action"] == "search" and first["hits"], first  # the timed turn really searched the index
    shown = first["shown_page_id"]
    assert shown in {h["page_id"] for h in first["hits"]} and first["observation"]["page_id"] == shown
    figures = {"click_to_turn_1_s": round(turn_shown, 2), "click_to_page_picture_s": round(picture_drawn, 2),
               "bound_s": FIRST_TURN_BOUND_S, "pages_in_index": len(demo_index), "page_shown": shown,
               "load_average_1min": round(os.getloadavg()[0], 2), "cores": os.cpu_count()}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "first-search-turn.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"first search turn of a fresh app: Ask -> 'Turn 1' {turn_shown:.2f} s, -> page picture drawn {picture_drawn:.2f} s "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    assert picture_drawn < FIRST_TURN_BOUND_S, f"the first search turn's page took {picture_drawn:.1f} s to draw after Ask"
