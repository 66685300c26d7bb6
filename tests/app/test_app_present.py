"""The Present page under AppTest: a saved or live run, one turn at a time, stepped or played."""
from __future__ import annotations

import json

from agent.runs import Run, RunRequest
from agent.trajectory import TrajectoryStore
from agent.workspace import Settings
from support.app_support import SCRIPT, all_text, app, clean_env, data_root, scripted_trajectory, texts, unescape_md  # noqa: F401 (fixtures)
from support.fake_openai_server import FakeOpenAIServer

QUESTION = "How much water was delivered to the Hillcrest district in 2025?"
GOLD = {"answer": "3,340 million litres", "pages": ["aurora_water_report_2025_2"]}


def present(trajectory_id: str | None = None):
    at = app()
    if trajectory_id:
        at.query_params["id"] = trajectory_id
    return at.switch_page("pages/present.py").run()


def where(at) -> str:
    return next(m for m in texts(at.markdown) if m.startswith("**Turn "))


def test_steps_through_a_saved_trajectory_with_the_question_and_answer_always_on_top(data_root):
    traj = scripted_trajectory(data_root, QUESTION, SCRIPT, GOLD)
    at = present(traj.id)
    assert not at.exception and not at.error
    assert at.selectbox(key="present_pick").value == traj.id
    assert QUESTION in texts(at.text) and "### 3,340 million litres" in [unescape_md(m) for m in texts(at.markdown)]
    assert where(at) == "**Turn 1 of 4**" and "### Turn 1 · search" in texts(at.markdown)
    for number, action in [(2, "bbox"), (3, "bbox"), (4, "answer")]:
        next(b for b in at.button if b.label == "Next").click().run()
        assert where(at) == f"**Turn {number} of 4**" and f"### Turn {number} · {action}" in texts(at.markdown)
        assert QUESTION in texts(at.text) and "### 3,340 million litres" in [unescape_md(m) for m in texts(at.markdown)]
        [figure] = at.get("plotly_chart")  # the picture, full width
        assert json.loads(figure.proto.spec)["data"][0]["type"] == "image"
    assert next(b for b in at.button if b.label == "Next").disabled
    next(b for b in at.button if b.label == "Previous").click().run()
    assert where(at) == "**Turn 3 of 4**"
    assert "no model was reasoning" not in all_text(at)  # a model's run carries no offline label


def test_plays_at_the_chosen_pace(data_root):
    traj = scripted_trajectory(data_root, QUESTION, SCRIPT, GOLD)
    at = present(traj.id)
    at.toggle(key="present_play").set_value(True).run()
    at.selectbox(key="present_pace").set_value(2).run()
    assert where(at).startswith("**Turn 1 of 4**") and "playing, 2 s per turn" in where(at)
    at.session_state[f"present-{traj.id}-at"] = 0.0  # as if the last step was long ago: the next tick steps
    at.run()
    assert where(at).startswith("**Turn 2 of 4**")
    at.run()  # a tick sooner than the pace does not step
    assert where(at).startswith("**Turn 2 of 4**")


def test_an_offline_run_keeps_its_label(data_root):
    from search_engine.index import DocumentIndex

    index = DocumentIndex.open(data_root / "indexes" / "sample")
    run = Run(RunRequest(QUESTION, policy="offline", max_turns=4, index_name="sample"), Settings(),
              TrajectoryStore(data_root / "trajectories"), open_index=lambda: index)
    list(run.turns())
    at = present(run.trajectory.id)
    assert not at.exception
    assert "no model was reasoning" in all_text(at)


def test_presents_the_run_going_on_the_ask_page(data_root, clean_env):
    with FakeOpenAIServer(list(SCRIPT)) as server:
        clean_env.setenv("VRAG_BASE_URL", server.base_url)
        clean_env.setenv("VRAG_POLICY", "vllm")
        at = app()
        at.text_area(key="ask_question").input(QUESTION).run()
        next(b for b in at.button if b.label == "Ask").click().run()
        assert at.session_state["ask_run"].worker.join(120)
        at.switch_page("pages/present.py").run()
    assert not at.exception
    pick = at.selectbox(key="present_pick")
    assert pick.options[0] == f"The run on the Ask page: {QUESTION}" and pick.value == "live"
    assert where(at) == "**Turn 1 of 4**" and QUESTION in texts(at.text)


def test_says_what_to_do_when_there_is_nothing_to_present(data_root):
    at = present()
    assert not at.exception
    assert any("Nothing to present yet" in unescape_md(i) for i in texts(at.info))
