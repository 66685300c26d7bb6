"""The app's one registry of background jobs (agent/jobs.py), and a job's progress bar.

One `JobRegistry` per server process, shared by every session (`st.cache_resource`): an index's
ingestion belongs to the index, not to the tab that started it, so leaving the page does not stop
it and a second tab joins it. Per-user work (an agent run, an evaluation) does NOT go here.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import streamlit as st

from agent.jobs import Job, JobRegistry, Progress
from pages.common import md_escape

__all__ = ["Job", "Progress", "registry", "get_job", "start_job", "wait"]


@st.cache_resource(show_spinner=False)
def registry() -> JobRegistry:
    return JobRegistry()


def get_job(key: str) -> Job | None:
    return registry().get(key)


def start_job(key: str, label: str, work: Callable[[Progress], Any], expected: tuple[type[BaseException], ...] = ()) -> Job:
    """See JobRegistry.start: `work(progress)` in the background, one job per key."""
    return registry().start(key, label, work, expected)


def wait(job: Job, poll_seconds: float = 0.25) -> Job:
    """Draw the job's progress bar until it finishes (a rerun interrupts the wait, never the job)."""
    bar = st.progress(job.fraction, text=md_escape(job.describe()))
    while not job.finished:
        time.sleep(poll_seconds)
        bar.progress(job.fraction, text=md_escape(job.describe()))
    bar.empty()
    return job
