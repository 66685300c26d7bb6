"""Streamlit glue shared by every page: where data lives, the heavy objects we cache, per-session settings.

What is shared and what is not (two browser tabs must never mix their runs):
- `st.cache_resource` holds objects that are expensive and hold no user's state: the embedder, the OCR
  engine, one `DocumentIndex` per index folder (plus a lock so two sessions never ingest into the
  same folder at once), and the sample-index build job.
- `st.session_state` holds everything that belongs to one user: the settings, the active index, the
  run in progress (its trajectory and the generator producing its turns), evaluation results.
  Agents, policies and trajectories are never cached.

Heavy libraries (torch, sentence-transformers, faiss, PyMuPDF, openai) are imported inside the
functions that need them, so the app draws its first page in a few seconds.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, fields
from pathlib import Path

import streamlit as st

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "VRAG_STUDIO_DATA"  # the data root (default ./data, git-ignored)
INDEX_ENV = "VRAG_STUDIO_INDEX"  # the index active at start: a name under data/indexes/ or a folder path
MANIFEST_NAMES = ("manifest.json",)  # a folder holding one of these is an index
INDEX_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# --- where data lives ------------------------------------------------------------------------


def data_root() -> Path:
    return Path(os.environ.get(DATA_ENV) or ROOT / "data").resolve()


def indexes_dir() -> Path:
    return data_root() / "indexes"


def trajectories_dir() -> Path:
    return data_root() / "trajectories"


def samples_dir() -> Path:
    return data_root() / "samples"


def is_index_folder(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in MANIFEST_NAMES)


def check_index_name(name: str) -> str | None:
    """Why `name` cannot name a new index (None if it can): it becomes a folder name."""
    if not INDEX_NAME_RE.match(name or ""):
        return "An index name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit."
    return None


def index_folders() -> dict[str, Path]:
    """Every index the app knows, by name: data/indexes/*, plus the folder named by VRAG_STUDIO_INDEX."""
    found: dict[str, Path] = {}
    root = indexes_dir()
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if not folder.name.startswith(".") and is_index_folder(folder):
                found[folder.name] = folder
    configured = os.environ.get(INDEX_ENV, "").strip()
    if configured and configured not in found:
        folder = Path(configured).expanduser()
        if not folder.is_absolute():
            folder = (ROOT / folder) if (ROOT / folder).exists() else root / configured
        if is_index_folder(folder):
            found.setdefault(folder.name, folder.resolve())
    return found


def active_index() -> tuple[str, Path] | None:
    """The session's active index (name, folder), chosen on the Library page; None if there is none."""
    folders = index_folders()
    if not folders:
        return None
    name = st.session_state.get("active_index")
    if name not in folders:
        configured = os.environ.get(INDEX_ENV, "").strip()
        preferred = [Path(configured).name if configured else None, "sample"]
        name = next((n for n in preferred if n in folders), next(iter(folders)))
        st.session_state["active_index"] = name
    return name, folders[name]


def set_active_index(name: str) -> None:
    st.session_state["active_index"] = name


# --- per-session settings ----------------------------------------------------------------------


@dataclass
class Settings:
    """What the Settings page edits; defaults come from the environment so a deployment can preset them."""

    base_url: str = ""  # the OpenAI-compatible model server (vLLM)
    model: str = ""  # the served model name
    api_key: str = "EMPTY"
    transformers_model: str = ""  # a local Qwen2.5-VL folder for the in-process policy
    search_url: str = ""  # "" = search the active index in this process; else our search server's URL

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            base_url=os.environ.get("VRAG_BASE_URL", "http://127.0.0.1:8001/v1"),
            model=os.environ.get("VRAG_MODEL", "Qwen/Qwen2.5-VL-7B-Instruct"),
            api_key=os.environ.get("VRAG_API_KEY", "EMPTY"),
            transformers_model=os.environ.get("VRAG_TRANSFORMERS_MODEL", ""),
            search_url=os.environ.get("VRAG_SEARCH_URL", ""),
        )

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def settings() -> Settings:
    if "settings" not in st.session_state:
        st.session_state["settings"] = Settings.from_env()
    return st.session_state["settings"]


# --- cached heavy objects (shared by all sessions, holding no user state) -----------------------


@st.cache_resource(show_spinner=False)
def embedder(name: str | None = None):
    from search_engine.embedders import load_embedder

    return load_embedder(name) if name else load_embedder()


@st.cache_resource(show_spinner=False)
def ocr_engine():
    from search_engine.ocr import OcrEngine

    return OcrEngine()


@st.cache_resource(show_spinner=False)
def _index(folder: str):
    from search_engine.index import DocumentIndex

    return DocumentIndex.open(folder, embedder=embedder(), ocr=ocr_engine())


def open_index(folder: Path):
    """The DocumentIndex for `folder`, opened once per process (loading the embedder the first time)."""
    return _index(str(Path(folder).resolve()))


@st.cache_resource(show_spinner=False)
def index_lock(folder: str) -> threading.Lock:
    """One lock per index folder: ingestion into a folder is serialised across sessions."""
    return threading.Lock()


def searcher(index_folder: Path):
    """The agent's search backend for this session: the active index in process, or the search server."""
    from agent.search import HttpSearcher, LocalSearcher

    url = settings().search_url.strip()
    if url:
        return HttpSearcher(url)
    return LocalSearcher(open_index(index_folder))


# --- messages ------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def md_escape(text: str) -> str:
    """`text` made inert for Streamlit markdown (labels, captions): no markup, links or HTML."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def report_unexpected(error: Exception) -> None:
    """A bug in our code: log the traceback for the developer, show the user one clear line."""
    log.error("unexpected error on a page", exc_info=error)
    st.error(
        f"Something went wrong on this page ({md_escape(error.__class__.__name__)}: {md_escape(str(error)[:500])}). "
        "The other pages keep working; the details are in the server log."
    )


# --- the first run ------------------------------------------------------------------------------


def ensure_some_index() -> bool:
    """On a fresh checkout there is no index yet: build the sample one, showing its progress.

    Returns True when an index exists. The build runs as a shared background job (pages/jobs.py), so
    several tabs opened at once share one build and navigating away does not stop it.
    """
    if index_folders():
        return True
    from pages import jobs

    folder = indexes_dir() / "sample"

    def build(progress):
        from search_engine.sample_corpus import build_sample_index

        progress(0, 0, "loading the text embedder (first time only)")
        model = embedder()
        return build_sample_index(data_root(), progress=progress, embedder=model)

    st.info("First run: building the sample index from the project's own sample report. This takes about a minute, once.")
    job = jobs.start_job(str(folder), "Building the sample index", build)
    jobs.wait(job)
    if job.error:
        st.error(f"The sample index could not be built: {md_escape(job.error)}")
        return False
    st.rerun()
    return True  # not reached: st.rerun() starts the page again, now with an index
