"""The Trajectories page under AppTest, and its HTML export and import helpers, on real saved runs."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import zipfile

import pytest

from agent import report, trajectory_io
from agent.trajectory import Trajectory, TrajectoryStore
from support.app_support import SCRIPT, app, clean_env, data_root, scripted_trajectory, texts, unescape_md  # noqa: F401 (fixtures)

QUESTION = "How much water was delivered to the Hillcrest district in 2025?"
GOLD = {"answer": "3,340 million litres", "pages": ["aurora_water_report_2025_2"]}
SHORT = ["<think>Look.</think><search>Hillcrest delivered</search>", "<think>Done.</think><answer>about 3,000</answer>"]


@pytest.fixture
def runs(data_root):
    """Three saved runs: two of the same question (for comparing), one of another."""
    long = scripted_trajectory(data_root, QUESTION, SCRIPT, GOLD)
    short = scripted_trajectory(data_root, QUESTION, SHORT, GOLD)
    other = scripted_trajectory(data_root, "What is the tariff?", ["<think>x</think><answer>EUR 2.15</answer>"])
    return long, short, other


def main_turns(at) -> list[str]:
    """Turn headers of the opened trajectory's turn view (the compare columns below start with the policy name)."""
    out = []
    for m in texts(at.markdown):
        if m.startswith("**vllm**"):
            break
        if m.startswith("**Turn") and " · " in m and " of " not in m:
            out.append(m)
    return out


def filmstrip(at, trajectory_id: str) -> list[str]:
    return [b.label for b in at.button if (b.key or "").startswith(f"traj-{trajectory_id}-go-")]


def open_turn(at, number: int):
    return next(b for b in at.button if re.match(rf"{number} · ", b.label)).click().run()


def open_page(trajectory_id: str | None = None, turn: int | None = None):
    at = app()
    if trajectory_id:
        at.query_params["id"] = trajectory_id
    if turn is not None:
        at.query_params["turn"] = str(turn)
    return at.switch_page("pages/trajectories.py").run()


def test_lists_filters_and_steps_through_a_trajectory(runs):
    long, short, other = runs
    at = open_page(long.id)
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert set(table["id"]) == {long.id, short.id, other.id}
    assert set(table["outcome"]) == {"answered"}
    assert dict(zip(table["id"], table["reward"]))[other.id] == ""  # no reference: blank, never "None"
    assert "None" not in {str(v) for v in table["reward"]}
    assert QUESTION in texts(at.text)
    assert unescape_md(next(m for m in texts(at.markdown) if m.startswith("### "))) == "### 3,340 million litres"
    assert {m.label: m.value for m in at.metric}["ndcg"] == "1.00"
    # one turn at a time, chosen in the filmstrip (one card per turn) or with Previous / Next
    assert filmstrip(at, long.id) == ["1 · search", "2 · bbox", "3 · bbox", "4 · answer"]
    assert main_turns(at) == ["**Turn 1** · search"]
    open_turn(at, 3)
    assert main_turns(at) == ["**Turn 3** · bbox"] and at.query_params["turn"] in ("3", ["3"])
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    names = {s.get("name") for spec in specs for s in spec["layout"].get("shapes", [])}
    assert {"image acted on", "padded crop", "model's bbox"} <= names
    next(b for b in at.button if b.label == "Next").click().run()
    assert main_turns(at) == ["**Turn 4** · answer"]
    # the overview: every turn as a card; a card opens its turn
    at.button_group(key=f"traj-{long.id}-mode").set_value("Overview").run()
    assert len(main_turns(at)) == 4
    next(b for b in at.button if b.label == "Open turn 2").click().run()
    assert main_turns(at) == ["**Turn 2** · bbox"] and at.button_group(key=f"traj-{long.id}-mode").value == "Turn"
    # the episode graph: one figure whose nodes carry their turns
    at.button_group(key=f"traj-{long.id}-mode").set_value("Graph").run()
    [graph] = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    nodes = [t for t in graph["data"] if t.get("mode") == "markers+text"]
    assert {t["name"] for t in nodes} == {"question", "search query", "page shown", "crop", "answer"}
    assert sorted(c[0] for t in nodes if t["name"] != "question" for c in t["customdata"]) == [0, 0, 1, 2, 3]
    # the filter narrows the list
    at.text_input(key="traj_filter").input("tariff").run()
    assert list(at.dataframe[0].value["id"]) == [other.id]
    at.text_input(key="traj_filter").input("").run()
    at.selectbox(key="traj_outcome").set_value("error").run()
    assert len(at.dataframe[0].value) == 0 and "No trajectory matches the filter." in texts(at.info)


def test_a_link_opens_its_trajectory_at_its_turn(runs):
    long, *_ = runs
    at = open_page(long.id, turn=3)
    assert main_turns(at) == ["**Turn 3** · bbox"]


def test_a_stopped_run_is_listed_and_shown_as_stopped(data_root):
    from agent.runs import Run, RunRequest, Worker
    from agent.workspace import Settings
    from support.fake_openai_server import FakeOpenAIServer
    from search_engine.index import DocumentIndex

    index = DocumentIndex.open(data_root / "indexes" / "sample")
    holder = {}

    def stop_now(body):  # the user presses Stop during the second model call
        holder["worker"].stop()
        return SCRIPT[1]

    with FakeOpenAIServer([SCRIPT[0], stop_now]) as server:
        run = Run(RunRequest(QUESTION, policy="vllm", index_name="sample"), Settings(base_url=server.base_url, model=server.model),
                  TrajectoryStore(data_root / "trajectories"), open_index=lambda: index)
        holder["worker"] = Worker(run.turns()).start()
        assert holder["worker"].join(60)
    at = open_page(run.trajectory.id)
    table = at.dataframe[0].value
    assert list(table["outcome"]) == ["stopped"] and list(table["answer"]) == [""]
    assert not at.error and any("Stopped by you after 2 turns" in unescape_md(i) for i in texts(at.info))
    at.selectbox(key="traj_outcome").set_value("stopped").run()
    assert list(at.dataframe[0].value["id"]) == [run.trajectory.id]


def test_compares_two_runs_of_the_same_question_side_by_side(runs):
    long, short, other = runs
    at = open_page(long.id)
    compare = at.selectbox(key="traj_compare")
    assert compare.options == [f"{short.id} · vllm · 2 turns · about 3,000"]
    compare.set_value(short.id).run()
    turns = [m for m in texts(at.markdown) if m.startswith("**Turn") and " of " not in m]
    assert turns.count("**Turn 1** · search") == 3  # the open turn plus both compared columns
    assert "**Turn 4** · answer" in turns and "**Turn 2** · answer" in turns
    assert "3,340 million litres" in texts(at.text) and "about 3,000" in texts(at.text)


def test_deletes_a_trajectory_after_a_confirm(runs, data_root):
    long, short, other = runs
    at = open_page(other.id)
    next(b for b in at.button if b.label == "Delete this trajectory").click().run()
    assert not at.exception
    assert not (data_root / "trajectories" / other.id).exists()
    assert set(at.dataframe[0].value["id"]) == {long.id, short.id}


def test_offers_the_html_report_and_the_folder_as_downloads(runs):
    long, *_ = runs
    at = open_page(long.id)
    assert [b.label for b in at.get("download_button")] == ["Export HTML report", "Export folder (zip)"]
    [present] = [p for p in at.get("page_link")]
    assert present.proto.label == "Present" and long.id in present.proto.query_string
    assert at.session_state["traj_current"] == long.id


def test_html_report_embeds_images_and_escapes_model_text(data_root):
    traj = scripted_trajectory(data_root, "Is <b>this</b> escaped?", SCRIPT, GOLD)
    folder = data_root / "trajectories" / traj.id
    html = report.trajectory_html(Trajectory.load(folder), folder)
    assert "<script" not in html.lower()  # the model wrote <script>alert(1)</script>: it must stay text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "Is &lt;b&gt;this&lt;/b&gt; escaped?" in html
    assert "default-src 'none'" in html  # and nothing is loaded from anywhere but the file itself:
    assert not re.search(r"""(src|href)\s*=\s*(?!['"]?data:)""", html) and "<link" not in html and "@import" not in html
    images = re.findall(r"src='data:image/jpeg;base64,([^']+)'", html)
    # per turn: search -> the page; bbox -> acted-on page with boxes + the crop (twice); answer -> none
    assert len(images) == 1 + 2 + 2
    from PIL import Image

    sizes = [Image.open(io.BytesIO(base64.b64decode(b))).size for b in images]
    assert sizes[0] == tuple(traj.turns[0].observation.input_size)
    assert sizes[2] == tuple(traj.turns[1].observation.input_size)


def test_broken_folders_in_the_store_are_reported_and_the_rest_works(runs, data_root):
    long, short, other = runs
    store = data_root / "trajectories"
    (store / "20990101-000000-bad001").mkdir()
    (store / "20990101-000000-bad001" / "trajectory.json").write_text("{ not json")
    missing = store / "20990101-000000-bad002"
    shutil.copytree(store / long.id, missing)
    (missing / long.turns[0].observation.file).unlink()
    at = open_page()
    assert not at.exception
    broken = at.dataframe[0].value
    assert list(broken["folder"]) == ["20990101-000000-bad002", "20990101-000000-bad001"]
    assert "is missing" in broken["why"][0] and "not valid JSON" in broken["why"][1]
    assert set(at.dataframe[1].value["id"]) == {long.id, short.id, other.id}
    assert QUESTION in texts(at.text) or "What is the tariff?" in texts(at.text)  # the newest one opened


def test_imports_a_zip_and_a_server_folder_and_refuses_bad_ones(runs, data_root, tmp_path):
    long, short, other = runs
    source_store = data_root / "trajectories"
    exported = trajectory_io.export_zip(source_store / long.id)
    shutil.rmtree(source_store / long.id)

    at = open_page()
    at.session_state["traj_import_open"] = True  # the import section draws its widgets while open
    at.run()
    at.file_uploader(key="traj_import_zip").set_value(("runs.zip", exported, "application/zip")).run()
    next(b for b in at.button if b.label == "Import the zip").click().run()
    assert not at.exception
    assert any(long.id in unescape_md(s) for s in texts(at.success))
    assert Trajectory.load(source_store / long.id).to_dict() == long.to_dict()
    next(b for b in at.button if b.label == "Import the zip").click().run()
    assert any("Already in the store" in unescape_md(i) for i in texts(at.info))

    at.file_uploader(key="traj_import_zip").set_value(("junk.zip", b"not a zip at all", "application/zip")).run()
    next(b for b in at.button if b.label == "Import the zip").click().run()
    assert any("not a zip archive" in unescape_md(e) for e in texts(at.error))

    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../escaped/trajectory.json", "{}")
    at.file_uploader(key="traj_import_zip").set_value(("evil.zip", evil.getvalue(), "application/zip")).run()
    next(b for b in at.button if b.label == "Import the zip").click().run()
    assert any("unsafe path" in unescape_md(e) for e in texts(at.error))
    assert not (tmp_path / "escaped").exists()

    at.text_input(key="traj_import_path").input("/no/such/place").run()
    next(b for b in at.button if b.label == "Import the folder").click().run()
    assert any("there is no folder at /no/such/place" in unescape_md(e) for e in texts(at.error))

    incoming = tmp_path / "incoming"
    shutil.copytree(source_store / short.id, incoming / "good")
    (incoming / "corrupt").mkdir()
    (incoming / "corrupt" / "trajectory.json").write_text(json.dumps({"schema_version": 99}))
    shutil.rmtree(source_store / short.id)
    at.text_input(key="traj_import_path").input(str(incoming)).run()
    next(b for b in at.button if b.label == "Import the folder").click().run()
    assert not at.exception
    assert any(short.id in unescape_md(s) for s in texts(at.success))
    assert any("1 folders could not be imported" in e for e in texts(at.error))
    assert "schema version 99" in at.dataframe[0].value["why"][0]


@pytest.mark.slow
def test_attention_maps_are_estimated_computed_and_drawn_per_turn(data_root, clean_env):
    from support.tiny_vlm import tiny_model_dir

    model = tiny_model_dir()
    clean_env.setenv("VRAG_TRANSFORMERS_MODEL", str(model))
    traj = scripted_trajectory(data_root, QUESTION, SCRIPT, GOLD)
    at = open_page(traj.id)
    assert not any(c.startswith("Estimated time") for c in texts(at.caption))  # the panel draws only while open
    at.session_state["attn_open"] = True
    at.run()
    assert any(c.startswith("Estimated time: about") for c in texts(at.caption))
    next(b for b in at.button if b.label == "Compute attention maps").click().run()
    assert not at.exception and not at.error, texts(at.error)
    saved = Trajectory.load(data_root / "trajectories" / traj.id)
    assert any(k.startswith("attention:") for k in saved.turns[1].maps)
    open_turn(at, 2)  # the first bbox turn
    layers = at.button_group(key="turn_layers")
    layers.set_value(list(layers.value) + ["attention"]).run()
    assert not at.exception
    assert any("model attention of turn 2 over the page aurora_water_report_2025_2 (shown in turn 1)" in unescape_md(c) for c in texts(at.caption))
    heat = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if '"model attention"' in c.proto.spec)
    [trace] = [t for t in heat["data"] if t["type"] == "heatmap" and t["name"] == "model attention"]
    assert trace["colorbar"]["title"]["text"] == "model attention" and trace["showlegend"]
    # a crop of a crop: its reply attended over the page and the first crop; each is named by turn and image
    open_turn(at, 3)
    names = at.selectbox(key=f"traj-{traj.id}-attn-2")
    assert names.options == ["turn 3 · page aurora_water_report_2025_2 (shown in turn 1)", "turn 3 · crop of page aurora_water_report_2025_2 (shown in turn 2)"]
    assert names.value == names.options[1]  # the image the turn acted on, first
    names.set_value(names.options[0]).run()
    assert any("model attention of turn 3 over the page aurora_water_report_2025_2 (shown in turn 1)" in unescape_md(c) for c in texts(at.caption))
    # the attention panel lists the stored maps the same way
    at.session_state["attn_open"] = True
    at.run()
    stored = at.selectbox(key="attn_stored")
    assert "turn 2 · page aurora_water_report_2025_2 (shown in turn 1)" in stored.options
