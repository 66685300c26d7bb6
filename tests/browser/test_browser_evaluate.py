"""The Evaluate page in a real browser (`streamlit run app.py` on a free local port, headless Debian
Chromium): Start runs the evaluation in the background, Stop is enabled within a second of Start and
stops the run after the model call in flight, and the run is listed as stopped, resumable. The model
is the local OpenAI-compatible test server answering each call after a delay; the index is the
sample one. Screenshots at 1280 and 1600 px wide go to tests/artifacts/."""
from __future__ import annotations

import json
import time

import pytest

from support.app_support import ROOT, chromium, copy_sample_data, streamlit_server
from support.fake_openai_server import FakeOpenAIServer, Slow
from search_engine.sample_questions import EXAMPLE_QUESTIONS
from support.by_question import ByQuestion

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = ROOT / "tests" / "artifacts"
CALL_SECONDS = 2.0  # every model call takes this long


def settled(page, timeout: float = 120_000) -> None:
    """No script run in flight and nothing stale on the page."""
    page.wait_for_function("""() => !document.querySelector("[data-stale='true'], [data-testid='stSkeleton']")
        && !document.querySelector("[data-testid='stStatusWidgetRunningIcon'], [data-testid='stStatusWidgetRunningManIcon']")""",
                           timeout=timeout, polling=50)


@pytest.fixture
def app_server(tmp_path):
    data = copy_sample_data(tmp_path / "data")
    replies = ByQuestion({q.question: [Slow(CALL_SECONDS, f"<think>s</think><search>{q.question}</search>"),
                                       Slow(CALL_SECONDS, f"<think>a</think><answer>{q.answer}</answer>")] for q in EXAMPLE_QUESTIONS})
    with FakeOpenAIServer([replies] * 1000) as fake:
        env = {"VRAG_STUDIO_DATA": str(data), "VRAG_POLICY": "vllm", "VRAG_BASE_URL": fake.base_url, "HF_HUB_OFFLINE": "1"}
        with streamlit_server(env, ARTIFACTS / "browser-evaluate-streamlit.log") as url:
            yield url, data, replies


@pytest.mark.parametrize("width", [1280, 1600])
def test_stop_is_enabled_within_a_second_of_start_and_stops_the_run(app_server, width):
    url, data, replies = app_server
    with chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": 1100})
        page.goto(f"{url}/evaluate")
        page.get_by_role("heading", name="Evaluate").wait_for(timeout=60_000)
        settled(page)
        start, stop = page.get_by_role("button", name="Start"), page.get_by_role("button", name="Stop")
        assert start.is_enabled() and stop.is_disabled()
        clicked = time.monotonic()
        start.click()
        while not stop.is_enabled():
            assert time.monotonic() - clicked < 10, "Stop was never enabled"
            time.sleep(0.02)
        enabled_after = time.monotonic() - clicked
        assert enabled_after < 1.0, f"Stop was enabled {enabled_after:.2f} s after Start"
        assert start.is_disabled()  # one evaluation at a time

        page.get_by_text("1 of 5 questions", exact=False).first.wait_for(timeout=120_000)  # the first question is done
        page.get_by_text("[1/5] sample-1:", exact=False).first.wait_for(timeout=10_000)  # its line, as the CLI prints it
        page.screenshot(path=str(ARTIFACTS / f"browser-evaluate-running-{width}.png"), full_page=True)
        while len(replies.asked) < 2:  # the second question's first call is in flight
            time.sleep(0.02)
        calls_at_stop, started_at_stop = sum(replies.asked.values()), len(replies.asked)
        stop.click()
        page.get_by_text("stopping", exact=False).first.wait_for(timeout=10_000)  # said at once
        page.get_by_text("Stopped by you after", exact=False).first.wait_for(timeout=60_000)
        settled(page)
        assert not page.locator("[data-testid='stAlertContentError']").count()  # a stop is not an error
        assert sum(replies.asked.values()) <= calls_at_stop + 1  # at most the call in flight when Stop was clicked
        assert start.is_enabled() and page.get_by_role("button", name="Stop").is_disabled()
        page.screenshot(path=str(ARTIFACTS / f"browser-evaluate-stopped-{width}.png"), full_page=True)

    folder = data / "evals" / "sample_report-vllm"
    saved = [json.loads(p.read_text()) for p in folder.glob("*/trajectory.json")]
    assert 2 <= len(saved) == started_at_stop < 5  # no question started after Stop
    # the question in flight ended after its call: stopped (runs again on resume), or answered if that call was its answer
    assert all(t["stopped"] or t["answer"] for t in saved) and sum(not t["stopped"] for t in saved) >= 1
    assert (folder / "summary.json").is_file()
