"""The pages never read a file a trajectory record names outside its own folder or the index it searched.

A record from someone else may name any path as a page's `page_image_file` or a hit's `image_file`. Those are
provenance only: the Trajectories and Present pages find page images by page id in an index the app knows
(agent.trajectory.page_image_path) and the model's images inside the trajectory folder (image_path). An audit
hook records every file Python opens while the pages draw, so a read of the planted file fails the test.
"""
from __future__ import annotations

import json
import os
import sys

import pytest
from PIL import Image

from support.app_support import SCRIPT, app, clean_env, data_root, scripted_trajectory, texts  # noqa: F401 (fixtures)

QUESTION = "How much water was delivered to the Hillcrest district in 2025?"

_opened: list[str] = []
_recording = [False]


def _audit(event: str, args: tuple) -> None:
    if _recording[0] and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # a hook cannot be removed; it records only while the `opened` fixture is active


@pytest.fixture
def opened():
    _opened.clear()
    _recording[0] = True
    yield _opened
    _recording[0] = False


def _plant(data_root, tmp_path, *, unknown_pages: bool):
    """A saved run whose record names a secret image outside every allowed place (and, with unknown_pages,
    page ids the index does not have, so the page cannot be found there either)."""
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    Image.new("RGB", (400, 300), (255, 0, 255)).save(secret)
    traj = scripted_trajectory(data_root, QUESTION, SCRIPT)
    path = data_root / "trajectories" / traj.id / "trajectory.json"
    record = json.loads(path.read_text())
    for turn in record["turns"]:
        for hit in turn.get("hits") or []:
            hit["image_file"] = str(secret)
            if unknown_pages:
                hit["page_id"] = "not-in-any-index_" + hit["page_id"]
        view = turn.get("observation")
        if view:
            view["page_image_file"] = str(secret)
            if unknown_pages:
                view["page_id"] = "not-in-any-index_" + view["page_id"]
        if unknown_pages and turn.get("shown_page_id"):
            turn["shown_page_id"] = "not-in-any-index_" + turn["shown_page_id"]
    path.write_text(json.dumps(record))
    return traj, secret


def _draw_every_page(traj_id: str):
    at = app()
    at.query_params["id"] = traj_id
    at.switch_page("pages/trajectories.py").run()
    assert not at.exception, at.exception
    turns = [b for b in at.button if (b.key or "").startswith(f"traj-{traj_id}-go-")]
    assert len(turns) >= 3
    for i in range(len(turns)):
        next(b for b in at.button if (b.key or "") == turns[i].key).click().run()
        assert not at.exception, at.exception
    at.query_params["id"] = traj_id
    at.switch_page("pages/present.py").run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("unknown_pages", [False, True], ids=["pages-in-the-index", "pages-nowhere"])
def test_a_planted_page_path_is_never_read(data_root, tmp_path, opened, unknown_pages):
    traj, secret = _plant(data_root, tmp_path, unknown_pages=unknown_pages)
    opened.clear()  # planting wrote the secret file; from here on only the pages open files
    at = _draw_every_page(traj.id)
    assert opened, "the audit hook saw no file opened at all: it is not recording"
    assert not [p for p in opened if "outside" in p and "secret" in p], [p for p in opened if "secret" in p]
    assert str(secret.parent) not in " ".join(opened)
    assert QUESTION in " ".join(texts(at.markdown) + texts(at.text))


def test_a_record_naming_a_file_outside_its_folder_is_listed_as_unreadable(data_root, tmp_path, opened):
    traj = scripted_trajectory(data_root, QUESTION, SCRIPT)
    path = data_root / "trajectories" / traj.id / "trajectory.json"
    record = json.loads(path.read_text())
    view = next(t["observation"] for t in record["turns"] if t.get("observation"))
    view["file"] = "../../outside.jpg"
    path.write_text(json.dumps(record))
    opened.clear()
    at = app()
    at.switch_page("pages/trajectories.py").run()
    assert not at.exception, at.exception
    warnings = " ".join(texts(at.warning))
    assert "could not be read" in warnings
    why = " ".join(str(df.value.to_dict()) for df in at.dataframe)
    assert traj.id in why and "file" in why
    assert not [p for p in opened if "outside.jpg" in p]
