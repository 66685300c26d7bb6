"""Sharing trajectories: hostile zips and folders are refused with a reason and nothing lands outside
the store, valid ones import whole; `python -m agent trajectories list|import|export` as a person
uses them (real files, real zips, a real process for the round trip)."""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agent import trajectory_io
from agent.__main__ import main
from agent.loop import AgentConfig, new_trajectory, run_to_end
from agent.trajectory import TRAJECTORY_FILE, Trajectory, TrajectoryStore, image_path, page_image_path
from agent.trajectory_io import TrajectoryImportError, export_zip, import_folder, import_zip
from support.agent_doubles import MemorySearcher, ScriptedPolicy, noise_page

ROOT = Path(__file__).resolve().parents[2]
T = "<think>t</think>"


def saved_trajectory(folder: Path, question: str = "What is it?") -> Trajectory:
    pages = {"deck_1": noise_page(800, 600, 1), "deck_2": noise_page(600, 800, 2)}
    policy = ScriptedPolicy([T + "<search>a</search>", T + "<bbox>[10, 10, 300, 200]</bbox>", T + "<answer>12%</answer>"])
    traj = new_trajectory(question, policy, AgentConfig(max_turns=4))
    run_to_end(traj, policy, MemorySearcher(pages), AgentConfig(max_turns=4))
    traj.save(folder / traj.id)
    return traj


def zip_of(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return out.getvalue()


def folder_entries(folder: Path, prefix: str) -> dict[str, bytes]:
    return {f"{prefix}/{p.name}": p.read_bytes() for p in folder.iterdir()}


@pytest.fixture()
def source(tmp_path) -> tuple[Path, Trajectory]:
    traj = saved_trajectory(tmp_path / "source")
    return tmp_path / "source" / traj.id, traj


# --- hostile zips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../escaped/trajectory.json", "/tmp/escaped/trajectory.json", "..\\..\\escaped\\trajectory.json",
                                  "ok/../../escaped.json", "C:\\escaped\\trajectory.json"])
def test_zip_with_an_unsafe_path_is_refused_whole(name, source, tmp_path):
    folder, _ = source
    entries = folder_entries(folder, folder.name) | {name: b"{}"}
    with pytest.raises(TrajectoryImportError, match="unsafe path"):
        import_zip(zip_of(entries), TrajectoryStore(tmp_path / "store"))
    assert not (tmp_path / "store").exists() and not (tmp_path / "escaped").exists() and not Path("/tmp/escaped").exists()


def test_zip_with_a_symlink_is_refused(source, tmp_path):
    folder, _ = source
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in folder_entries(folder, folder.name).items():
            z.writestr(name, data)
        link = zipfile.ZipInfo(f"{folder.name}/turn00-page.jpg.lnk")
        link.external_attr = (0o120777 << 16)  # a symbolic link, as `zip --symlinks` stores it
        z.writestr(link, "/etc/passwd")
    with pytest.raises(TrajectoryImportError, match="symbolic link"):
        import_zip(out.getvalue(), TrajectoryStore(tmp_path / "store"))


def test_zip_bomb_by_inflation_ratio_is_refused(tmp_path):
    bomb = zip_of({"run/trajectory.json": b"{}", "run/turn00-page.jpg": b"\0" * (64 * 1024**2)})  # 64 MB of zeros in ~64 KB
    assert len(bomb) < 200_000
    with pytest.raises(TrajectoryImportError, match="zip bomb"):
        import_zip(bomb, TrajectoryStore(tmp_path / "store"))


def test_zip_larger_than_the_budget_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(trajectory_io, "MAX_UNPACKED_BYTES", 2 * 1024**2)
    big = zip_of({f"run/{i}.bin": os.urandom(1024**2) for i in range(3)})  # incompressible: no ratio to catch
    with pytest.raises(TrajectoryImportError, match="unpacks to more than 2 MB"):
        import_zip(big, TrajectoryStore(tmp_path / "store"))


def test_zip_with_too_many_entries_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(trajectory_io, "MAX_ENTRIES", 100)
    many = zip_of({f"run{i}/trajectory.json": b"{}" for i in range(101)})
    with pytest.raises(TrajectoryImportError, match="101 entries, more than the 100 allowed"):
        import_zip(many, TrajectoryStore(tmp_path / "store"))


def test_zip_whose_header_lies_about_the_size_is_refused(tmp_path):
    """The headers say 10 bytes; the entry inflates to 2 MB. zipfile reads no more than the header says
    (its CRC check then fails), and our own count of bytes written would stop it too."""
    data = bytearray(zip_of({"run/trajectory.json": b"{" + b" " * (2 * 1024**2) + b"}"}))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed size in both headers
        at = data.index(signature)
        data[at + offset: at + offset + 4] = struct.pack("<I", 10)
    with pytest.raises(TrajectoryImportError, match="more than its header says|could not be unpacked"):
        import_zip(bytes(data), TrajectoryStore(tmp_path / "store"))
    assert not (tmp_path / "store").exists()


def test_not_a_zip_and_an_encrypted_entry(tmp_path):
    with pytest.raises(TrajectoryImportError, match="not a zip archive"):
        import_zip(b"PK\x03\x04 definitely not a zip", TrajectoryStore(tmp_path))
    encrypted = bytearray(zip_of({"run/trajectory.json": b"{}"}, compression=zipfile.ZIP_STORED))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the 'encrypted' flag bit
        at = encrypted.index(signature)
        encrypted[at + offset] |= 0x1
    with pytest.raises(TrajectoryImportError, match="could not be unpacked"):
        import_zip(bytes(encrypted), TrajectoryStore(tmp_path))


def test_a_zip_of_good_and_bad_trajectories_imports_the_good_and_says_why_not_the_rest(source, tmp_path):
    folder, traj = source
    record = json.loads((folder / TRAJECTORY_FILE).read_text(encoding="utf-8"))
    hostile = json.loads(json.dumps(record)) | {"id": "20990101-000000-evil00"}
    hostile["turns"][0]["observation"]["file"] = "../../../../../../etc/passwd"
    wrong_type = json.loads(json.dumps(record)) | {"id": "20990101-000000-wrong0"}
    wrong_type["turns"][0]["hits"][0]["score"] = "high"
    fake_image = json.loads(json.dumps(record)) | {"id": "20990101-000000-fake00"}
    entries = folder_entries(folder, f"share/{folder.name}")
    for tid, rec in (("evil", hostile), ("wrong", wrong_type), ("fake", fake_image)):
        entries |= {k.replace(folder.name, tid): v for k, v in folder_entries(folder, f"share/{folder.name}").items()}
        entries[f"share/{tid}/{TRAJECTORY_FILE}"] = json.dumps(rec).encode()
    entries["share/fake/turn00-page.jpg"] = b"\xff\xd8\xff\xe0 a JPEG header and nothing else"
    store = TrajectoryStore(tmp_path / "store")
    result = import_zip(zip_of(entries), store, name="share.zip")
    assert result.imported == [traj.id] and result.already_there == []
    reasons = dict(result.failed)
    assert set(reasons) == {"share.zip/share/evil", "share.zip/share/wrong", "share.zip/share/fake"}
    assert "turns.0.observation.file" in reasons["share.zip/share/evil"] and "plain" in reasons["share.zip/share/evil"]
    assert "turns.0.hits.0.score: Input should be a valid number" in reasons["share.zip/share/wrong"]
    assert "turn00-page.jpg is not a readable JPEG or PNG image" in reasons["share.zip/share/fake"]
    assert "/tmp/" not in " ".join(reasons.values())  # the temporary unpacking folder is not shown
    assert store.ids() == [traj.id] and store.load(traj.id) == traj


# --- folders ---------------------------------------------------------------------------------------


def test_folder_import_refuses_links_and_copies_only_the_folders_own_files(source, tmp_path):
    folder, traj = source
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOP SECRET")
    linked = tmp_path / "linked" / "20990101-000000-link00"
    shutil.copytree(folder, linked)
    record = json.loads((linked / TRAJECTORY_FILE).read_text(encoding="utf-8")) | {"id": linked.name}
    (linked / TRAJECTORY_FILE).write_text(json.dumps(record), encoding="utf-8")
    (linked / "notes.txt").symlink_to(secret)
    (folder / "sub").mkdir()
    (folder / "sub" / "stray.bin").write_bytes(b"not part of the trajectory")
    (tmp_path / "linked" / "20990101-000000-dir000").symlink_to(folder, target_is_directory=True)  # not entered
    store = TrajectoryStore(tmp_path / "store")
    result = import_folder(tmp_path / "linked", store)
    assert result.imported == [] and len(result.failed) == 1 and "holds links (notes.txt)" in result.failed[0][1]
    result = import_folder(folder, store)
    assert result.imported == [traj.id]
    copied = sorted(p.name for p in store.path(traj.id).iterdir())
    assert copied == sorted(p.name for p in folder.iterdir() if p.is_file())  # no 'sub'
    assert all(b"TOP SECRET" not in p.read_bytes() for p in store.path(traj.id).iterdir())


def test_export_zip_leaves_out_links_and_subfolders(source, tmp_path):
    folder, traj = source
    (tmp_path / "secret.txt").write_bytes(b"TOP SECRET")
    (folder / "extra.txt").symlink_to(tmp_path / "secret.txt")
    (folder / "sub").mkdir()
    data = export_zip(folder)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = sorted(z.namelist())
        assert all(b"TOP SECRET" not in z.read(n) for n in names)
    assert names == sorted(f"{folder.name}/{p.name}" for p in folder.iterdir() if p.is_file() and not p.is_symlink())
    assert TRAJECTORY_FILE in {Path(n).name for n in names}


# --- the safe readers pages use ----------------------------------------------------------------------


def test_image_path_refuses_what_leads_outside(source, tmp_path):
    folder, traj = source
    view = traj.turns[0].observation
    assert image_path(folder, view) == (folder / view.file).resolve()
    from dataclasses import replace

    from agent.trajectory import UnsafePathError

    for name in ["/etc/passwd", "../../etc/passwd", "sub/x.jpg", "trajectory.json", "x.npy"]:
        with pytest.raises(UnsafePathError):
            image_path(folder, replace(view, file=name))
    (tmp_path / "outside.jpg").write_bytes(b"\xff\xd8\xff")
    (folder / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    with pytest.raises(UnsafePathError, match="leads outside"):
        image_path(folder, replace(view, file="link.jpg"))


def test_page_image_path_looks_pages_up_by_id_in_a_known_index(tmp_path):
    from support.agent_index import open_tiny_index

    index = open_tiny_index()
    path = page_image_path(index, "report_1")
    assert path is not None and path.is_file() and path.is_relative_to(Path(index.folder).resolve())
    assert page_image_path(index, "no_such_page") is None
    assert page_image_path(index, "../../etc/passwd") is None
    assert page_image_path(index, 123) is None


# --- the CLI -----------------------------------------------------------------------------------------


def test_cli_list_import_and_export(source, tmp_path, capsys):
    folder, traj = source
    store = tmp_path / "store"
    shared = tmp_path / "shared.zip"
    shared.write_bytes(export_zip(folder))

    assert main(["trajectories", "import", str(shared), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"imported: {traj.id}" in out and "1 imported, 0 already there, 0 refused" in out
    assert main(["trajectories", "import", str(shared), "--store", str(store)]) == 0
    assert f"already in the store (left as it was): {traj.id}" in capsys.readouterr().out

    broken = store / "20990101-000000-broken"
    broken.mkdir()
    (broken / TRAJECTORY_FILE).write_text(json.dumps({"schema_version": 1, "id": broken.name, "created_at": "2099-01-01T00:00:00+00:00",
                                                      "question": 5, "policy": {}}), encoding="utf-8")
    assert main(["trajectories", "list", "--store", str(store)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{traj.id}  answered    3 turns  scripted") and "What is it?" in lines[0]
    assert lines[1].startswith("20990101-000000-broken  unreadable: ") and "question: Input should be a valid string" in lines[1]

    html, zipped = tmp_path / "out" / "report.html", tmp_path / "out" / "run.zip"
    assert main(["trajectories", "export", traj.id, "--store", str(store), "--html", str(html), "--zip", str(zipped)]) == 0
    assert f"wrote: {html}" in capsys.readouterr().out
    assert "data:image/jpeg;base64," in html.read_text(encoding="utf-8")
    assert import_zip(zipped.read_bytes(), TrajectoryStore(tmp_path / "again")).imported == [traj.id]

    assert main(["trajectories", "export", "20990101-000000-broken", "--store", str(store), "--html", str(html)]) == 1
    assert "cannot be exported" in capsys.readouterr().err
    assert main(["trajectories", "export", "nope", "--store", str(store), "--html", str(html)]) == 2
    assert capsys.readouterr().err.startswith("error: no trajectory 'nope'")
    assert main(["trajectories", "export", "../../etc", "--store", str(store), "--zip", str(zipped)]) == 2
    assert capsys.readouterr().err.startswith("error: not a trajectory id")
    assert main(["trajectories", "export", traj.id, "--store", str(store)]) == 2
    assert "--html FILE" in capsys.readouterr().err


def test_cli_import_refusals_exit_non_zero_with_reasons(source, tmp_path, capsys):
    folder, traj = source
    bad = tmp_path / "bad.zip"
    record = json.loads((folder / TRAJECTORY_FILE).read_text(encoding="utf-8")) | {"id": "20990101-000000-evil00"}
    record["turns"][0]["observation"]["file"] = "/etc/passwd"
    bad.write_bytes(zip_of(folder_entries(folder, folder.name) | {f"evil/{TRAJECTORY_FILE}": json.dumps(record).encode()}))
    store = tmp_path / "store"
    assert main(["trajectories", "import", str(bad), "--store", str(store)]) == 1
    captured = capsys.readouterr()
    assert f"imported: {traj.id}" in captured.out and "1 imported, 0 already there, 1 refused" in captured.out
    assert "refused: bad.zip/evil: " in captured.err and "turns.0.observation.file" in captured.err
    evil = tmp_path / "evil.zip"
    evil.write_bytes(zip_of({"../x/trajectory.json": b"{}"}))
    assert main(["trajectories", "import", str(evil), "--store", str(store)]) == 1
    assert capsys.readouterr().err == "refused: evil.zip: the zip holds an unsafe path: '../x/trajectory.json'\n"
    assert main(["trajectories", "import", str(tmp_path / "missing.zip"), "--store", str(store)]) == 2


def test_cli_round_trip_as_real_processes(source, tmp_path):
    folder, traj = source
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = lambda *argv: subprocess.run([sys.executable, "-m", "agent", "trajectories", *argv], cwd=ROOT, capture_output=True,
                                       text=True, timeout=120, env=env)
    imported = run("import", str(folder.parent), "--store", str(tmp_path / "store"))
    assert imported.returncode == 0 and f"imported: {traj.id}" in imported.stdout, imported.stderr
    listed = run("list", "--store", str(tmp_path / "store"))
    assert listed.returncode == 0 and listed.stdout.startswith(traj.id)
    exported = run("export", traj.id, "--store", str(tmp_path / "store"), "--zip", str(tmp_path / "x.zip"))
    assert exported.returncode == 0 and "Traceback" not in exported.stderr
    assert import_zip(tmp_path / "x.zip", TrajectoryStore(tmp_path / "third")).imported == [traj.id]
    for p in folder.iterdir():  # every file arrives byte for byte
        assert (tmp_path / "third" / traj.id / p.name).read_bytes() == p.read_bytes()
