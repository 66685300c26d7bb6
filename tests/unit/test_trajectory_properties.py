"""Property-based: a real saved trajectory, mutated every way hypothesis finds (field types, file
names, hostile paths, ids, missing, swapped and linked files), must
- load or raise TrajectoryFormatError, and nothing else;
- never break the store's listing (it is listed, or listed as unreadable with a reason);
- when it loads, export to HTML and zip without error and without reading anything outside its
  folder: secret files planted beside the store are watched with an audit hook on every `open`,
  and their bytes (and base64) must never appear in the HTML or the zip.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import report, trajectory_io
from agent.loop import AgentConfig, new_trajectory, run_to_end
from agent.trajectory import TRAJECTORY_FILE, Trajectory, TrajectoryFormatError, TrajectoryStore
from support.agent_doubles import MemorySearcher, ScriptedPolicy, noise_page

T = "<think>t</think>"
SECRET_TEXT = b"TOP-SECRET-0123456789-do-not-leak\n"

# --- watching every file opened -----------------------------------------------------------------

_WATCH: dict = {"outside": None, "opened": None}


def _audit(event: str, args: tuple) -> None:
    if event != "open" or _WATCH["outside"] is None or not args:
        return
    path = args[0]
    if isinstance(path, int) or path is None:
        return
    try:
        resolved = Path(os.fsdecode(path)).resolve()
    except (OSError, ValueError, TypeError):
        return
    if resolved.is_relative_to(_WATCH["outside"]):
        _WATCH["opened"].append(str(resolved))


sys.addaudithook(_audit)  # process-wide and permanent; inert unless a test sets _WATCH["outside"]


@contextlib.contextmanager
def watching(outside: Path):
    """Record every file opened under `outside` while the block runs."""
    _WATCH["outside"], _WATCH["opened"] = outside.resolve(), []
    try:
        yield _WATCH["opened"]
    finally:
        _WATCH["outside"] = None


# --- a real saved trajectory ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A trajectory from the real loop (search, crop, invalid, crop of crop, search, answer) and a map."""
    pages = {"deck_1": noise_page(1024, 768, 1), "deck_2": noise_page(900, 1200, 2)}
    policy = ScriptedPolicy([T + "<search>a</search>", T + "<bbox>[10, 10, 300, 200]</bbox>", "broken",
                             T + "<bbox>[0, 0, 100, 100]</bbox>", T + "<search>b</search>", T + "<answer>12%</answer>"])
    config = AgentConfig(max_turns=6)
    traj = new_trajectory("多少?", policy, config, gold={"answer": "12%", "pages": ["deck_2"]}, index="demo")
    run_to_end(traj, policy, MemorySearcher(pages), config)
    traj.turns[1].maps["attention:turn00-page.jpg"] = "attention-turn01-turn00-page.npy"
    traj.rewards = {"reward": 0.9}
    folder = traj.save(tmp_path_factory.mktemp("template") / traj.id)
    np.save(folder / "attention-turn01-turn00-page.npy", np.ones((4, 5), dtype=np.float32))
    assert Trajectory.load(folder) == traj
    return folder


def plant_secrets(outside: Path) -> dict[str, bytes]:
    """Files a hostile record would like to leak: a JPEG, a PNG, a map and a text file."""
    outside.mkdir(parents=True)
    secrets = {}
    for name, fmt in (("secret.jpg", "JPEG"), ("secret.png", "PNG")):
        buf = io.BytesIO()
        noise_page(64, 48, 99).save(buf, format=fmt)
        secrets[name] = buf.getvalue() + SECRET_TEXT if fmt == "JPEG" else buf.getvalue()
    np.save(outside / "secret.npy", np.full((3, 3), 7.0))
    secrets["secret.npy"] = (outside / "secret.npy").read_bytes()
    secrets["passwd"] = SECRET_TEXT
    for name, data in secrets.items():
        (outside / name).write_bytes(data)
    return secrets


# --- mutations -----------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
HOSTILE_NAMES = [
    "/etc/passwd", "../../../../../../etc/passwd", "../../outside/secret.jpg", "../outside/secret.jpg", "OUTSIDE/secret.jpg",
    "OUTSIDE/secret.npy", "../../outside/secret.npy", "..", ".", "", "a/b.jpg", "a\\b.jpg", "link.jpg", "link.npy",
    "trajectory.json", ".hidden.jpg", "x\x00.jpg", "C:\\Windows\\win.ini", "file:///etc/passwd", "turn00-page.jpg",
    "../../escape", "a" * 300, "con", "20990101-000000-other",
]


def paths_of(value, prefix=()) -> list[tuple]:
    """Every path to a value inside the record (dict keys and list indices)."""
    found = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            found += paths_of(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += paths_of(v, prefix + (i,))
    return found


def set_at(record, path: tuple, value, delete: bool = False):
    if not path:
        return value
    parent = record
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        parent.pop(path[-1], None)
    elif delete and isinstance(parent, list):
        parent.pop(path[-1])
    else:
        parent[path[-1]] = value
    return record


@st.composite
def record_mutation(draw, record: dict):
    path = draw(st.sampled_from(paths_of(record)))
    kind = draw(st.sampled_from(["value", "hostile", "delete"]))
    if kind == "delete":
        return ("delete", path, None)
    value = draw(JSON) if kind == "value" else draw(st.sampled_from(HOSTILE_NAMES))
    return ("set", path, value)


FILE_MUTATIONS = st.tuples(
    st.sampled_from(["delete", "garbage", "text", "link to secret", "link to secret dir", "link to passwd", "swap", "link loop"]),
    st.integers(0, 30),
)


def apply_file_mutation(folder: Path, outside: Path, kind: str, pick: int) -> None:
    files = sorted(p for p in folder.iterdir() if p.name != TRAJECTORY_FILE) or [folder / "turn00-page.jpg"]
    target = files[pick % len(files)]
    if target.exists() or target.is_symlink():
        target.unlink()
    if kind == "garbage":
        target.write_bytes(os.urandom(64))
    elif kind == "text":
        target.write_bytes(b"\xff\xd8\xff" + b"inside the folder, not an image")  # starts like a JPEG, is not one
    elif kind == "link to secret":
        target.symlink_to(outside / ("secret.npy" if target.suffix == ".npy" else "secret.jpg"))
    elif kind == "link to secret dir" and not (folder / "OUTSIDE").is_symlink():
        (folder / "OUTSIDE").symlink_to(outside, target_is_directory=True)
    elif kind == "link to passwd":
        target.symlink_to(outside / "passwd")
    elif kind == "link loop":
        target.symlink_to(target.name)  # a link to itself
    elif kind == "swap" and len(files) > 1 and not files[(pick + 1) % len(files)].is_symlink():
        shutil.copyfile(files[(pick + 1) % len(files)], target)  # another image's bytes under this name


def leaked(blob: bytes, secrets: dict[str, bytes]) -> list[str]:
    out = []
    for name, data in secrets.items():
        for form in (data, base64.b64encode(data), SECRET_TEXT.strip(), base64.b64encode(SECRET_TEXT.strip())):
            if form and form in blob:
                out.append(name)
                break
    return out


def zip_contents(data: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return b"".join(z.read(i) for i in z.infolist())


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_trajectories_load_or_fail_cleanly_and_never_leak(template, data):
    base = json.loads((template / TRAJECTORY_FILE).read_text(encoding="utf-8"))
    record_mutations = data.draw(st.lists(record_mutation(base), max_size=3), label="record")
    file_mutations = data.draw(st.lists(FILE_MUTATIONS, max_size=2), label="files")
    with tempfile.TemporaryDirectory(prefix="vrag-prop-") as tmp:
        root = Path(tmp)
        outside = root / "outside"
        secrets = plant_secrets(outside)
        store = TrajectoryStore(root / "store")
        folder = store.root / template.name
        shutil.copytree(template, folder)
        record = json.loads(json.dumps(base))
        for op, path, value in record_mutations:
            try:
                record = set_at(record, path, value, delete=op == "delete")
            except (KeyError, IndexError, TypeError):  # an earlier mutation removed the place
                pass
        (folder / TRAJECTORY_FILE).write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
        for kind, pick in file_mutations:
            apply_file_mutation(folder, outside, kind, pick)

        with watching(outside) as opened:
            try:
                loaded = Trajectory.load(folder)
            except TrajectoryFormatError as e:
                loaded = None
                assert str(e).startswith(str(folder)) and len(str(e)) < 2000
            good, bad = store.list()  # never raises
            assert [t.id for t in good] + [tid for tid, _ in bad] == [template.name]
            assert all(reason for _, reason in bad)
            if loaded is not None:
                html = report.trajectory_html(loaded, folder).encode("utf-8")
                exported = trajectory_io.export_zip(folder)
        assert opened == [], f"read outside the trajectory folder: {opened}"
        if loaded is not None:
            assert leaked(html, secrets) == [] and leaked(zip_contents(exported), secrets) == []
            # what exported can be imported again, or is refused with a reason (never half-imported)
            other = TrajectoryStore(root / "other")
            with watching(outside) as opened:
                try:
                    result = trajectory_io.import_zip(exported, other)
                except trajectory_io.TrajectoryImportError:
                    result = None
            assert opened == []
            if result is not None:
                assert len(result.imported) + len(result.failed) == 1
                if result.imported:
                    assert other.load(result.imported[0]) == loaded
                assert other.list()[1] == []


def test_the_unmutated_template_round_trips(template, tmp_path):
    """The property test starts from a record that loads, exports and imports whole."""
    loaded = Trajectory.load(template)
    html = report.trajectory_html(loaded, template)
    assert html.count("data:image/jpeg;base64,") == 6  # 2 pages + 2 crops shown, 2 acted-on pages with boxes
    result = trajectory_io.import_zip(trajectory_io.export_zip(template), TrajectoryStore(tmp_path))
    assert result.imported == [loaded.id] and TrajectoryStore(tmp_path).load(loaded.id) == loaded
