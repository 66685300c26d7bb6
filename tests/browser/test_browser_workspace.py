"""The Library, Settings and Evaluate pages in a real browser: what survives a reload, and the layout at 1280 and 1600 px.

`streamlit run app.py` on a free local port over a copy of the sample index (plus an empty second
index), driven by headless Chromium. A reload is a page load of the same URL in a new tab.
"""
from __future__ import annotations

import json

import pytest

from support.app_support import ROOT, chromium, copy_sample_data, streamlit_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = ROOT / "tests" / "artifacts"
LOAD = 120_000  # ms: the first page of a fresh server imports torch and opens the index


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from search_engine.index import DocumentIndex

    data = copy_sample_data(tmp_path_factory.mktemp("browser-workspace") / "data")
    DocumentIndex.open(data / "indexes" / "empty")
    env = {"VRAG_STUDIO_DATA": str(data), "VRAG_STUDIO_INDEX": "", "VRAG_POLICY": "offline", "HF_HUB_OFFLINE": "1"}
    with streamlit_server(env, ARTIFACTS / "browser-workspace-streamlit.log") as url:
        yield url, data


def no_horizontal_overflow(page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


def test_a_reload_keeps_the_pages_index_and_the_settings(server):
    url, data = server
    with chromium() as browser:
        # the first page a fresh server serves is a page's own URL, as after a reload
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/library?index=empty")
        page.get_by_role("heading", name="Pages of empty").wait_for(timeout=LOAD)
        assert page.locator("[data-testid='stTopNavLink']").count() == 6  # app.py's navigation, not a list of pages/ modules
        assert page.get_by_text("eval view").count() == 0
        page.close()

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/settings")
        box = page.get_by_role("textbox", name="Endpoint URL")
        box.wait_for(timeout=LOAD)
        box.fill("http://gpu-box:8001/v1")
        box.press("Enter")
        page.get_by_text("Settings saved").wait_for(timeout=30_000)
        page.reload()
        box = page.get_by_role("textbox", name="Endpoint URL")
        box.wait_for(timeout=LOAD)
        page.wait_for_timeout(1000)
        assert box.input_value() == "http://gpu-box:8001/v1"
        assert json.loads((data / "settings.json").read_text())["base_url"] == "http://gpu-box:8001/v1"
        page.close()


@pytest.mark.parametrize("width", [1280, 1600])
def test_the_pages_hold_their_layout(server, width):
    url, _ = server
    with chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": 1200})
        page.goto(f"{url}/library?index=sample")
        page.get_by_role("heading", name="Open a page").wait_for(timeout=LOAD)
        table = page.locator("[data-testid='stTable'] table").first
        table.wait_for(timeout=LOAD)
        header = page.locator("[data-testid='stTable'] th", has_text="text").first
        assert header.bounding_box()["width"] >= 0.5 * table.bounding_box()["width"]  # the OCR text gets the room
        plot = page.locator(".js-plotly-plot").first
        assert plot.bounding_box()["width"] >= 0.5 * width * 0.8  # the opened page is the big thing
        assert no_horizontal_overflow(page)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"browser-library-{width}.png"), full_page=True)

        page.goto(f"{url}/evaluate?index=sample")
        page.get_by_role("button", name="Start").wait_for(timeout=LOAD)
        page.wait_for_timeout(1000)
        buttons = page.locator("[data-testid='stButtonGroup'] button")
        assert buttons.count() == 3
        for i in range(3):  # the policy control is not clipped ("vLLM server" was cut at 1280)
            assert buttons.nth(i).evaluate("b => b.scrollWidth <= b.clientWidth + 1"), buttons.nth(i).inner_text()
        assert no_horizontal_overflow(page)

        page.goto(f"{url}/settings")
        page.get_by_role("heading", name="Local model (the transformers policy)").wait_for(timeout=LOAD)
        assert no_horizontal_overflow(page)
        assert "`" not in page.locator("[data-testid='stMain']").inner_text()
        page.close()
