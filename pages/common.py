"""Streamlit glue shared by every page: where data lives, the heavy objects we cache, per-session settings.

What is shared and what is not (two browser tabs must never mix their runs):
- `st.cache_resource` holds objects that are expensive and hold no user's state: one
  `DocumentIndex` per index folder (with its embedder and OCR engine), the relevance-map box cache
  per index, the in-process transformers model, and the ingestion jobs (pages/jobs.py: one at a
  time per index folder, whichever session started it).
- `st.session_state` holds everything that belongs to one user: the settings, the active index, the
  run in progress (its trajectory and the generator producing its turns), evaluation results.
  Runs and trajectories are never cached. Policies are built per run, except the in-process
  transformers one, which is only model weights (`complete(messages)` keeps no state between calls).

Heavy libraries (torch, sentence-transformers, faiss, PyMuPDF, openai) are imported inside the
functions that need them, so the app draws its first page in a few seconds.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from agent import workspace

log = logging.getLogger(__name__)

ROOT = workspace.ROOT
DATA_ENV = workspace.DATA_ENV
INDEX_ENV = "VRAG_STUDIO_INDEX"  # the index active at start: a name under data/indexes/ or a folder path
INDEX_MARKERS = ("config.json", "manifest.json")  # a folder holding one of these is an index (search_engine/store.py)
INDEX_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# --- where data lives (agent/workspace.py) ------------------------------------------------------

data_root, indexes_dir, trajectories_dir, samples_dir = workspace.data_root, workspace.indexes_dir, workspace.trajectories_dir, workspace.samples_dir


def is_index_folder(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in INDEX_MARKERS)


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


Settings = workspace.Settings


def settings() -> Settings:
    if "settings" not in st.session_state:
        st.session_state["settings"] = Settings.from_env()
    return st.session_state["settings"]


# --- cached heavy objects (shared by all sessions, holding no user state) -----------------------


@st.cache_resource(show_spinner=False)
def _index(folder: str):
    import faiss
    import torch

    from search_engine.index import DocumentIndex

    # The app answers one query at a time per session on a 2-core machine. Letting torch and FAISS
    # spread one small query over every core made a query embedding 10x slower when two sessions
    # (or an ingestion) were busy (bench/relevance_speed.py: p50 420 ms with 2 threads, 37 ms with 1).
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    return DocumentIndex.open(folder)


def open_index(folder: Path):
    """The DocumentIndex for `folder`, opened once per process and shared by all sessions.

    Opening reads the page records and the FAISS index; the index loads its embedder and OCR
    engine itself on first use (the first search or ingest), so browsing pages stays fast.
    """
    return _index(str(Path(folder).resolve()))


def warm_up(searcher) -> None:
    """Load an in-process index's embedder now (under the caller's spinner), not inside the first turn."""
    index = getattr(searcher, "index", None)
    if index is not None and len(index):
        _ = index.embedder  # the property loads the model


def searcher(index_folder: Path):
    """The agent's search backend for this session: the active index in process, or the search server."""
    from agent.search import HttpSearcher, LocalSearcher

    url = settings().search_url.strip()
    if url:
        return HttpSearcher(url)
    return LocalSearcher(open_index(index_folder))


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

    folder = indexes_dir() / "sample"
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


@st.cache_resource(show_spinner=False)
def box_cache(index_folder: str):
    """Box embeddings per page for retrieval relevance maps (search_engine/relevance.py), one per index,
    made with that index's own embedder so a map scores text the way the index searches it."""
    from search_engine.relevance import BoxCache
    from search_engine.tokenize import tokenize

    return BoxCache(embedder=open_index(Path(index_folder)).embedder, tokenize=tokenize)


# --- policies and example questions ---------------------------------------------------------------


class UserFacingError(Exception):
    """Something the user can fix (a missing model folder, a server that is down): shown as is."""


def default_policy() -> str:
    name = os.environ.get("VRAG_POLICY", "offline")
    return name if name in ("vllm", "transformers", "offline") else "offline"


@st.cache_resource(show_spinner=False)
def _transformers_policy(model_folder: str):
    from agent.policies import make_policy

    return make_policy("transformers", model=model_folder)


def transformers_policy(model_folder: str):
    """The in-process model, loaded once per folder and shared: it holds weights, not a user's state
    (`complete(messages)` depends only on the messages it is given). The attention panel re-uses
    its loaded weights. UserFacingError when the folder holds no usable model."""
    from agent.policies import PolicyError

    try:
        return _transformers_policy(model_folder)
    except PolicyError as e:
        raise UserFacingError(str(e)) from e


def build_policy(name: str, s: Settings, index_folder: Path):
    """A policy for one run. Raises UserFacingError with the policy's own message when it cannot start."""
    from agent.policies import PolicyError, make_policy

    try:
        if name == "vllm":
            return make_policy("vllm", base_url=s.base_url, model=s.model, api_key=s.api_key)
        if name == "transformers":
            if not s.transformers_model.strip():
                raise UserFacingError("The transformers policy needs a local Qwen2.5-VL model folder: set it on the Settings page (weights cannot be downloaded here).")
            return transformers_policy(s.transformers_model.strip())
        return make_policy("offline", index=open_index(index_folder))
    except PolicyError as e:
        raise UserFacingError(str(e)) from e


@dataclass(frozen=True)
class ExampleQuestion:
    question: str
    answer: str
    pages: tuple[str, ...]  # gold page ids
    boxes: tuple[tuple[str, tuple[float, ...]], ...] = ()  # (page id, evidence box) where the set gives one

    def gold(self) -> dict:
        """The trajectory's `gold` record (agent/rewards.py; boxes feed agent/attention.py's gold share)."""
        gold = {"answer": self.answer, "pages": list(self.pages)}
        if self.boxes:
            gold["boxes"] = {page: list(box) for page, box in self.boxes}
        return gold


def example_questions(index_folder: Path) -> list[ExampleQuestion]:
    """Questions whose gold pages are all in this index: the sample report's, and the bench question sets'."""
    page_ids = set(index_page_ids(index_folder))
    found: list[ExampleQuestion] = []
    for example in _all_examples():
        if example.pages and all(p in page_ids for p in example.pages):
            found.append(example)
    return found[:8]


def index_sources(index_folder: Path) -> dict[str, dict]:
    """{source path: {"sha256", "pages": [page ids]}} from the index's manifest.json (search_engine/store.py).

    Cheap (no embedder, no FAISS), so pages can list indexes and their pages without opening them.
    """
    import json

    try:
        sources = json.loads((Path(index_folder) / "manifest.json").read_text(encoding="utf-8")).get("sources", {})
        return sources if isinstance(sources, dict) else {}
    except (OSError, ValueError, AttributeError) as e:
        log.info("no readable manifest in %s: %s", index_folder, e)
        return {}


def index_page_ids(index_folder: Path) -> list[str]:
    return [page for source in index_sources(index_folder).values() for page in source.get("pages", [])]


QUESTION_SETS = ROOT / "bench" / "questions"


@st.cache_data(show_spinner=False)
def _all_examples() -> list[ExampleQuestion]:
    """The sample report's example questions, then every question set under bench/questions/."""
    from agent.evaluate import DatasetError, load_dataset
    from search_engine.sample_questions import EXAMPLE_QUESTIONS

    found = [ExampleQuestion(e.question, e.answer, (e.page_id,)) for e in EXAMPLE_QUESTIONS]
    for path in sorted(QUESTION_SETS.glob("*.json")) if QUESTION_SETS.is_dir() else []:
        try:
            found += [ExampleQuestion(e.query, e.reference_answer, tuple(e.gold_pages), _evidence(e)) for e in load_dataset(path)]
        except DatasetError as e:
            log.warning("skipping question set %s: %s", path, e)
    return found


def _evidence(example) -> tuple:
    """The evidence box of a one-page example (bench/questions give `evidence_box` in page pixels)."""
    box = example.evidence_box
    if len(example.gold_pages) == 1 and isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
        return ((example.gold_pages[0], tuple(float(v) for v in box)),)
    return ()
