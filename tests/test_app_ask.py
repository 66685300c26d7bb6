"""The Ask page under streamlit.testing.v1.AppTest, on a real index (the project's sample report).

Policies: the offline policy (no model), and the vllm policy against a local OpenAI-compatible
server replaying scripted replies (tests/fake_openai_server.py) or a closed port (server down).
"""
from __future__ import annotations

import json
import re

import pytest

from agent.trajectory import Trajectory, TrajectoryStore
from app_support import all_text, app, clean_env, data_root, texts, unescape_md  # noqa: F401 (fixtures)
from fake_openai_server import FakeOpenAIServer, closed_port_url

HILLCREST = "How much water was delivered to the Hillcrest district in 2025?"


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def shape_labels(spec: dict) -> list[str]:
    return [s.get("label", {}).get("text") for s in spec["layout"].get("shapes", [])]


def ask(at, question: str, policy: str | None = None):
    if policy is not None:
        at.button_group(key="ask_policy").set_value(policy).run()
    at.text_area(key="ask_question").input(question).run()
    button = next(b for b in at.button if b.label == "Ask")
    assert not button.disabled
    return button.click().run()


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
    assert not at.exception
    assert not at.error, texts(at.error)

    [traj] = saved(data_root)
    assert traj.policy["name"] == "offline" and traj.question == HILLCREST
    actions = [t.action for t in traj.turns]
    assert actions[0] == "search" and "bbox" in actions
    # one row per turn, drawn with the turn's action
    assert [m for m in texts(at.markdown) if m.startswith("**Turn")] == [f"**Turn {i + 1}** · {a}" for i, a in enumerate(actions)]
    # the search results: thumbnails with rank, page id and score; the page shown to the model marked
    captions = [c for image in at.image for c in image.captions]
    first = traj.turns[0]
    assert any(c.startswith("▶ shown · #") and first.shown_page_id in c for c in captions)
    assert any(re.match(r"#\d+ \S+ · \d\.\d{3}$", c) for c in captions) or len(first.hits) == 1
    # the page acted on with the crop box, the zoomed crop (axes in page pixels), and heatmaps
    specs = charts(at)
    bbox_turn = next(t for t in traj.turns if t.action == "bbox")
    with_crop = [s for s in specs if "crop" in shape_labels(s) and "bbox" in shape_labels(s)]
    assert with_crop, "no figure of the acted-on page with its crop box"
    crop_box = next(sh for sh in with_crop[0]["layout"]["shapes"] if sh["label"]["text"] == "crop")
    assert [crop_box["x0"], crop_box["y0"], crop_box["x1"], crop_box["y1"]] == pytest.approx(bbox_turn.bbox_page)
    x0, y0, x1, y1 = bbox_turn.observation.region
    crop_figures = [s for s in specs if s["layout"]["xaxis"]["range"] == pytest.approx([x0, x1]) and not s["layout"].get("shapes")]
    assert crop_figures, "no zoomed-crop figure spanning the crop region"
    assert any(trace["type"] == "heatmap" for s in specs for trace in s["data"])
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
    assert not at.exception and not at.error, texts(at.error)
    [traj] = saved(data_root)
    assert [t.action for t in traj.turns] == ["search", "bbox", "bbox", "answer"]
    # model text is drawn by st.text / st.code verbatim, never as markdown or HTML
    assert "Search the table. <b>bold?</b> **not bold** <script>alert(1)</script>" in texts(at.text)
    assert SCRIPT[0] in texts(at.code)
    for value in texts(at.markdown) + texts(at.caption):
        assert "<script>" not in value and "<i>" not in value and "](http" not in value, value
    answer = next(m for m in texts(at.markdown) if m.startswith("### "))
    assert unescape_md(answer) == "### <i>3,340</i> million litres [link](http://example.com)"
    # a crop of a crop: the second bbox acts on the first crop, outlined on the page as "previous crop"
    specs = charts(at)
    assert any({"previous crop", "crop", "bbox"} <= set(shape_labels(s)) for s in specs)
    second = traj.turns[2]
    assert second.acted_on.region == traj.turns[1].observation.region
    assert all(traj.turns[1].bbox_page[i] <= second.bbox_page[i] for i in (0, 1))


def test_model_server_down_is_a_clear_message_and_the_partial_run_is_saved(data_root, clean_env):
    url = closed_port_url()
    clean_env.setenv("VRAG_BASE_URL", url)
    at = app()
    at.button_group(key="ask_policy").set_value("vllm").run()
    assert any("cannot reach" in unescape_md(w) for w in texts(at.warning))  # the live health indicator
    ask(at, "What is the water tariff?")
    assert not at.exception
    [message] = texts(at.error)
    assert "cannot reach the model server" in unescape_md(message) and url.split("//")[1].split("/")[0] in unescape_md(message)
    [traj] = saved(data_root)
    assert traj.error and traj.turns == [] and traj.answer is None
    assert not next(b for b in at.button if b.label == "Ask").disabled  # ready for the next question
    # the rest of the app keeps working
    at.switch_page("pages/library.py").run()
    assert not at.exception and [t.value for t in at.title] == ["Library"]


def test_stop_during_a_model_call_ends_the_run_after_that_call(data_root, clean_env):
    holder = {}

    def press_stop(body):  # the user presses Stop while the model is answering turn 2
        holder["at"].session_state["ask_run"].stepper.stop()
        return SCRIPT[1]

    with FakeOpenAIServer([SCRIPT[0], press_stop, SCRIPT[2], SCRIPT[3]]) as server:
        clean_env.setenv("VRAG_BASE_URL", server.base_url)
        clean_env.setenv("VRAG_POLICY", "vllm")
        at = holder["at"] = app()
        ask(at, HILLCREST)
        assert len(server.requests) == 2  # no model call after Stop
    assert not at.exception
    [traj] = saved(data_root)
    assert [t.action for t in traj.turns] == ["search", "bbox"]  # the call in flight was kept
    assert traj.error == "Stopped by the user after 2 turns" and not traj.finished
    assert any("Stopped by the user after 2 turns" in unescape_md(e) for e in texts(at.error))


def test_transformers_policy_without_weights_says_what_to_do(data_root):
    at = app()
    at.button_group(key="ask_policy").set_value("transformers").run()
    assert any("no local model folder" in unescape_md(w) for w in texts(at.warning))
    ask(at, "anything")
    assert not at.exception
    assert any("Settings page" in unescape_md(e) for e in texts(at.error))
    assert saved(data_root) == []


def test_two_sessions_keep_their_own_runs(data_root, clean_env):
    with FakeOpenAIServer(["<think>a</think><answer>first</answer>", "<think>b</think><answer>second</answer>"]) as server:
        clean_env.setenv("VRAG_BASE_URL", server.base_url)
        clean_env.setenv("VRAG_POLICY", "vllm")
        one, two = app(), app()
        ask(one, "question one")
        ask(two, "question two")
        one.run()  # session one redraws after session two ran
    assert unescape_md(next(m for m in texts(one.markdown) if m.startswith("### "))) == "### first"
    assert unescape_md(next(m for m in texts(two.markdown) if m.startswith("### "))) == "### second"
    assert "question one" in texts(one.text) and "question two" not in texts(one.text)
    assert "question two" in texts(two.text) and "question one" not in texts(two.text)
    assert one.session_state["ask_run"].trajectory.id != two.session_state["ask_run"].trajectory.id
