"""Trajectories from a real episode: save/load bit for bit (images included), the store with a
corrupt folder, and a saved trajectory rebuilding the exact messages the model saw."""
from __future__ import annotations

import json

import numpy as np
import pytest

from agent.conversation import build_messages
from agent.loop import AgentConfig, new_trajectory, run_to_end
from agent.trajectory import TRAJECTORY_FILE, Trajectory, TrajectoryFormatError, TrajectoryStore, image_bytes
from support.agent_doubles import MemorySearcher, ScriptedPolicy, noise_page

T = "<think>t</think>"
PAGES = {"deck_1": noise_page(1024, 768, 1), "deck_2": noise_page(900, 1200, 2)}


def episode() -> tuple[Trajectory, list[list[dict]]]:
    policy = ScriptedPolicy([T + "<search>a</search>", T + "<bbox>[10, 10, 300, 200]</bbox>", "broken",
                             T + "<bbox>[0, 0, 100, 100]</bbox>", T + "<search>b</search>", T + "<answer>价格 12%</answer>"])
    config = AgentConfig(max_turns=6)
    traj = new_trajectory("多少? {x}", policy, config, gold={"answer": "12%", "pages": ["deck_2"]}, index="demo")
    run_to_end(traj, policy, MemorySearcher(PAGES), config)
    traj.turns[0].maps["attention"] = "turn00-attention.npy"  # as the attention helper records a map
    traj.turns[0].scores["region_share"] = 0.25
    return traj, policy.calls


def test_round_trip_bit_for_bit(tmp_path):
    traj, _ = episode()
    folder = traj.save(tmp_path / traj.id)
    np.save(folder / "turn00-attention.npy", np.arange(6.0).reshape(2, 3))  # written later by the attention helper
    loaded = Trajectory.load(folder)
    assert loaded == traj
    assert loaded.to_dict() == traj.to_dict()
    assert json.loads((folder / TRAJECTORY_FILE).read_text(encoding="utf-8")) == json.loads(json.dumps(traj.to_dict()))
    views = [t.observation for t in traj.turns if t.observation] + [t.acted_on for t in traj.turns if t.acted_on]
    assert len({v.file for v in views}) == 4
    for view in views:
        assert image_bytes(folder, view) == traj.images[view.file]
    # saving the loaded copy again (without images in memory) keeps the images and the JSON identical
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    loaded.save(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert np.array_equal(np.load(folder / loaded.turns[0].maps["attention"]), np.arange(6.0).reshape(2, 3))
    assert loaded.config == {"max_turns": 6, "top_k": 10, "protocol": "demo", "index": "demo"} and loaded.gold["pages"] == ["deck_2"]


def test_saved_trajectory_rebuilds_the_exact_messages(tmp_path):
    traj, calls = episode()
    folder = traj.save(tmp_path / traj.id)
    loaded = Trajectory.load(folder)
    # messages of the last call = build_messages over all turns but the last, reading images from disk
    partial = Trajectory(question=loaded.question, policy=loaded.policy, turns=loaded.turns[:-1])
    assert build_messages(partial, lambda f: (folder / f).read_bytes()) == calls[-1]


def test_store_lists_good_and_reports_corrupt(tmp_path):
    store = TrajectoryStore(tmp_path)
    good, _ = episode()
    store.save(good)
    (tmp_path / "20990101-000000-bad000").mkdir()
    (tmp_path / "20990101-000000-bad000" / TRAJECTORY_FILE).write_text("{truncated", encoding="utf-8")
    (tmp_path / "20990101-000000-old000").mkdir()
    (tmp_path / "20990101-000000-old000" / TRAJECTORY_FILE).write_text(json.dumps({"schema_version": 99}), encoding="utf-8")
    missing_image = json.loads(json.dumps(good.to_dict()))
    missing_image["id"] = "20990101-000000-noimg0"
    (tmp_path / missing_image["id"]).mkdir()
    (tmp_path / missing_image["id"] / TRAJECTORY_FILE).write_text(json.dumps(missing_image), encoding="utf-8")
    (tmp_path / "not-a-trajectory").mkdir()  # no trajectory.json: not listed at all
    loaded, broken = store.list()
    assert [t.id for t in loaded] == [good.id]
    reasons = dict(broken)
    assert set(reasons) == {"20990101-000000-bad000", "20990101-000000-old000", "20990101-000000-noimg0"}
    assert "not valid JSON" in reasons["20990101-000000-bad000"]
    assert "schema version 99" in reasons["20990101-000000-old000"]
    assert "missing" in reasons["20990101-000000-noimg0"]


@pytest.mark.parametrize("mutate, field, words", [
    (lambda r, f: r.update(turns="abc"), "turns", "valid array"),
    (lambda r, f: r.update(policy=None), "policy", "object"),
    (lambda r, f: r.update(question=123), "question", "valid string"),
    (lambda r, f: r.update(id="../../escape"), "id", "not a trajectory id"),
    (lambda r, f: r.pop("id"), "id", "Field required"),
    (lambda r, f: r["turns"][1].update(index="1"), "turns.1.index", "valid integer"),
    (lambda r, f: r["turns"][0].update(hits=["a", "b"]), "turns.0.hits.0", "object"),
    (lambda r, f: r["turns"][0]["hits"][0].update(score="high"), "turns.0.hits.0.score", "valid number"),
    (lambda r, f: r.update(rewards={"reward": "0.5"}), "rewards.reward", "valid number"),
    (lambda r, f: r["turns"][0]["observation"].update(file="/etc/passwd"), "turns.0.observation.file", "plain"),
    (lambda r, f: r["turns"][1]["acted_on"].update(file="../../../../../../etc/passwd"), "turns.1.acted_on.file", "plain"),
    (lambda r, f: r["turns"][0].update(maps={"attention": "/etc/x.npy"}), "turns.0.maps.attention", "plain"),
    (lambda r, f: r["turns"][1]["observation"].update(region=[0, 0, 0, 10]), "turns.1.observation.region", "at least one pixel"),
    (lambda r, f: r["turns"].insert(0, r["turns"][0]), "turns.1.index", "says it is turn 0"),
    (lambda r, f: (f / r["turns"][0]["observation"]["file"]).write_bytes(b"<html>not an image</html>"), "turns.0.observation.file",
     "not a JPEG or PNG image"),
], ids=["turns abc", "policy null", "question 123", "id escape", "no id", "string index", "string hits", "string score",
        "string reward", "absolute file", "traversal file", "map path", "empty region", "index order", "not an image"])
def test_each_bad_field_is_named_by_its_path(tmp_path, mutate, field, words):
    """The probe's corrupt records (issue 10): each is one TrajectoryFormatError naming the field."""
    traj, _ = episode()
    folder = traj.save(tmp_path / traj.id)
    record = json.loads((folder / TRAJECTORY_FILE).read_text(encoding="utf-8"))
    mutate(record, folder)
    (folder / TRAJECTORY_FILE).write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(TrajectoryFormatError) as e:
        Trajectory.load(folder)
    assert e.value.field == field and f"{field}: " in str(e.value) and words in str(e.value), str(e.value)
    good, bad = TrajectoryStore(tmp_path).list()
    assert good == [] and [tid for tid, _ in bad] == [traj.id]
