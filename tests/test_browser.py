"""The app in a real browser: `streamlit run app.py` on a free local port, driven by headless Chromium.

Streamlit draws over a websocket after the page loads, so every check waits for an element rather
than reading the first DOM. The app searches the 25 demo pages (the `demo_index` fixture, named by
VRAG_STUDIO_INDEX) with the offline policy; trajectories go to a temporary data root.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from app_support import ROOT, chromium, streamlit_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = ROOT / "tests" / "artifacts"
QUESTION = "How many outbound trips, in millions, is China expected to make in 2020?"
OTHER = "What is Japan's uncertainty avoidance score in the Hofstede culture table?"
RUN_SECONDS = 240_000  # ms: an offline run OCRs each page it sees (a few seconds a page on a busy machine)


@pytest.fixture(scope="module")
def server(demo_index, tmp_path_factory):
    data = tmp_path_factory.mktemp("browser-data")
    env = {"VRAG_STUDIO_DATA": str(data), "VRAG_STUDIO_INDEX": str(demo_index.folder), "VRAG_POLICY": "offline", "HF_HUB_OFFLINE": "1"}
    with streamlit_server(env, ARTIFACTS / "browser-streamlit.log") as url:
        yield url, data


def ask(page, question: str) -> None:
    page.get_by_role("heading", name="Ask").wait_for(timeout=60_000)
    page.get_by_text("no model is reasoning").first.wait_for()  # the offline policy says what it is
    box = page.get_by_role("textbox", name="Question", exact=True)
    box.fill(question)
    box.press("Control+Enter")  # commit the text area (Streamlit reruns and enables Ask)
    button = page.get_by_role("button", name="Ask")
    deadline = time.monotonic() + 30
    while button.is_disabled():
        assert time.monotonic() < deadline, "the Ask button stayed disabled"
        time.sleep(0.1)
    button.click()


def trajectories(data: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((data / "trajectories").glob("*/trajectory.json"))]


def test_asks_with_the_offline_policy_and_draws_each_turn(server):
    url, data = server
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        ask(page, QUESTION)
        page.get_by_text("Turn 1", exact=False).first.wait_for(timeout=RUN_SECONDS)
        page.get_by_text("Final answer").wait_for(timeout=RUN_SECONDS)

        [saved] = [t for t in trajectories(data) if t["question"] == QUESTION]
        turns = saved["turns"]
        assert turns[0]["action"] == "search" and any(t["action"] == "bbox" for t in turns)
        assert saved["gold"]["pages"] == ["slide_3_1024"] and "slide_3_1024" in saved["gold"]["boxes"]  # an example question
        assert set(saved["rewards"]) >= {"ndcg", "answer", "reward"}
        shown = turns[0]["shown_page_id"]
        # the search results: thumbnails (loaded images) with the page shown to the model marked
        marked = page.get_by_text("▶ shown · #", exact=False).first
        marked.wait_for()
        assert shown in marked.inner_text()
        thumbnails = page.locator("[data-testid='stImage'] img")
        assert thumbnails.count() >= 2
        assert page.evaluate("() => [...document.querySelectorAll(\"[data-testid='stImage'] img\")].every(i => i.complete && i.naturalWidth > 0)")
        # the page acted on, with the crop box drawn (plotly shape labels are SVG text), and the zoomed crop
        plots = page.locator(".js-plotly-plot")
        assert plots.count() >= 3
        labels = page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot .shapelayer ~ * text, .js-plotly-plot text')].map(t => t.textContent)")
        assert "crop" in labels and "bbox" in labels
        page.get_by_text("what the model saw:", exact=False).first.wait_for()
        assert page.locator(".js-plotly-plot .heatmaplayer, .js-plotly-plot .hm").count() >= 1  # a heatmap over a page
        answer = saved["answer"]
        page.get_by_text(answer, exact=True).first.wait_for()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({"width": 1400, "height": 3200})  # Streamlit scrolls inside the page: grow the window
        page.get_by_text("Final answer").wait_for()
        page.screenshot(path=str(ARTIFACTS / "browser-ask.png"))


def test_two_tabs_run_at_once_without_mixing_their_turns(server):
    url, data = server
    with chromium() as browser:
        one = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        two = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        one.goto(url)
        two.goto(url)
        ask(one, QUESTION)
        ask(two, OTHER)  # while the first tab's run is going
        for page in (one, two):
            page.get_by_text("Final answer").wait_for(timeout=RUN_SECONDS)
        texts = {q: t for t in trajectories(data) for q in [t["question"]]}
        for page, mine, theirs in ((one, QUESTION, OTHER), (two, OTHER, QUESTION)):
            shown = page.locator("[data-testid='stText']").all_inner_texts()  # the run's question and the model text
            assert mine in shown and theirs not in shown
            assert texts[mine]["id"] in page.get_by_text("saved as", exact=False).first.inner_text()
            page.get_by_text(texts[mine]["answer"], exact=True).first.wait_for()
        one.screenshot(path=str(ARTIFACTS / "browser-tab-one.png"))
        two.screenshot(path=str(ARTIFACTS / "browser-tab-two.png"))


def test_first_run_of_a_fresh_checkout_shows_a_progress_bar_then_the_ask_page(tmp_path):
    env = {"VRAG_STUDIO_DATA": str(tmp_path / "fresh"), "VRAG_STUDIO_INDEX": "", "HF_HUB_OFFLINE": "1"}
    with streamlit_server(env, ARTIFACTS / "browser-first-run.log") as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url)
        page.get_by_text("First run: building the sample index").wait_for(timeout=60_000)
        page.locator("[data-testid='stProgress']").first.wait_for()
        page.screenshot(path=str(ARTIFACTS / "browser-first-run.png"))
        page.get_by_text("When did the Kestrel Ridge treatment plant open?").wait_for(timeout=RUN_SECONDS)
        assert page.get_by_role("heading", name="Ask").is_visible()
        assert not page.locator("[data-testid='stException']").count()
