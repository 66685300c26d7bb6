"""The app in a real browser: `streamlit run app.py` on a free local port, driven by headless Chromium.

Streamlit draws over a websocket after the page loads, so every check waits for an element rather
than reading the first DOM. Two app servers search the 25 demo pages (the `demo_index` fixture,
named by VRAG_STUDIO_INDEX), each with its own temporary data root: one with the offline policy,
one with the vllm policy against the local OpenAI-compatible test server (replies scripted per
test, some slow, for Stop). Layout is measured at 1280 and 1600 px wide.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from support.app_support import ROOT, chromium, streamlit_server
from support.fake_openai_server import FakeOpenAIServer, Slow
from support.replay_fixtures import ten_turn_trajectory
from support.browser_steps import RUN_SECONDS, ask, settled, trajectories

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = ROOT / "tests" / "artifacts"
QUESTION = "How many outbound trips, in millions, is China expected to make in 2020?"
OTHER = "What is Japan's uncertainty avoidance score in the Hofstede culture table?"
WIDTHS = [1280, 1600]

CONTENT_WIDTH = """() => { const c = document.querySelector("[data-testid='stMainBlockContainer']"); const s = getComputedStyle(c);
  return c.getBoundingClientRect().width - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight); }"""
PICTURE_BOX = """() => { const i = document.querySelector('.js-plotly-plot .imagelayer image'); const r = i.getBoundingClientRect();
  return {x: r.x, y: r.y, width: r.width, height: r.height}; }"""

# A control is clipped when its text overflows it, or it sticks out of the column (or the page) holding it.
CLIPPED = """() => [...document.querySelectorAll("[data-testid='stMainBlockContainer'] :is(button, label)")]
  .filter(e => e.offsetParent)
  .filter(e => {
    const box = e.getBoundingClientRect();
    const holder = e.closest("[data-testid='stColumn']") || document.querySelector("[data-testid='stMainBlockContainer']");
    const edge = holder.getBoundingClientRect();
    return e.scrollWidth > e.clientWidth + 1 || box.left < edge.left - 1 || box.right > edge.right + 1;
  })
  .map(e => e.textContent.slice(0, 60))"""


@pytest.fixture(scope="module")
def server(demo_index, tmp_path_factory):
    data = tmp_path_factory.mktemp("browser-data")
    env = {"VRAG_STUDIO_DATA": str(data), "VRAG_STUDIO_INDEX": str(demo_index.folder), "VRAG_POLICY": "offline", "HF_HUB_OFFLINE": "1"}
    with streamlit_server(env, ARTIFACTS / "browser-streamlit.log") as url:
        yield url, data


@pytest.fixture(scope="module")
def replay(server, demo_index):
    """A real 10-turn trajectory (searches, crops, a crop of a crop, an invalid reply) in the offline server's store."""
    url, data = server
    return url, ten_turn_trajectory(data, demo_index.folder)


class Replies:
    """Scripted replies per question, so runs of different tests on one server never take each other's."""

    def __init__(self):
        self.by_question: dict[str, list] = {}
        self.asked: dict[str, int] = {}

    def __call__(self, body: dict) -> str:
        sent = json.dumps(body, ensure_ascii=False)
        question = next((q for q in self.by_question if q in sent), None)
        if question is None or not self.by_question[question]:
            return "<think>No script for this question.</think><answer>none</answer>"
        self.asked[question] = self.asked.get(question, 0) + 1
        reply = self.by_question[question].pop(0)
        if isinstance(reply, Slow):
            time.sleep(reply.seconds)
            reply = reply.reply
        return reply


@pytest.fixture(scope="module")
def model_server(demo_index, tmp_path_factory):
    """The app with the vllm policy against the local test server; a test sets its replies in `replies.by_question`."""
    data = tmp_path_factory.mktemp("browser-model-data")
    replies = Replies()
    with FakeOpenAIServer([replies] * 1000) as fake:
        env = {"VRAG_STUDIO_DATA": str(data), "VRAG_STUDIO_INDEX": str(demo_index.folder), "VRAG_POLICY": "vllm",
               "VRAG_BASE_URL": fake.base_url, "HF_HUB_OFFLINE": "1"}
        with streamlit_server(env, ARTIFACTS / "browser-model-streamlit.log") as url:
            yield url, data, replies


def boxes_overlap(a: dict, b: dict) -> bool:
    return a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"] and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"]


def test_asks_with_the_offline_policy_and_draws_each_turn(server):
    url, data = server
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        ask(page, QUESTION)
        page.get_by_text("Turn 1 of", exact=False).first.wait_for(timeout=RUN_SECONDS)
        page.get_by_text("Final answer").wait_for(timeout=RUN_SECONDS)
        settled(page)

        [saved] = [t for t in trajectories(data) if t["question"] == QUESTION]
        turns = saved["turns"]
        assert turns[0]["action"] == "search" and any(t["action"] == "bbox" for t in turns)
        assert saved["gold"]["pages"] == ["slide_3_1024"] and "slide_3_1024" in saved["gold"]["boxes"]  # an example question
        assert set(saved["rewards"]) >= {"ndcg", "answer", "reward"}
        page.get_by_text(saved["answer"], exact=True).first.wait_for()
        # the search turn: thumbnails of the hits (loaded images), the page shown to the model marked
        page.locator(f".st-key-ask-{saved['id']}-go-0 button").click()
        page.get_by_text("Turn 1 of", exact=False).first.wait_for()
        settled(page)
        marked = page.get_by_text("▶ #1 ", exact=False).first
        marked.wait_for()
        assert page.evaluate("() => [...document.querySelectorAll('img')].filter(i => i.closest('.vrag-hit, [data-testid=stImage]')).every(i => i.complete && i.naturalWidth > 0)")
        hits = page.locator(".vrag-hit img")
        assert hits.count() == len(turns[0]["hits"]) and all(hits.nth(i).bounding_box()["width"] >= 120 for i in range(hits.count()))
        # a crop turn: the page with the model's bbox and the padded crop named in the legend, the zoomed crop at its real size
        crop = next(t for t in turns if t["action"] == "bbox")
        page.locator(f".st-key-ask-{saved['id']}-go-{crop['index']} button").click()
        page.get_by_text(f"Turn {crop['index'] + 1} of", exact=False).first.wait_for()
        settled(page)
        legend = page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot .legendtext')].map(t => t.textContent)")
        assert {"padded crop", "model's bbox"} <= set(legend)
        page.locator(".st-key-turn_layers").get_by_text("relevance", exact=True).click()  # a layer, switched on
        page.locator(".js-plotly-plot .heatmaplayer image, .js-plotly-plot .hm image").first.wait_for(timeout=RUN_SECONDS)
        settled(page)
        assert "retrieval relevance" in page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot .legendtext')].map(t => t.textContent)")
        assert page.locator(".js-plotly-plot .colorbar").count() == 1  # its colour scale
        zoomed = page.locator("[data-testid='stImage'] img").last
        assert round(zoomed.bounding_box()["width"]) == crop["observation"]["input_size"][0]  # 1400 px: room for its real size
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-ask.png"), full_page=True)


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
            settled(page)
        texts = {t["question"]: t for t in trajectories(data)}
        for page, mine, theirs in ((one, QUESTION, OTHER), (two, OTHER, QUESTION)):
            shown = page.locator("[data-testid='stText']").all_inner_texts()  # the run's question and the model text
            assert mine in shown and theirs not in shown
            assert texts[mine]["id"] in page.get_by_text("saved as", exact=False).first.inner_text()
            page.get_by_text(texts[mine]["answer"], exact=True).first.wait_for()


@pytest.mark.parametrize("width", WIDTHS)
def test_the_page_acted_on_is_drawn_large_and_nothing_overlaps(replay, width):
    url, traj = replay
    crop = traj.turns[2]  # a crop of a crop: three outlines in the legend
    with chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": 1100})
        page.goto(f"{url}/trajectories?id={traj.id}&turn=3")
        page.get_by_text("Turn 3 of 10", exact=True).wait_for(timeout=120_000)
        page.locator(".js-plotly-plot .imagelayer image").first.wait_for()
        settled(page)
        content = page.evaluate(CONTENT_WIDTH)
        picture = page.evaluate(PICTURE_BOX)
        assert picture["width"] >= 0.6 * content, (picture, content)
        # the layers are named in a legend above the picture, their entries apart; the mode bar beside it
        legend = page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot .legend .traces')].map(e => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height, text: e.textContent}; })")
        assert {e["text"] for e in legend} >= {"image acted on", "model's bbox", "padded crop"}
        assert all(e["y"] + e["height"] <= picture["y"] + 1 for e in legend)  # not over the page's text
        assert not any(boxes_overlap(a, b) for i, a in enumerate(legend) for b in legend[i + 1:])
        page.locator(".js-plotly-plot").first.hover()  # plotly shows its mode bar on hover
        modebar = page.evaluate("() => { const m = document.querySelector('.js-plotly-plot .modebar'); const r = m.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height}; }")
        assert modebar["width"] > 0 and not boxes_overlap(modebar, picture)
        # the zoomed crop at its real size (up to the space available)
        zoomed = page.locator("[data-testid='stImage'] img").last.bounding_box()["width"]
        assert round(zoomed) == min(crop.observation.input_size[0], round(content))
        # filmstrip and hit captions hold on one line; no control is clipped
        page.locator(f".st-key-traj-{traj.id}-go-0 button").click()
        page.get_by_text("Turn 1 of 10", exact=True).wait_for()
        settled(page)
        one_line = page.evaluate("""() => [...document.querySelectorAll(".vrag-hit figcaption, [class*='-strip'] button p")]
            .map(p => p.getBoundingClientRect().height / parseFloat(getComputedStyle(p).lineHeight))""")
        assert one_line and all(lines < 1.5 for lines in one_line), one_line
        assert page.evaluate(CLIPPED) == []
        page.screenshot(path=str(ARTIFACTS / f"browser-trajectories-{width}.png"), full_page=True)


def test_a_node_of_the_episode_graph_opens_its_turn(replay):
    url, traj = replay
    first_crop = next(t for t in traj.turns if t.action == "bbox")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(f"{url}/trajectories?id={traj.id}")
        page.get_by_text("Turn 1 of 10", exact=True).wait_for(timeout=120_000)
        settled(page)
        page.locator(f".st-key-traj-{traj.id}-mode").get_by_text("Graph", exact=True).click()
        page.locator(".js-plotly-plot .scatterlayer .trace .points path").first.wait_for(timeout=60_000)
        settled(page)
        crops = page.evaluate("() => document.querySelector('.js-plotly-plot').data.findIndex(t => t.name === 'crop')")
        node = page.locator(".js-plotly-plot .scatterlayer .trace").nth(crops).locator(".points path").first
        node.scroll_into_view_if_needed()
        time.sleep(0.5)
        box = node.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)  # plotly picks the point under the mouse on hover, then a click selects it
        page.wait_for_function("() => (document.querySelector('.js-plotly-plot .hoverlayer') || {}).textContent.includes('crop of page')",
                               timeout=10_000)
        page.mouse.click(x, y)
        page.get_by_text(f"Turn {first_crop.index + 1} of 10", exact=True).wait_for(timeout=30_000)
        settled(page)
        assert page.locator(".js-plotly-plot .imagelayer image").count() == 1  # back in the turn view, on that turn


@pytest.mark.parametrize("width", WIDTHS)
def test_the_ask_page_controls_are_not_clipped(server, width):
    url, _ = server
    with chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(url)
        page.get_by_role("heading", name="Ask").wait_for(timeout=60_000)
        page.get_by_text("vLLM server", exact=True).wait_for()
        settled(page)
        assert page.evaluate(CLIPPED) == []


def test_stop_is_enabled_within_a_second_and_stops_the_run(model_server):
    url, data, replies = model_server
    question = "Stop me: how many outbound trips will China make?"
    replies.by_question[question] = [Slow(4.0, f"<think>Look {i}.</think><search>outbound trips China {i}</search>") for i in range(10)]
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        clicked = ask(page, question, label="Model server")
        stop = page.get_by_role("button", name="Stop")
        while not stop.is_enabled():
            time.sleep(0.02)
        enabled_after = time.monotonic() - clicked
        assert enabled_after < 1.0, f"Stop was enabled {enabled_after:.2f} s after Ask"
        assert page.get_by_role("button", name="Ask").is_disabled()  # one run at a time
        page.get_by_text("Turn 1 of", exact=False).first.wait_for(timeout=RUN_SECONDS)  # one turn back (the first run loads the index)
        requests_at_stop = replies.asked[question]
        stop.click()
        page.get_by_text("stopping after the model call in flight", exact=False).first.wait_for(timeout=10_000)
        page.get_by_text("Stopped by you after", exact=False).first.wait_for(timeout=RUN_SECONDS)
        assert not page.locator("[data-testid='stAlertContentError']").count()  # a stop is not an error
        assert replies.asked[question] <= requests_at_stop + 1  # at most the call in flight when Stop was clicked
        [saved] = [t for t in trajectories(data) if t["question"] == question]
        assert saved["stopped"] and saved["error"] is None and 1 <= len(saved["turns"]) <= requests_at_stop + 1
        # listed as stopped
        page.goto(f"{url}/trajectories?id={saved['id']}")
        page.get_by_text(f"{saved['id']} · ", exact=False).first.wait_for(timeout=60_000)
        assert page.get_by_text(" · stopped", exact=False).first.is_visible()
        page.screenshot(path=str(ARTIFACTS / "browser-stopped.png"))


def test_a_new_run_replaces_the_previous_answer_at_once(model_server):
    url, data, replies = model_server
    replies.by_question["first question?"] = ["<think>Quick.</think><answer>the first run's answer</answer>"]
    replies.by_question["second question?"] = [Slow(20.0, "<think>Slow.</think><answer>the second run's answer</answer>")]
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(url)
        ask(page, "first question?", label="Model server")
        page.get_by_text("the first run's answer", exact=True).wait_for(timeout=RUN_SECONDS)
        settled(page)
        ask(page, "second question?", label="Model server")
        page.get_by_text("second question?", exact=True).first.wait_for(timeout=5_000)
        settled(page, timeout=5_000)  # the page is drawn for the new run while the model is still answering
        # Stop turns on with the run's first poll: within a second of Ask (test_stop_is_enabled_within_a_second);
        # read at once, the button could still be the one drawn before the worker started.
        expect(page.get_by_role("button", name="Stop")).to_be_enabled(timeout=2_000)
        assert page.get_by_text("the first run's answer").count() == 0 and page.get_by_text("first question?").count() == 0
        page.get_by_text("the second run's answer", exact=True).wait_for(timeout=60_000)


@pytest.mark.parametrize("width", WIDTHS)
def test_presentation_mode_steps_through_a_saved_trajectory(replay, width):
    url, traj = replay
    with chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": 1100})
        page.goto(f"{url}/present?id={traj.id}")
        page.get_by_text("Turn 1 of 10", exact=True).wait_for(timeout=120_000)
        settled(page)
        question = page.get_by_text(traj.question, exact=True).first
        assert float(question.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")) >= 24  # large type
        for number in (2, 3):
            page.get_by_role("button", name="Next").click()
            page.get_by_text(f"Turn {number} of 10", exact=True).wait_for(timeout=30_000)
            settled(page)
            assert page.get_by_text(traj.question, exact=True).first.is_visible()  # question and answer stay on top
            assert page.get_by_text(traj.answer, exact=True).first.is_visible()
            assert page.evaluate(PICTURE_BOX)["width"] >= 0.75 * page.evaluate(CONTENT_WIDTH)  # full width
        page.get_by_role("button", name="Previous").click()
        page.get_by_text("Turn 2 of 10", exact=True).wait_for(timeout=30_000)
        settled(page)
        assert page.evaluate(CLIPPED) == []
        page.screenshot(path=str(ARTIFACTS / f"browser-present-{width}.png"))


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


def test_a_link_to_a_page_works_on_a_fresh_server(server, replay, demo_index):
    """The very first request a new server gets is a link to a page: it opens with the app's navigation."""
    _, data = server
    _, traj = replay
    env = {"VRAG_STUDIO_DATA": str(data), "VRAG_STUDIO_INDEX": str(demo_index.folder), "HF_HUB_OFFLINE": "1"}
    with streamlit_server(env, ARTIFACTS / "browser-link-streamlit.log") as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/trajectories?id={traj.id}&turn=4")
        page.get_by_text("Turn 4 of 10", exact=True).wait_for(timeout=120_000)
        assert page.get_by_role("heading", name="Trajectories").is_visible()
        nav = page.locator("[data-testid='stTopNavLink'], [data-testid='stSidebarNavLink']").all_inner_texts()
        assert "Present" in " ".join(nav) and not any("stepper" in n or "ask run" in n for n in nav)  # app.py's pages only
