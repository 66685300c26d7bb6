"""The Trajectories page's attention panel under AppTest, on a real saved run of the sample index.

Maps are computed with the tiny random Qwen2.5-VL (tests/support/tiny_vlm.py) in this process and through the
real attention service (`python -m agent serve-attention`, started by the test on 127.0.0.1 and
stopped after), and must agree up to float rounding; stored choices are listed by their words and
their maps by turn and image; the token picker offers the reply's own tokens.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from agent.attention import load_reply_tokens, stored_choices
from agent.conversation import sent_reply
from agent.protocol import profile_of
from agent.trajectory import Trajectory
from support.app_support import SCRIPT, app, clean_env, data_root, scripted_trajectory, texts, unescape_md  # noqa: F401 (fixtures)
from support.map_checks import assert_same_map

QUESTION = "How much water was delivered to the Hillcrest district in 2025?"


def open_panel(trajectory_id: str):
    at = app()
    at.query_params["id"] = trajectory_id
    at.switch_page("pages/trajectories.py").run()
    at.session_state["attn_open"] = True  # the panel draws only while its expander is open
    return at.run()


def button(at, label: str):
    return next(b for b in at.button if b.label == label)


def stored_maps(folder: Path, key: str) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(folder.glob(f"attention-{key}-turn*.npy"))}


def record(folder: Path, key: str) -> dict:
    return json.loads((folder / f"attention-{key}.json").read_text())


def test_without_a_model_or_a_service_the_panel_says_what_to_set(data_root):
    traj = scripted_trajectory(data_root, QUESTION, SCRIPT)
    at = open_panel(traj.id)
    assert not at.exception and not at.error
    [info] = [unescape_md(i) for i in texts(at.info) if "attention maps" in unescape_md(i)]
    assert "Settings page" in info and "local model folder" in info and "attention service" in info
    assert "No attention maps are stored for this trajectory yet." in texts(at.caption)
    assert not [b for b in at.button if b.label in ("Compute attention maps", "Recompute these maps")]
    assert any(m.startswith("**Turn 1**") for m in texts(at.markdown))  # the turn view below still draws


def test_a_broken_model_folder_or_a_missing_service_is_said_and_nothing_breaks(data_root, clean_env, tmp_path):
    (tmp_path / "half").mkdir()
    clean_env.setenv("VRAG_TRANSFORMERS_MODEL", str(tmp_path / "half"))
    traj = scripted_trajectory(data_root, QUESTION, SCRIPT)
    at = open_panel(traj.id)
    assert not at.exception
    [info] = [unescape_md(i) for i in texts(at.info) if "attention maps" in unescape_md(i)]
    assert "The local model folder set there cannot be used" in info
    at.session_state["settings"].attention_url = "http://127.0.0.1:9"  # nothing listens there
    at.run()
    at.radio(key="attn_where").set_value("in the attention service").run()
    [warning] = [unescape_md(w) for w in texts(at.warning) if "attention service" in unescape_md(w)]
    assert "The attention service cannot be used" in warning and "is not reachable" in warning
    assert not at.exception and not [b for b in at.button if b.label == "Compute attention maps"]


@pytest.mark.slow
def test_maps_computed_here_and_in_the_real_service_agree_and_are_listed_by_name(data_root, clean_env):
    from support.attention_process import attention_service
    from support.tiny_vlm import tiny_model_dir

    clean_env.setenv("VRAG_TRANSFORMERS_MODEL", str(tiny_model_dir()))
    traj = scripted_trajectory(data_root, QUESTION, SCRIPT, {"answer": "3,340 million litres", "boxes": {"aurora_water_report_2025_2": [0, 0, 400, 300]}})
    folder = data_root / "trajectories" / traj.id
    with attention_service() as url:
        clean_env.setenv("VRAG_ATTENTION_URL", url)
        at = open_panel(traj.id)
        assert not at.exception and not at.error, texts(at.error)
        where = at.radio(key="attn_where")
        assert where.value == "in the attention service"  # a service is set: it is the default
        assert any(f"{url} is up" in unescape_md(c) for c in texts(at.caption))
        [estimate] = [unescape_md(c) for c in texts(at.caption) if c.startswith("Estimated time")]
        assert f"in the attention service at {url} (cpu)" in estimate and "GB beyond the weights" in estimate
        at.selectbox(key="attn_select").set_value("reply").run()

        # in this process first
        at.radio(key="attn_where").set_value("in this process").run()
        [estimate] = [unescape_md(c) for c in texts(at.caption) if c.startswith("Estimated time")]
        assert "in this process (cpu)" in estimate
        button(at, "Compute attention maps").click().run()
        assert not at.exception and not at.error, texts(at.error)
        here = stored_maps(folder, "reply_Lall_mean")
        assert len(here) == 1 + 2 + 3  # turn 2 sees the page; turn 3 the page and a crop; turn 4 the page and two crops
        assert record(folder, "reply_Lall_mean")["computed_by"].startswith("this process")

        # the same choice through the service: stored over the same files, the same values
        at.radio(key="attn_where").set_value("in the attention service").run()
        button(at, "Recompute these maps").click().run()
        assert not at.exception and not at.error, texts(at.error)
    there = stored_maps(folder, "reply_Lall_mean")
    assert record(folder, "reply_Lall_mean")["computed_by"] == f"the attention service at {url}"
    assert there.keys() == here.keys()
    for name in here:
        assert there[name].dtype == here[name].dtype == np.float32
        assert_same_map(there[name], here[name], name)

    # stored choices by their words, their maps by turn and image: never a file name
    at.run()
    choice = at.selectbox(key="attn_choice")
    assert choice.options == [f"the whole reply; all layers; mean of heads · the attention service at {url}"]
    names = at.selectbox(key="attn_stored").options
    assert names == ["turn 2 · page aurora_water_report_2025_2 (shown in turn 1)",
                     "turn 3 · page aurora_water_report_2025_2 (shown in turn 1)",
                     "turn 3 · crop of page aurora_water_report_2025_2 (shown in turn 2)",
                     "turn 4 · page aurora_water_report_2025_2 (shown in turn 1)",
                     "turn 4 · crop of page aurora_water_report_2025_2 (shown in turn 2)",
                     "turn 4 · crop of page aurora_water_report_2025_2 (shown in turn 3)"]
    assert not any(re.search(r"attention-|\.npy|\.json|turn\d\d", n) for n in names + choice.options)
    figure = json.loads(next(c for c in at.get("plotly_chart") if c.key == "attn_stored_figure" or '"model attention (share of peak)"' in c.proto.spec).proto.spec)
    [heat] = [t for t in figure["data"] if t["type"] == "heatmap"]
    assert heat["colorbar"]["title"]["text"] == "model attention (share of peak)" and (heat["zmin"], heat["zmax"]) == (0, 1)
    assert any("share inside the gold boxes" in unescape_md(c) for c in texts(at.caption))  # the region scores of the turn

    # a second choice: one layer, every head apart (computed here: the service has stopped)
    at.radio(key="attn_where").set_value("in this process").run()
    at.selectbox(key="attn_select").set_value("answer").run()
    at.slider(key="attn_layers").set_value((1, 1)).run()
    at.selectbox(key="attn_head").set_value("each head apart (a grid)").run()
    button(at, "Compute attention maps").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert at.selectbox(key="attn_choice").value == "answer_L1-1_heads-mean"  # what was just computed is shown
    assert at.selectbox(key="attn_choice").options[0].startswith("the answer text; layer 1; each head · this process")
    grid = json.loads(next(c for c in at.get("plotly_chart") if "head 0" in c.proto.spec and '"attention"' not in c.proto.spec).proto.spec)
    heads = [t for t in grid["data"] if t["type"] == "heatmap"]
    stored = np.load(next(folder.glob("attention-answer_L1-1_heads-mean-turn03-*.npy")))
    assert len(heads) == stored.shape[0] > 1
    assert {r["key"] for r in stored_choices(folder)} == {"reply_Lall_mean", "answer_L1-1_heads-mean"}
    # switching back is a file read
    at.selectbox(key="attn_choice").set_value("reply_Lall_mean").run()
    assert at.selectbox(key="attn_stored").options == names


@pytest.mark.slow
def test_the_token_picker_offers_the_replys_tokens_and_computes_one_tokens_map(data_root, clean_env):
    from support.tiny_vlm import tiny_model_dir

    clean_env.setenv("VRAG_TRANSFORMERS_MODEL", str(tiny_model_dir()))
    traj = scripted_trajectory(data_root, QUESTION, SCRIPT)
    folder = data_root / "trajectories" / traj.id
    at = open_panel(traj.id)
    at.selectbox(key="attn_select").set_value("token").run()
    assert any("known once any map of this trajectory has been computed" in c for c in texts(at.caption))
    assert not [b for b in at.button if b.label == "Compute attention maps"]  # no token to pick yet
    at.selectbox(key="attn_select").set_value("bbox").run()
    button(at, "Compute attention maps").click().run()
    assert not at.exception and not at.error, texts(at.error)

    at.selectbox(key="attn_select").set_value("token").run()
    turns = at.selectbox(key="attn_token_turn")
    assert turns.options == ["turn 1 · search", "turn 2 · bbox", "turn 3 · bbox", "turn 4 · answer"]
    turns.set_value(2).run()
    tokens = load_reply_tokens(folder)[2]
    picker = at.selectbox(key="attn_token")
    assert picker.options == [f"{k} · {text!r}" for k, (text, _, _) in enumerate(tokens)]
    raw = Trajectory.load(folder).turns[2].raw_text
    assert "".join(text for text, _, _ in tokens) == sent_reply(raw, profile_of(traj).context)  # the reply, token by token, as the model saw it
    at_box = raw.index("[100, 100") + 1
    k = next(i for i, (_, start, end) in enumerate(tokens) if start <= at_box < end)  # the first token of the box's numbers
    assert tokens[k][0] in "100"
    picker.set_value(k).run()
    button(at, "Compute attention maps").click().run()
    assert not at.exception and not at.error, texts(at.error)
    key = f"t02k{k}_Lall_mean"
    assert at.selectbox(key="attn_choice").value == key
    assert at.selectbox(key="attn_choice").options[0].startswith(f"token {k} of turn 3; all layers; mean of heads")
    assert at.selectbox(key="attn_stored").options == ["turn 3 · page aurora_water_report_2025_2 (shown in turn 1)",
                                                       "turn 3 · crop of page aurora_water_report_2025_2 (shown in turn 2)"]
    assert len(stored_maps(folder, key)) == 2


@pytest.mark.slow
def test_a_long_computation_leaves_the_page_usable_and_shows_its_progress(data_root, clean_env, monkeypatch):
    """The test holds the loaded model's lock (as a generation in this process would), so the job is
    held running: what the page draws meanwhile does not depend on timing."""
    from pages import attention_panel, common, jobs
    from support.tiny_vlm import tiny_model_dir

    clean_env.setenv("VRAG_TRANSFORMERS_MODEL", str(tiny_model_dir()))
    monkeypatch.setattr(attention_panel, "WAIT_SECONDS", 0)  # every computation counts as long
    traj = scripted_trajectory(data_root, QUESTION, SCRIPT)
    folder = data_root / "trajectories" / traj.id
    at = open_panel(traj.id)
    loaded = common.transformers_policy(str(tiny_model_dir())).loaded  # the app's shared model (st.cache_resource)
    with loaded.lock:
        button(at, "Compute attention maps").click().run()
        assert not at.exception and not at.error, texts(at.error)
        [bar] = at.get("progress")
        assert "Computing attention maps" in unescape_md(bar.proto.text)
        assert button(at, "Compute attention maps").disabled  # one computation per trajectory at a time
        assert any(m.startswith("**Turn 1**") for m in texts(at.markdown))  # the rest of the page is drawn meanwhile
        job = jobs.get_job(f"attention:{folder}")
        assert job is not None and not job.finished
    assert _finished(job)
    at.run()  # what the polling fragment triggers once the job ends
    assert not at.get("progress") and not at.error, texts(at.error)
    assert at.selectbox(key="attn_choice").value == "action_Lall_mean"
    assert stored_maps(folder, "action_Lall_mean")


def _finished(job, timeout: float = 120) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while not job.finished and time.monotonic() < deadline:
        time.sleep(0.1)
    return job.finished
