"""Streamlit glue shared by every page: thin wrappers over agent/ and search_engine/, and the caches.

What is shared and what is not (two browser tabs must never mix their runs):
- `st.cache_resource` holds objects that are expensive and hold no user's state: one
  `DocumentIndex` per index folder (with its embedder and OCR engine), the relevance-map box cache
  per index, the in-process transformers model, and the background jobs (pages/jobs.py).
- `st.session_state` holds everything that belongs to one user: the settings, the active index, the
  run in progress (its trajectory and the worker producing its turns), evaluation results.
  Runs and trajectories are never cached. Policies are built per run, except the in-process
  transformers one, which is only model weights (`complete(messages)` keeps no state between calls).
- What survives a reload: the active index, in the page's URL (?index=name, checked against the
  known indexes), and the settings, in <data>/settings.json (agent/workspace.py).

The logic behind these names lives in Streamlit-free modules: agent/workspace.py (data folders,
indexes, settings), agent/question_sets.py (example questions, question sets), agent/jobs.py.
Heavy libraries (torch, sentence-transformers, faiss, PyMuPDF, openai) are imported inside the
functions that need them, so the app draws its first page in a few seconds.
"""
from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import streamlit as st

from agent import question_sets, workspace
from agent.question_sets import ExampleQuestion, QuestionSet  # noqa: F401 (re-exported for pages)

log = logging.getLogger(__name__)

ROOT = workspace.ROOT
DATA_ENV = workspace.DATA_ENV
INDEX_ENV = workspace.INDEX_ENV
INDEX_MARKERS = workspace.INDEX_MARKERS
INDEX_NAME_RE = workspace.INDEX_NAME_RE
QUESTION_SETS = ROOT / "bench" / "questions"  # the demo corpus's full dev and held-out test sets, for Evaluate
INDEX_PARAM = "index"  # the query parameter naming the page's index

Settings = workspace.Settings
WorkspaceError = workspace.WorkspaceError
data_root, indexes_dir, trajectories_dir, samples_dir = workspace.data_root, workspace.indexes_dir, workspace.trajectories_dir, workspace.samples_dir
is_index_folder, check_index_name = workspace.is_index_folder, workspace.check_index_name
settings_file, unreadable_settings_copy = workspace.settings_file, workspace.unreadable_settings_copy
index_sources, index_page_ids, uploads_dir = workspace.index_sources, workspace.index_page_ids, workspace.uploads_dir


class UserFacingError(Exception):
    """Something the user can fix (a missing model folder, a server that is down): shown as is."""


def _leave_pages_folder_mode() -> None:
    """Run the page under app.py even when the browser opened it by its own URL.

    Streamlit 1.67 decides per process whether an app is an old-style multipage app: a `pages/`
    folder beside the main script makes it one until some session runs `st.navigation` (app.py).
    So after a server start, the first reload of /library?index=x ran pages/library.py directly:
    no app.py, hence no top navigation, no wide layout, and a sidebar listing every module of
    pages/. Every page imports this module, so turning that mode off here and rerunning once
    brings such a session under app.py, on the page and with the query parameters it asked for.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without this flag has no such mode
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


_leave_pages_folder_mode()


# --- the indexes ----------------------------------------------------------------------------------


def index_folders() -> dict[str, Path]:
    """Every index the app knows, by name: data/indexes/*, plus the folder named by VRAG_STUDIO_INDEX."""
    return workspace.index_folders()


def active_index() -> tuple[str, Path] | None:
    """The page's active index (name, folder); None if there is none.

    The URL's ?index= wins when it names a known index (a reload or a shared link keeps the
    view); else the session's choice (Library page); else the configured index, the sample, the
    first. The URL is then set to the answer, so the next reload finds it.
    """
    folders = index_folders()
    if not folders:
        return None
    requested = st.query_params.get(INDEX_PARAM)
    name = workspace.choose_index(requested if requested in folders else st.session_state.get("active_index"), folders)
    if requested and requested not in folders:
        st.warning(f"There is no index named {md_escape(requested)}; showing {md_escape(name)} instead.", icon=":material/warning:")
    st.session_state["active_index"] = name
    if requested != name:
        st.query_params[INDEX_PARAM] = name
    return name, folders[name]


def set_active_index(name: str) -> None:
    st.session_state["active_index"] = name
    st.query_params[INDEX_PARAM] = name


def delete_index(name: str, *, with_uploads: bool = False) -> workspace.DeletedIndex:
    """Delete an index (agent/workspace.py) and forget its cached objects. WorkspaceError if refused."""
    deleted = workspace.delete_index(name, index_folders(), with_uploads=with_uploads)
    _index.clear()  # a cached DocumentIndex would keep serving the deleted pages (or a new index of that name)
    box_cache.clear()
    if st.session_state.get("active_index") == name:
        st.session_state.pop("active_index")
    if st.query_params.get(INDEX_PARAM) == name:
        del st.query_params[INDEX_PARAM]
    return deleted


# --- per-session settings, kept in <data>/settings.json ---------------------------------------


def settings() -> Settings:
    """This session's settings: read from the settings file when the session starts."""
    if "settings" not in st.session_state:
        loaded = workspace.load_settings()
        st.session_state["settings"] = loaded.settings
        st.session_state["settings_saved"] = loaded.settings.to_dict()  # written only once the user changes something
        st.session_state["settings_problem"] = loaded.problem
        if loaded.problem:
            st.toast(md_escape(loaded.problem), icon=":material/warning:")
    return st.session_state["settings"]


def settings_problem() -> str | None:
    """Why the settings file could not be (fully) used when this session started; None if all was well."""
    settings()
    return st.session_state.get("settings_problem")


def save_settings(s: Settings) -> bool:
    """Write the settings file if they changed since they were loaded or last saved (so a visit alone
    never pins the environment's defaults in the file). True if written; UserFacingError if it cannot be."""
    current = s.to_dict()
    if st.session_state.get("settings_saved") == current:
        return False
    try:
        workspace.save_settings(s)
    except OSError as e:
        raise UserFacingError(f"The settings could not be saved to {workspace.settings_file()} ({e.strerror or e}); they stay for this session only.") from e
    st.session_state["settings_saved"] = current
    st.session_state["settings_problem"] = None
    return True


# --- cached heavy objects (shared by all sessions, holding no user state) -----------------------


@st.cache_resource(show_spinner=False)
def _index(folder: str):
    import faiss

    from search_engine.index import DocumentIndex

    # The app answers one query at a time per session on a 2-core machine. Letting torch and FAISS
    # spread one small query over every core made a query embedding 10x slower when two sessions
    # (or an ingestion) were busy (bench/relevance_speed.py: p50 420 ms with 2 threads, 37 ms with 1).
    # The query embedder runs on ONNX Runtime on one thread (search_engine/minilm_onnx.py), so torch
    # is not imported for a search (2-3 CPU-s of the first search turn). If something loaded it
    # already it gets one thread too; loaded later (the embedder's torch fallback, which is logged),
    # it keeps torch's default.
    faiss.omp_set_num_threads(1)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    return DocumentIndex.open(folder)


def open_index(folder: Path):
    """The DocumentIndex for `folder`, opened once per process and shared by all sessions.

    Opening reads the page records and the FAISS index; the index loads its embedder and OCR
    engine itself on first use (the first search or ingest), so browsing pages stays fast.
    """
    return _index(str(Path(folder).resolve()))


@st.cache_resource(show_spinner=False)
def box_cache(index_folder: str):
    """Box embeddings per page for retrieval relevance maps (search_engine/relevance.py), one per index,
    made with that index's own embedder so a map scores text the way the index searches it."""
    from search_engine.relevance import BoxCache
    from search_engine.tokenize import tokenize

    return BoxCache(embedder=open_index(Path(index_folder)).embedder, tokenize=tokenize)


# --- messages ------------------------------------------------------------------------------------

# ":" too: it stops GFM auto-linking "http://..." (which would show the escapes inside the link)
# and Streamlit's ":emoji:" / ":color[...]" shortcodes.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


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

    Returns True when some index has pages. The build runs as a shared background job
    (pages/jobs.py), so several tabs opened at once share one build and navigating away does not
    stop it; a build killed with the server resumes where it stopped (ingestion is incremental).
    """
    from pages import jobs

    folder = indexes_dir() / workspace.SAMPLE_INDEX
    job = jobs.get_job(str(folder))
    if (job is None or job.finished) and any(index_page_ids(f) for f in index_folders().values()):
        return True
    if job is not None and job.finished and job.error:
        st.error(f"The sample index could not be built: {md_escape(job.error)}")
        if not st.button("Try again", key="sample_retry"):
            return False
        job = None
    if job is None or job.finished:
        index = open_index(folder)  # cheap: models load on first use, inside the job

        def build(progress):
            from search_engine.sample_corpus import write_sample_corpus

            progress(0, 0, "loading the OCR and embedding models (first time only)")
            report = index.ingest(write_sample_corpus(samples_dir()), progress=progress)
            if report.skipped:  # our own generated file: a skip here is a bug
                raise RuntimeError(f"the sample report failed to ingest: {report.skipped}")
            return report

        job = jobs.start_job(str(folder), "Building the sample index", build)
    st.info("First run: building the sample index from the project's own sample report (about a minute, once).")
    jobs.wait(job)
    st.rerun()
    return True  # not reached: st.rerun() starts the page again


# --- policies -------------------------------------------------------------------------------------


def default_policy() -> str:
    name = os.environ.get("VRAG_POLICY", "offline")
    return name if name in ("vllm", "transformers", "offline") else "offline"


@st.cache_resource(show_spinner=False)
def _transformers_policy(model_folder: str):
    from agent.policies import make_policy

    return make_policy("transformers", model=model_folder)


def _for_the_app(error) -> str:
    """A PolicyError as the page shows it: its message, then what to do in the app (never shell advice)."""
    hint = getattr(error, "app_hint", None)
    return f"{error} {hint}" if hint else str(error)


def transformers_policy(model_folder: str):
    """The in-process model, loaded once per folder and shared: it holds weights, not a user's state
    (`complete(messages)` depends only on the messages it is given). The attention panel re-uses
    its loaded weights. UserFacingError when the folder holds no usable model, said for a person
    (agent/model_folder.py checks the folder before anything loads)."""
    from agent.model_folder import check_model_folder
    from agent.policies import PolicyError

    check = check_model_folder(model_folder)
    if not check.ok:
        raise UserFacingError(check.summary() + " Set the folder on the Settings page.")
    try:
        return _transformers_policy(model_folder)
    except PolicyError as e:
        raise UserFacingError(_for_the_app(e)) from e


# --- example questions and question sets -------------------------------------------------------------


@st.cache_data(show_spinner=False)
def _shipped_sets() -> list[QuestionSet]:
    return question_sets.shipped_sets()


@st.cache_data(show_spinner=False)
def _evaluation_sets() -> list[QuestionSet]:
    return question_sets.question_sets([QUESTION_SETS])


def example_questions(index_folder: Path) -> list[ExampleQuestion]:
    """The first eight shipped example questions whose gold pages are all in this index."""
    return question_sets.example_questions(_shipped_sets(), index_page_ids(index_folder))


def evaluation_sets() -> list[QuestionSet]:
    """Question sets for the Evaluate page: the shipped ones, then bench/questions/*.json."""
    return _evaluation_sets()
