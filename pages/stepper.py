"""Long work that belongs to one user, driven one step at a time across Streamlit reruns.

Streamlit re-executes a page from the top whenever the user touches a widget. The agent loop and
the evaluation are generators, so we keep the generator itself in `st.session_state`: each script
run first draws what is already done, then advances the generator one step at a time, drawing
each step as it arrives. Moving a slider in the middle of a run therefore costs nothing: the next
script run picks the work up where it was. Stop ends the work after the current step.

Threads: with Streamlit's default `runner.fastReruns`, a rerun starts a new script thread at once
while the old one is still inside a step (a model call, say) and only stops at its next `st.*`
call. So a step runs under a lock: the new thread waits for the step in flight, which has already
been recorded (`on_step` runs under the same lock), and pages draw from the record (the
trajectory's turns), never from the items they happened to receive. Nothing here is shared
between sessions.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)


@dataclass
class Stepper:
    steps: Iterator[Any]
    on_step: Callable[[Any], None] = lambda item: None  # record a step (e.g. save the trajectory)
    on_end: Callable[[str], None] = lambda status: None  # called once with the final status
    status: str = "running"  # running | done | stopped | failed
    error: str | None = None  # a bug in library code that ended the work (shown, never a traceback)
    stop_requested: bool = False
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def step(self) -> bool:
        """Advance once and record the step; False once the work is over (done, stopped or failed)."""
        with self._lock:
            if not self.running:
                return False
            if self.stop_requested:
                self._end("stopped")
                return False
            try:
                item = next(self.steps)
            except StopIteration:
                self._end("done")
                return False
            except Exception as e:  # a bug in library code: record it, keep the app alive
                log.exception("work failed")
                self.error = f"{e.__class__.__name__}: {e}"
                self._end("failed")
                return False
            self.on_step(item)
            return True

    def stop(self) -> None:
        """End the work now if no step is in flight, else right after that step."""
        self.stop_requested = True
        if self._lock.acquire(blocking=False):
            try:
                if self.running:
                    self._end("stopped")
            finally:
                self._lock.release()

    def _end(self, status: str) -> None:
        if status == "stopped":
            close = getattr(self.steps, "close", None)
            if close is not None:
                close()
        self.status = status
        self.ended = time.monotonic()
        self.on_end(status)
