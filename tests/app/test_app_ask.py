"""The Ask page under streamlit.testing.v1.AppTest, on a real index (the project's sample report).

Policies: the offline policy (no model), and the vllm policy against a local OpenAI-compatible
server replaying scripted replies (tests/support/fake_openai_server.py) or a closed port (server down).
The run steps in a background worker (agent/runs.py), so a test waits for it, then redraws.
"""
from __future__ import annotations

import html
import json
import re
import time

import pytest

from agent.trajectory import Trajectory, TrajectoryStore
from support.app_support import all_text, app, clean_env, data_root, texts, unescape_md  # noqa: F401 (fixtures)
from support.fake_openai_server import FakeOpenAIServer, Slow, closed_port_url
from pages.ui.scene import short_id

HILLCREST = "How much water was delivered to the Hillcrest district in 2025?"


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def shape_names(spec: dict) -> list[str]:
    return [s.get("name") for s in spec["layout"].get("shapes", [])]


def button(at, label: str):
    return next(b for b in at.button if b.label == label)


def ask(at, question: str, policy: str | None = None):
    if policy is not None:
        at.button_group(key="ask_policy").set_value(policy).run()
    at.text_area(key="ask_question").input(question).run()
    assert not button(at, "Ask").disabled
    return button(at, "Ask").click().run()


def finish(at, timeout: float = 240):
    """Wait for the session's run to end in its worker, then draw the page as the poll would."""
    run = at.session_state["ask_run"]
    assert run.worker.join(timeout), "the run did not finish"
    return at.run()


def open_turn(at, number: int):
    """Click a turn in the filmstrip."""
    return next(b for b in at.button if re.match(rf"{number} · ", b.label)).click().run()


def saved(data_root) -> list[Trajectory]:
    good, bad = TrajectoryStore(data_root / "trajectories").list()
    assert not bad
    return good


@pytest.mark.slow
def test_first_run_builds_the_sample_index_then_shows_the_ask_page(tmp_path, clean_env):
    from pages import jobs
    from search_engine.sample_corpus import EXAMPLE_QUESTIONS

    root = tmp_path / "fresh"
    clean_env.setenv("VRAG_STUDIO_DATA", str(root))
    at = app()
    assert [t.value for t in at.title] == ["Ask"]
    assert not at.error
    # the build ran as a job that reported page progress, and the index it made holds the report's 4 pages
    job = jobs.get_job(str(root / "indexes" / "sample"))
    assert job is not None and job.finished and job.error is None
    assert (job.done, job.total) == (4, 4)
    manifest = json.loads((root / "indexes" / "sample" / "manifest.json").read_text())
    assert sum(len(s["pages"]) for s in manifest["sources"].values()) == 4
    examples = at.button_group(key="ask_example")
    assert list(examples.options) == [e.question for e in EXAMPLE_QUESTIONS]


def test_offline_run_draws_each_turn_and_is_saved(data_root):
    at = app()
    assert "no model is reasoning" in all_text(at)  # the offline policy is the default and says so
    at.button_group(key="ask_example").set_value(HILLCREST).run()
    assert at.text_area(key="ask_question").value == HILLCREST  # the example filled the question box
    ask(at, HILLCREST)
    assert button(at, "Ask").disabled and not button(at, "Stop").disabled  # while the run is in flight
    finish(at)
    assert not at.exception
    assert not at.error, texts(at.error)
    assert not button(at, "Ask").disabled

    [traj] = saved(data_root)
    assert traj.policy["name"] == "offline" and traj.question == HILLCREST and traj.outcome == "answered"
    actions = [t.action for t in traj.turns]
    assert actions[0] == "search" and "bbox" in actions
    # the filmstrip: one card per turn, with its action; the newest turn is open
    assert [b.label for b in at.button if re.match(r"\d+ · ", b.label)] == [f"{i + 1} · {a}" for i, a in enumerate(actions)]
    assert f"**Turn {len(actions)}** · {actions[-1]}" in texts(at.markdown)
    # the search results: thumbnails with rank, page id and score; the page shown to the model marked
    open_turn(at, 1)
    first = traj.turns[0]
    [strip] = [h.proto.body for h in at.get("html") if h.proto.body.startswith("<div class=\"vrag-hits\">")]
    captions = [html.unescape(c) for c in re.findall(r"<figcaption[^>]*>(.*?)</figcaption>", strip)]
    assert captions[0] == f"▶ #1 {short_id(first.shown_page_id)} · {first.hits[0]['score']:.2f}"  # one line: rank, page, score
    assert len(captions) == len(first.hits) and all(re.match(r"(▶ )?#\d+ \S+ · \d\.\d\d$", c) for c in captions)
    assert strip.count("<img src=\"data:image/jpeg;base64,") == len(first.hits)  # every hit's thumbnail
    assert f'title="{first.hits[0]["page_id"]} · rank 1 · fused score' in strip  # the full id and scores on hover
    assert len(at.image) >= len(traj.turns)  # the filmstrip's thumbnails
    assert any("both retrievers ranked the page first" in (m.proto.help or "") for m in at.markdown)  # what a score means
    # a crop turn: the page acted on with the model's bbox and the padded crop (page pixels), the zoomed crop
    bbox_turn = next(t for t in traj.turns if t.action == "bbox")
    open_turn(at, bbox_turn.index + 1)
    [spec] = charts(at)
    assert {"model's bbox", "padded crop"} <= set(shape_names(spec))
    crop_box = next(sh for sh in spec["layout"]["shapes"] if sh["name"] == "padded crop")
    assert [crop_box["x0"], crop_box["y0"], crop_box["x1"], crop_box["y1"]] == pytest.approx(bbox_turn.bbox_page)
    assert not any(trace["type"] == "heatmap" for trace in spec["data"])  # maps only when switched on (they are slow)
    layers = at.button_group(key="turn_layers")
    layers.set_value(list(layers.value) + ["relevance"]).run()
    [spec] = charts(at)
    [heat] = [trace for trace in spec["data"] if trace["type"] == "heatmap"]
    assert heat["name"] == "retrieval relevance" and heat["colorbar"]["title"]["text"] == "retrieval relevance"
    w, h = bbox_turn.observation.input_size  # the zoomed crop, at its real size (measured in tests/browser/test_browser.py)
    assert any(f"sent to the model at {w}x{h} px" in unescape_md(c) for c in texts(at.caption)) and "**Zoomed crop**, what the model saw next" in texts(at.markdown)
    # the final answer, shown as escaped text, and the rewards (the example's gold page is known)
    assert traj.answer is not None
    assert "### " + unescape_md(next(m for m in texts(at.markdown) if m.startswith("### "))[4:]) == "### " + traj.answer
    assert {m.label for m in at.metric} >= {"ndcg", "reward"}
    assert traj.rewards["ndcg"] == pytest.approx(float(next(m.value for m in at.metric if m.label == "ndcg")), abs=0.005)
    assert "written by rules, not by a model" in all_text(at)
    # the saved folder loads back with the images the model saw
    again = Trajectory.load(data_root / "trajectories" / traj.id)
    assert [t.action for t in again.turns] == actions


SCRIPT = [
    "<think>Search the table. <b>bold?</b> **not bold** <script>alert(1)</script></think><search>Hillcrest delivered 2025</search>",
    "<think>Zoom on the table.</think><bbox>[40, 90, 480, 330]</bbox>",
    "<think>Zoom again, closer.</think><bbox>[100, 100, 500, 300]</bbox>",
    "<think>Found it.</think><answer><i>3,340</i> million litres [link](http://example.com)</answer>",
]


def test_vllm_run_shows_crops_and_keeps_model_text_as_text(data_root, clean_env):
    with FakeOpenAIServer(list(SCRIPT)) as server:
        clean_env.setenv("VRAG_BASE_URL", server.base_url)
        clean_env.setenv("VRAG_POLICY", "vllm")
        at = app()
        assert any("is up, serving: Qwen/Qwen2.5-VL-7B-Instruct" in unescape_md(s) for s in texts(at.success))
        ask(at, HILLCREST)
        finish(at)
    assert not at.exception and not at.error, texts(at.error)
    [traj] = saved(data_root)
    assert [t.action for t in traj.turns] == ["search", "bbox", "bbox", "answer"]
    # model text is drawn by st.text verbatim, never as markdown or HTML
    open_turn(at, 1)
    assert "Search the table. <b>bold?</b> **not bold** <script>alert(1)</script>" in texts(at.text)
    assert SCRIPT[0] in texts(at.text)  # the raw reply
    for value in texts(at.markdown) + texts(at.caption):
        assert "<script>" not in value and "<i>" not in value and "](http" not in value, value
    answer = next(m for m in texts(at.markdown) if m.startswith("### "))
    assert unescape_md(answer) == "### <i>3,340</i> million litres [link](http://example.com)"
    # a crop of a crop: the second bbox acts on the first crop, outlined on the page as the image acted on
    open_turn(at, 3)
    [spec] = charts(at)
    assert {"image acted on", "padded crop", "model's bbox"} <= set(shape_names(spec))
    acted = next(sh for sh in spec["layout"]["shapes"] if sh["name"] == "image acted on")
    assert [acted["x0"], acted["y0"], acted["x1"], acted["y1"]] == pytest.approx(traj.turns[1].observation.region)
    assert "Turn 3 · cropped from: crop of page aurora_water_report_2025_2 (shown in turn 2)" in unescape_md(" ".join(texts(at.caption)))
    # the answer is drawn over the last image the model saw: the second crop
    open_turn(at, 4)
    [spec] = charts(at)
    x0, y0, x1, y1 = traj.turns[2].observation.region
    assert spec["layout"]["xaxis"]["range"] == pytest.approx([x0, x1]) and spec["layout"]["yaxis"]["range"] == pytest.approx([y1, y0])
    assert any("answer read from the last image the model saw: crop of page aurora_water_report_2025_2 (shown in turn 3)" in unescape_md(c)
               for c in texts(at.caption))


def test_model_server_down_is_a_clear_message_and_the_partial_run_is_saved(data_root, clean_env):
    url = closed_port_url()
    clean_env.setenv("VRAG_BASE_URL", url)
    at = app()
    at.button_group(key="ask_policy").set_value("vllm").run()
    assert any("cannot reach" in unescape_md(w) for w in texts(at.warning))  # the live health indicator
    ask(at, "What is the water tariff?")
    finish(at)
    assert not at.exception
    [message] = texts(at.error)
    assert "cannot reach the model server" in unescape_md(message) and url.split("//")[1].split("/")[0] in unescape_md(message)
    [traj] = saved(data_root)
    assert traj.error and traj.turns == [] and traj.answer is None and traj.outcome == "error"
    assert not button(at, "Ask").disabled  # ready for the next question
    # the rest of the app keeps working
    at.switch_page("pages/library.py").run()
    assert not at.exception and [t.value for t in at.title] == ["Library"]


def test_stop_during_a_model_call_ends_the_run_after_that_call(data_root, clean_env):
    holder = {}

    def press_stop(body):  # the user presses Stop while the model is answering turn 2
        holder["at"].session_state["ask_run"].worker.stop()
        return SCRIPT[1]

    with FakeOpenAIServer([SCRIPT[0], press_stop, SCRIPT[2], SCRIPT[3]]) as server:
        clean_env.setenv("VRAG_BASE_URL", server.base_url)
        clean_env.setenv("VRAG_POLICY", "vllm")
        at = holder["at"] = app()
        ask(at, HILLCREST)
        finish(at)
        assert len(server.requests) == 2  # no model call after Stop
    assert not at.exception
    [traj] = saved(data_root)
    assert [t.action for t in traj.turns] == ["search", "bbox"]  # the call in flight was kept
    assert traj.stopped and traj.error is None and traj.outcome == "stopped" and not traj.finished
    assert not at.error  # a stop is not an error
    assert any("Stopped by you after 2 turns" in unescape_md(i) for i in texts(at.info))
    assert not any(m.startswith("### ") for m in texts(at.markdown))  # no answer box for a stopped run


def test_stop_is_clickable_while_the_model_is_slow_and_ask_waits(data_root, clean_env):
    with FakeOpenAIServer([Slow(3.0, SCRIPT[0]), SCRIPT[1], SCRIPT[2], SCRIPT[3]]) as server:
        clean_env.setenv("VRAG_BASE_URL", server.base_url)
        clean_env.setenv("VRAG_POLICY", "vllm")
        at = app()
        ask(at, HILLCREST)
        assert button(at, "Ask").disabled  # one run at a time
        stop = button(at, "Stop")
        assert not stop.disabled
        assert "Ends the run after the model call in flight" in stop.help  # the page says when a stop takes effect
        deadline = time.monotonic() + 30
        while not server.requests:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stop.click().run()  # during the slow first call
        assert any("stopping after the model call in flight" in unescape_md(str(p.proto.text)) for p in at.get("progress"))
        finish(at)
        assert len(server.requests) == 1
    [traj] = saved(data_root)
    assert traj.outcome == "stopped" and [t.action for t in traj.turns] == ["search"]


def test_a_new_run_replaces_the_previous_one_on_the_page(data_root, clean_env):
    with FakeOpenAIServer(["<think>a</think><answer>the first answer</answer>", Slow(2.0, "<think>b</think><answer>the second</answer>")]) as server:
        clean_env.setenv("VRAG_BASE_URL", server.base_url)
        clean_env.setenv("VRAG_POLICY", "vllm")
        at = app()
        ask(at, "question one")
        finish(at)
        assert unescape_md(next(m for m in texts(at.markdown) if m.startswith("### "))) == "### the first answer"
        ask(at, "question two")  # while it runs, nothing of the first run is on the page
        assert "question two" in texts(at.text) and "question one" not in texts(at.text)
        assert not any(m.startswith("### ") for m in texts(at.markdown)) and not any(m.label == "reward" for m in at.metric)
        finish(at)
    assert unescape_md(next(m for m in texts(at.markdown) if m.startswith("### "))) == "### the second"


def test_transformers_policy_without_weights_says_what_to_do(data_root):
    at = app()
    at.button_group(key="ask_policy").set_value("transformers").run()
    assert any("no local model folder" in unescape_md(w) for w in texts(at.warning))
    ask(at, "anything")
    finish(at)
    assert not at.exception
    [message] = [unescape_md(e) for e in texts(at.error)]
    assert "local Qwen2.5-VL model folder" in message and "Settings page" in message  # str(e) and the app's hint
    assert "--model" not in message  # no command-line advice in the web page
    assert saved(data_root) == []


def _answer_by_question(body: dict) -> str:
    """The reply for whichever session asks: the two runs' workers reach the server in either order."""
    asked = json.dumps(body, ensure_ascii=False)
    return "<think>a</think><answer>first</answer>" if "question one" in asked else "<think>b</think><answer>second</answer>"


def test_two_sessions_keep_their_own_runs(data_root, clean_env):
    with FakeOpenAIServer([_answer_by_question, _answer_by_question]) as server:
        clean_env.setenv("VRAG_BASE_URL", server.base_url)
        clean_env.setenv("VRAG_POLICY", "vllm")
        one, two = app(), app()
        ask(one, "question one")
        ask(two, "question two")
        finish(one)
        finish(two)
        one.run()  # session one redraws after session two ran
    assert unescape_md(next(m for m in texts(one.markdown) if m.startswith("### "))) == "### first"
    assert unescape_md(next(m for m in texts(two.markdown) if m.startswith("### "))) == "### second"
    assert "question one" in texts(one.text) and "question two" not in texts(one.text)
    assert "question two" in texts(two.text) and "question one" not in texts(two.text)
    assert one.session_state["ask_run"].trajectory.id != two.session_state["ask_run"].trajectory.id
