"""agent/workspace.py without Streamlit: data folders, index discovery, deleting an index, the settings file."""
from __future__ import annotations

import fcntl
import json
import stat
import threading

import pytest

from agent import workspace
from agent.workspace import Settings, WorkspaceError


def make_index(folder, pages=("p_1",), source="/docs/a.pdf"):
    """An index folder as search_engine/store.py leaves it (config + manifest), enough for discovery."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "manifest.json").write_text(json.dumps({"sources": {source: {"sha256": "x", "pages": list(pages)}}}))
    (folder / "images").mkdir()
    for page in pages:
        (folder / "images" / f"{page}.jpg").write_bytes(b"jpeg")
    return folder


@pytest.fixture
def data(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv(workspace.DATA_ENV, str(root))
    monkeypatch.delenv(workspace.INDEX_ENV, raising=False)
    for var in ("VRAG_BASE_URL", "VRAG_MODEL", "VRAG_API_KEY", "VRAG_TRANSFORMERS_MODEL", "VRAG_SEARCH_URL"):
        monkeypatch.delenv(var, raising=False)
    return root


def test_data_folders_follow_the_environment(data):
    assert workspace.data_root() == data.resolve()
    assert workspace.indexes_dir() == data.resolve() / "indexes"
    assert workspace.uploads_dir("mine") == data.resolve() / "uploads" / "mine"
    assert workspace.settings_file() == data.resolve() / "settings.json"


def test_index_discovery_skips_hidden_and_non_index_folders_and_adds_the_configured_one(data, tmp_path, monkeypatch):
    indexes = data / "indexes"
    make_index(indexes / "b")
    make_index(indexes / "a", pages=())
    make_index(indexes / ".deleting-old-1-2")
    (indexes / "not-an-index").mkdir()
    outside = make_index(tmp_path / "elsewhere" / "corpus")
    assert list(workspace.index_folders()) == ["a", "b"]
    monkeypatch.setenv(workspace.INDEX_ENV, str(outside))
    folders = workspace.index_folders()
    assert list(folders) == ["a", "b", "corpus"] and folders["corpus"] == outside.resolve()
    # the configured index is preferred, then the sample, then the first; a known request wins
    assert workspace.choose_index(None, folders) == "corpus"
    assert workspace.choose_index("b", folders) == "b"
    assert workspace.choose_index("nope", folders, configured="") == "a"
    assert workspace.choose_index(None, {}) is None


def test_index_pages_come_from_the_manifest_and_a_broken_manifest_gives_none(data):
    folder = make_index(data / "indexes" / "x", pages=("d_1", "d_2"))
    assert workspace.index_page_ids(folder) == ["d_1", "d_2"]
    (folder / "manifest.json").write_text("{ not json")
    assert workspace.index_page_ids(folder) == [] and workspace.index_sources(folder) == {}
    (folder / "manifest.json").write_text(json.dumps({"sources": {"a": "not a record", "b": {"pages": "nope"}}}))
    assert workspace.index_page_ids(folder) == []


@pytest.mark.parametrize("name,ok", [("my-reports", True), ("a.b_c", True), ("../escape", False), ("", False), (".hidden", False), ("x" * 65, False), ("a/b", False)])
def test_index_names_are_plain_folder_names(name, ok):
    assert (workspace.check_index_name(name) is None) == ok


def test_deleting_an_index_removes_its_folder_and_if_asked_its_uploads(data):
    make_index(data / "indexes" / "keep")
    make_index(data / "indexes" / "gone", pages=("g_1", "g_2"))
    uploads = workspace.uploads_dir("gone")
    (uploads / "sub").mkdir(parents=True)
    (uploads / "a.pdf").write_bytes(b"%PDF")
    (uploads / "sub" / "b.png").write_bytes(b"png")
    deleted = workspace.delete_index("gone")
    assert (deleted.name, deleted.pages, deleted.uploads_removed) == ("gone", 2, 0)
    assert list(workspace.index_folders()) == ["keep"]
    assert not any(p.name.startswith(".deleting") for p in (data / "indexes").iterdir())  # no leftovers
    assert (uploads / "a.pdf").is_file()  # kept unless asked
    make_index(data / "indexes" / "gone")
    assert workspace.delete_index("gone", with_uploads=True).uploads_removed == 2
    assert not uploads.exists()


def test_deleting_is_refused_for_unknown_outside_and_busy_indexes(data, tmp_path, monkeypatch):
    with pytest.raises(WorkspaceError, match="no index named nope"):
        workspace.delete_index("nope")
    outside = make_index(tmp_path / "mine" / "corpus")
    monkeypatch.setenv(workspace.INDEX_ENV, str(outside))
    with pytest.raises(WorkspaceError, match="not under the data folder"):
        workspace.delete_index("corpus")
    assert outside.is_dir()

    busy = make_index(data / "indexes" / "busy")
    held, release = threading.Event(), threading.Event()

    def ingest():  # what IndexStore.writer_lock does while an ingest runs
        with open(busy / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            held.set()
            release.wait(10)

    thread = threading.Thread(target=ingest)
    thread.start()
    held.wait(10)
    try:
        with pytest.raises(WorkspaceError, match="being written to"):
            workspace.delete_index("busy")
        assert workspace.is_index_folder(busy)
    finally:
        release.set()
        thread.join(10)
    workspace.delete_index("busy")
    assert not busy.exists()


def test_leftovers_of_an_interrupted_delete_are_cleaned_by_the_next(data):
    leftover = make_index(data / "indexes" / ".deleting-old-1-1")
    make_index(data / "indexes" / "x")
    workspace.delete_index("x")
    assert not leftover.exists()


# --- settings ----------------------------------------------------------------------------------------


def test_settings_default_to_the_environment_and_the_file_wins(data, monkeypatch):
    monkeypatch.setenv("VRAG_BASE_URL", "http://env:1/v1")
    loaded = workspace.load_settings()
    assert loaded.settings.base_url == "http://env:1/v1" and loaded.problem is None and not loaded.from_file
    chosen = Settings(base_url="http://gpu:8001/v1", model="m", api_key="secret", transformers_model="/models/q", search_url="")
    path = workspace.save_settings(chosen)
    assert path == workspace.settings_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the API key
    again = workspace.load_settings()
    assert again.settings == chosen and again.problem is None and again.from_file
    assert [p.name for p in path.parent.iterdir()] == ["settings.json"]  # no temporary file left behind


@pytest.mark.parametrize("content,says", [
    ("{ this is not json", "not valid JSON"),
    ("[1, 2, 3]", "holds a list"),
    (b"\xff\xfe\x00garbage", "could not be read"),
])
def test_an_unreadable_settings_file_gives_the_defaults_a_message_and_is_kept_when_saving(data, content, says):
    path = workspace.settings_file()
    path.parent.mkdir(parents=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    loaded = workspace.load_settings()
    assert loaded.settings == Settings.from_env() and says in loaded.problem and str(path) in loaded.problem
    workspace.save_settings(Settings(base_url="http://new/v1"))
    assert workspace.load_settings().settings.base_url == "http://new/v1"
    kept = path.with_name("settings.json.unreadable")
    assert kept.read_bytes() == (content if isinstance(content, bytes) else content.encode())  # nothing the user had is lost


def test_a_wrong_value_falls_back_for_that_field_only(data):
    path = workspace.settings_file()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"base_url": "http://kept/v1", "model": 7, "api_key": None, "unknown": "ignored"}))
    loaded = workspace.load_settings()
    assert loaded.settings.base_url == "http://kept/v1"
    assert loaded.settings.model == Settings.from_env().model and loaded.settings.api_key == Settings.from_env().api_key
    assert "model name, API key are not usable" in loaded.problem


def test_saving_where_no_folder_can_be_made_raises_oserror(data):
    data.write_text("a file where the data folder should be")
    with pytest.raises(OSError):
        workspace.save_settings(Settings())
    assert workspace.load_settings().problem is None  # nothing there to read: the defaults, quietly


def test_the_protocol_is_saved_and_an_unknown_one_falls_back_to_the_default(data):
    from agent.protocol import DEFAULT_PROFILE, PROFILES

    assert Settings().protocol == DEFAULT_PROFILE == "training"
    other = next(p for p in PROFILES if p != DEFAULT_PROFILE)
    workspace.save_settings(Settings(protocol=other, attention_url="http://gpu:8010", attention_token="t"))
    loaded = workspace.load_settings()
    assert (loaded.settings.protocol, loaded.settings.attention_url, loaded.settings.attention_token) == (other, "http://gpu:8010", "t")
    workspace.settings_file().write_text(json.dumps({"protocol": "made-up", "model": "kept"}))
    loaded = workspace.load_settings()
    assert loaded.settings.protocol == DEFAULT_PROFILE and loaded.settings.model == "kept"
    assert "protocol" in loaded.problem and "training" in loaded.problem
