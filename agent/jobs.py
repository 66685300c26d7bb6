"""Shared background work with progress (building an index, computing attention maps).

An index is shared by every session, so its ingestion is too: it runs in a background thread, one
job per key (an index folder) at a time. Whoever started it, and any other session looking at the
same key, reads the job's progress; a second request for a key whose job is still running joins
that job instead of starting another. Per-user work (an agent run, an evaluation) does not go here.

No Streamlit here: the app keeps one `JobRegistry` for the whole process (pages/jobs.py caches it
and draws a job's progress bar); tests make their own.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, total, message), as DocumentIndex.ingest calls it


@dataclass
class Job:
    key: str
    label: str
    done: int = 0
    total: int = 0
    message: str = ""
    result: Any = None
    error: str | None = None  # for a person: an expected problem's message, or a bug's type and message
    finished: bool = False
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    def progress(self, done: int, total: int, message: str = "") -> None:
        """The progress callback handed to the work (called from the job's thread)."""
        self.done, self.total, self.message = done, total, message

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def describe(self) -> str:
        """One line for a progress bar: label, counts, time, and the work's last message."""
        counts = f"{self.done} / {self.total} pages, " if self.total else ""
        message = f": {self.message}" if self.message else ""
        return f"{self.label} ({counts}{self.seconds:.0f} s){message}"


class JobRegistry:
    """The jobs of one process, by key. Thread-safe; a finished job stays readable until replaced."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def get(self, key: str) -> Job | None:
        return self._jobs.get(key)

    def running(self, key: str) -> bool:
        job = self._jobs.get(key)
        return job is not None and not job.finished

    def start(self, key: str, label: str, work: Callable[[Progress], Any], expected: tuple[type[BaseException], ...] = ()) -> Job:
        """Run `work(progress)` in a background thread unless a job with this key is already running.

        Exceptions of the `expected` types are problems the user can act on: their message is kept
        as is. Any other exception is a bug: logged with its traceback, kept by type and message.
        """
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and not job.finished:
                return job
            job = Job(key=key, label=label)
            self._jobs[key] = job

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
