"""A real deadline on a blocking call: the caller gets its answer back on time, whatever the call does.

Socket timeouts bound each read, not the call: a server that sends a byte a second never trips a
3-second read timeout. `run_before` runs the call in a daemon thread and waits for it at most
`seconds`; when time is up it raises `DeadlinePassed` at once and sets the call's `cancelled`
event, so a call that checks it between reads (the vLLM policy does, per chunk) stops soon after.
A call that never checks it runs on in the background until it ends by itself; its result is
dropped. Daemon threads do not hold up the interpreter's exit.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

T = TypeVar("T")


class DeadlinePassed(TimeoutError):
    """The call did not finish before its deadline (`seconds` is the time it was given)."""

    def __init__(self, seconds: float):
        super().__init__(f"not done within {seconds:g} s")
        self.seconds = seconds


def run_before(call: Callable[[threading.Event], T], seconds: float, name: str = "deadline-call") -> T:
    """`call(cancelled)`'s result, or DeadlinePassed once `seconds` have passed.

    An exception raised by `call` is raised here unchanged.
    """
    if seconds <= 0:
        raise DeadlinePassed(seconds)
    cancelled = threading.Event()
    done = threading.Event()
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["value"] = call(cancelled)
        except BaseException as e:  # handed to the caller, who decides
            outcome["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, name=name, daemon=True).start()
    if not done.wait(seconds):
        cancelled.set()
        raise DeadlinePassed(seconds)
    if "error" in outcome:
        raise outcome.pop("error")
    return outcome["value"]


class Deadline:
    """A moment in the future (monotonic clock); None means never."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at
