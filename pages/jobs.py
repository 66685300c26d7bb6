"""Shared background work with progress: building an index.

An index is shared by every session, so its ingestion is too: it runs in a background thread, one
job per index folder at a time, keyed by the folder. The page that started it (or any other session
looking at that index) polls the job and draws its progress bar; leaving the page does not stop
the ingestion, and a second session asking for the same folder joins the running job instead of
starting another. Per-user work (an agent run, an evaluation) does NOT go here: see stepper.py.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import streamlit as st

from pages.common import md_escape

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]


@dataclass
class Job:
    key: str
    label: str
    done: int = 0
    total: int = 0
    message: str = ""
    result: Any = None
    error: str | None = None
    finished: bool = False
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    def progress(self, done: int, total: int, message: str = "") -> None:
        """The callback handed to `DocumentIndex.ingest` (called from the job's thread)."""
        self.done, self.total, self.message = done, total, message

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started


class _Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}


@st.cache_resource(show_spinner=False)
def _registry() -> _Registry:
    return _Registry()


def get_job(key: str) -> Job | None:
    return _registry().jobs.get(key)


def start_job(key: str, label: str, work: Callable[[Progress], Any], expected: tuple[type[BaseException], ...] = ()) -> Job:
    """Run `work(progress)` in a background thread unless a job with this key is already running.

    Exceptions of the `expected` types are user-facing problems: their message is shown as is.
    Any other exception is a bug: logged with its traceback, shown by type and message.
    """
    registry = _registry()
    with registry.lock:
        job = registry.jobs.get(key)
        if job is not None and not job.finished:
            return job
        job = Job(key=key, label=label)
        registry.jobs[key] = job

    def run() -> None:
        try:
            job.result = work(job.progress)
        except expected as e:
            job.error = str(e)
        except Exception as e:
            log.exception("background job %s failed", key)
            job.error = f"{e.__class__.__name__}: {e}"
        finally:
            job.ended = time.monotonic()
            job.finished = True

    threading.Thread(target=run, name=f"job:{key}", daemon=True).start()
    return job


def wait(job: Job, poll_seconds: float = 0.25) -> Job:
    """Draw the job's progress bar until it finishes (a rerun interrupts the wait, never the job)."""
    bar = st.progress(job.fraction, text=_text(job))
    while not job.finished:
        time.sleep(poll_seconds)
        bar.progress(job.fraction, text=_text(job))
    bar.empty()
    return job


def _text(job: Job) -> str:
    counts = f"{job.done} / {job.total} pages, " if job.total else ""
    message = f": {job.message}" if job.message else ""
    return md_escape(f"{job.label} ({counts}{job.seconds:.0f} s){message}")
