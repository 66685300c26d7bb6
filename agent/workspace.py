"""Where VRAG Studio keeps its data, which indexes it knows, and the settings a user chose.

No Streamlit here: the app (pages/common.py wraps these) and the CLI share it. The data root holds
everything the app writes (git-ignored by default):

    <data>/indexes/<name>/     one folder per named index (search_engine/store.py)
    <data>/trajectories/<id>/  every saved run (agent/trajectory.py)
    <data>/samples/            the generated sample report
    <data>/uploads/<index>/    files uploaded on the Library page (a zip is unpacked in a subfolder)
    <data>/settings.json       the Settings page's choices (endpoint, model, folders, search server, protocol, attention service)

`Settings` is what the Settings page edits; defaults come from the environment so a deployment can
preset them, and the settings file, once the user has saved something, wins over the environment.
The file is written atomically (a reader sees the old or the new file, never half of one) and read
with validation: a file that is not what we wrote gives a message for a person and the defaults.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

from agent.protocol import DEFAULT_PROFILE, PROFILES

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent  # the checkout
DATA_ENV = "VRAG_STUDIO_DATA"  # the data root (default ./data, git-ignored)
INDEX_ENV = "VRAG_STUDIO_INDEX"  # the index active at start: a name under data/indexes/ or a folder path
INDEX_MARKERS = ("config.json", "manifest.json")  # a folder holding one of these is an index (search_engine/store.py)
INDEX_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SAMPLE_INDEX = "sample"  # search_engine/sample_corpus.py builds it on first run
DELETING_PREFIX = ".deleting-"  # an index being deleted is first renamed to this (hidden) name


class WorkspaceError(Exception):
    """Something the user asked of the workspace that cannot be done; the message says why, for a person."""


# --- where data lives ----------------------------------------------------------------------------


def data_root() -> Path:
    return Path(os.environ.get(DATA_ENV) or ROOT / "data").resolve()


def indexes_dir() -> Path:
    return data_root() / "indexes"


def trajectories_dir() -> Path:
    return data_root() / "trajectories"


def samples_dir() -> Path:
    return data_root() / "samples"


def uploads_root() -> Path:
    return data_root() / "uploads"


def uploads_dir(index_name: str) -> Path:
    """Where files uploaded into the index `index_name` are kept (the index refers to them by path)."""
    return uploads_root() / index_name


def settings_file() -> Path:
    return data_root() / "settings.json"


# --- the indexes -----------------------------------------------------------------------------------


def is_index_folder(folder: Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and any((folder / name).is_file() for name in INDEX_MARKERS)


def check_index_name(name: str) -> str | None:
    """Why `name` cannot name a new index (None if it can): it becomes a folder name."""
    if not INDEX_NAME_RE.match(name or ""):
        return "An index name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit."
    return None


def configured_index() -> str:
    """What VRAG_STUDIO_INDEX names ("" if unset): an index name or a folder path."""
    return os.environ.get(INDEX_ENV, "").strip()


def index_folders(indexes: Path | None = None, configured: str | None = None) -> dict[str, Path]:
    """Every index the app knows, by name: <data>/indexes/*, plus the folder VRAG_STUDIO_INDEX names."""
    root = indexes_dir() if indexes is None else Path(indexes)
    configured = configured_index() if configured is None else configured.strip()
    found: dict[str, Path] = {}
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if not folder.name.startswith(".") and is_index_folder(folder):
                found[folder.name] = folder
    if configured and configured not in found:
        folder = Path(configured).expanduser()
        if not folder.is_absolute():
            folder = (ROOT / folder) if (ROOT / folder).exists() else root / configured
        if is_index_folder(folder):
            found.setdefault(folder.name, folder.resolve())
    return found


def choose_index(requested: str | None, folders: dict[str, Path], configured: str | None = None) -> str | None:
    """The index to show: `requested` if it is known, else the configured one, else the sample, else the first."""
    if not folders:
        return None
    if requested in folders:
        return requested
    configured = configured_index() if configured is None else configured
    preferred = [Path(configured).name if configured else None, SAMPLE_INDEX]
    return next((name for name in preferred if name in folders), next(iter(folders)))


def index_sources(index_folder: Path) -> dict[str, dict]:
    """{source path: {"sha256", "pages": [page ids], "complete"}} of an index, without opening it (no
    models, no retrievers, no lock: search_engine.store.read_sources); {} for a folder holding no index."""
    from search_engine.store import read_sources

    sources = read_sources(Path(index_folder))
    return {path: source for path, source in sources.items() if isinstance(source, dict)}


def index_page_ids(index_folder: Path) -> list[str]:
    pages = [source.get("pages", []) for source in index_sources(index_folder).values()]
    return [str(page) for group in pages if isinstance(group, list) for page in group]


@dataclass(frozen=True)
class DeletedIndex:
    name: str
    pages: int
    uploads_removed: int  # uploaded files deleted with it (0 unless asked)


def delete_index(name: str, folders: dict[str, Path] | None = None, *, with_uploads: bool = False) -> DeletedIndex:
    """Delete the index `name` under the data folder (and, if asked, the files uploaded into it).

    Refused (WorkspaceError) for an unknown name, an index outside <data>/indexes (one named at
    start-up by VRAG_STUDIO_INDEX is the user's own folder), and an index being written: we take the
    index's writer lock (search_engine/store.py) without waiting, so an ingest in this process or
    another one keeps its index. The folder is first renamed to a hidden name, so a crash midway
    never leaves a half-deleted index that looks like a real one; leftovers go on the next delete.
    Saved trajectories keep their own copies of the pages they saw and are not touched.
    """
    folders = index_folders() if folders is None else folders
    if name not in folders:
        raise WorkspaceError(f"There is no index named {name}.")
    folder = Path(folders[name]).resolve()
    root = indexes_dir().resolve()
    if folder.parent != root:
        raise WorkspaceError(f"The index {name} is the folder {folder}, which the app was started with; it is not under the data folder, so it is left alone.")
    pages = len(index_page_ids(folder))
    trash = root / f"{DELETING_PREFIX}{name}-{os.getpid()}-{time.monotonic_ns()}"
    with _writer_lock_or_refuse(folder, name):
        folder.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)
    _remove_leftovers(root)
    removed = 0
    uploads = uploads_dir(name)
    if with_uploads and uploads.is_dir():
        removed = sum(1 for p in uploads.rglob("*") if p.is_file())
        shutil.rmtree(uploads, ignore_errors=True)
    log.info("deleted index %s (%d pages, %d uploaded files)", name, pages, removed)
    return DeletedIndex(name, pages, removed)


@contextlib.contextmanager
def _writer_lock_or_refuse(folder: Path, name: str):
    """Hold the index's writer lock (the flock on <index>/.lock that every ingest takes) or refuse."""
    with open(folder / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkspaceError(f"The index {name} is being written to (documents are being added); delete it when that has finished.") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_leftovers(root: Path) -> None:
    for leftover in root.glob(f"{DELETING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)


# --- the settings ------------------------------------------------------------------------------------


@dataclass
class Settings:
    """The model endpoint, the model, a local model folder and the search server a user chose."""

    base_url: str = ""  # the OpenAI-compatible model server (vLLM)
    model: str = ""  # the served model name
    api_key: str = "EMPTY"
    transformers_model: str = ""  # a local Qwen2.5-VL folder for the in-process policy
    search_url: str = ""  # "" = search the active index in this process; else our search server's URL
    protocol: str = DEFAULT_PROFILE  # agent/protocol.py: the rules of the conversation with the model
    attention_url: str = ""  # "" = attention maps computed in this process; else an attention service's URL
    attention_token: str = ""  # the attention service's bearer token ("" when it asks for none)

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            base_url=os.environ.get("VRAG_BASE_URL", "http://127.0.0.1:8001/v1"),
            model=os.environ.get("VRAG_MODEL", "Qwen/Qwen2.5-VL-7B-Instruct"),
            api_key=os.environ.get("VRAG_API_KEY", "EMPTY"),
            transformers_model=os.environ.get("VRAG_TRANSFORMERS_MODEL", ""),
            search_url=os.environ.get("VRAG_SEARCH_URL", ""),
            protocol=_known_protocol(os.environ.get("VRAG_PROTOCOL", DEFAULT_PROFILE)),
            attention_url=os.environ.get("VRAG_ATTENTION_URL", ""),
            attention_token=os.environ.get("VRAG_ATTENTION_TOKEN", ""),
        )

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _known_protocol(name: str) -> str:
    if name in PROFILES:
        return name
    log.warning("VRAG_PROTOCOL=%r is not one of %s; using %s", name, ", ".join(PROFILES), DEFAULT_PROFILE)
    return DEFAULT_PROFILE


SETTINGS_LABELS = {  # how the Settings page names each field, for messages about the file
    "base_url": "endpoint URL",
    "model": "model name",
    "api_key": "API key",
    "transformers_model": "local model folder",
    "search_url": "search server URL",
    "protocol": "protocol",
    "attention_url": "attention service URL",
    "attention_token": "attention service token",
}


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    problem: str | None = None  # why (part of) the file was not used, for a person; None if all is well
    from_file: bool = False  # the file existed and gave at least one value


def load_settings(path: Path | None = None, defaults: Settings | None = None) -> LoadedSettings:
    """The saved settings over `defaults` (the environment's). Never raises: a missing file gives the
    defaults, an unreadable one the defaults and a message, a wrong value that field's default."""
    path = settings_file() if path is None else Path(path)
    defaults = Settings.from_env() if defaults is None else defaults
    if not path.exists():
        return LoadedSettings(defaults)
    unusable = f"The saved settings in {path} could not be read"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        return LoadedSettings(defaults, f"{unusable} ({e.__class__.__name__}: {e}); using the defaults.")
    except json.JSONDecodeError as e:
        return LoadedSettings(defaults, f"{unusable}: it is not valid JSON (line {e.lineno}, column {e.colno}); using the defaults. Saving settings keeps a copy of it.")
    if not isinstance(data, dict):
        return LoadedSettings(defaults, f"{unusable}: it holds a {type(data).__name__}, not a set of named settings; using the defaults. Saving settings keeps a copy of it.")
    values, wrong = defaults.to_dict(), []
    for key, value in data.items():
        if key not in values:
            log.info("settings file %s: ignoring unknown entry %r", path, key)
        elif isinstance(value, str) and (key != "protocol" or value in PROFILES):
            values[key] = value
        else:
            wrong.append(SETTINGS_LABELS.get(key, key))
    problem = None
    if wrong:
        problem = f"In the saved settings ({path}) the {', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not usable (not text, or a protocol other than {', '.join(PROFILES)}); using the default for {'it' if len(wrong) == 1 else 'them'}."
    return LoadedSettings(Settings(**values), problem, from_file=True)


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    """Write the settings atomically, readable by this user only (the file holds the API key).

    A file that load_settings could not read is kept beside it as settings.json.unreadable before
    it is replaced, so what the user had is never lost. Raises OSError if the folder is not writable.
    """
    path = settings_file() if path is None else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not _readable_as_settings(path):
        os.replace(path, unreadable_settings_copy(path))
    write_atomically(path, [(json.dumps(settings.to_dict(), indent=1) + "\n").encode("utf-8")], mode=0o600, durable=True)
    return path


def write_atomically(path: Path, chunks, mode: int = 0o644, durable: bool = False) -> int:
    """Write the byte `chunks` to `path` through a temporary file moved into place: a reader sees the
    old file or the new one, never part of one, and a failure (an exception from `chunks` too) leaves
    no temporary file. `durable` also fsyncs. Returns the bytes written."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)  # created 0600
    written = 0
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                written += len(chunk)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return written


def unreadable_settings_copy(path: Path | None = None) -> Path:
    """Where save_settings keeps a settings file it could not read: settings.json.unreadable beside it."""
    path = settings_file() if path is None else Path(path)
    return path.with_name(path.name + ".unreadable")


def _readable_as_settings(path: Path) -> bool:
    """A JSON object (perhaps with a wrong value in it): replacing it loses nothing the user can't see."""
    try:
        return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except (OSError, UnicodeDecodeError, ValueError):
        return False
