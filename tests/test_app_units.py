"""The app's glue without a page: the per-session stepper, the shared background jobs, markdown escaping."""
from __future__ import annotations

import threading
import time

import pytest

from pages import jobs
from pages.common import md_escape
from pages.stepper import Stepper


def counting(n: int, log: list):
    try:
        for i in range(n):
            yield i
    finally:
        log.append("closed")


def test_stepper_records_every_step_and_ends_once():
    recorded, ends, log = [], [], []
    stepper = Stepper(counting(3, log), on_step=recorded.append, on_end=ends.append)
    while stepper.step():
        pass
    assert recorded == [0, 1, 2] and ends == ["done"] and stepper.status == "done" and log == ["closed"]
    assert stepper.step() is False and ends == ["done"]


def test_stop_between_steps_closes_the_generator():
    recorded, ends, log = [], [], []
    stepper = Stepper(counting(10, log), on_step=recorded.append, on_end=ends.append)
    stepper.step()
    stepper.stop()
    assert stepper.status == "stopped" and log == ["closed"] and ends == ["stopped"]
    assert stepper.step() is False and recorded == [0]


def test_stop_during_a_step_takes_effect_after_it_and_keeps_it():
    """A rerun (new script thread) presses Stop while the old thread is inside a model call."""
    inside, release, log, recorded = threading.Event(), threading.Event(), [], []

    def slow():
        try:
            yield "first"
            inside.set()
            release.wait(5)
            yield "second (in flight when Stop was pressed)"
            yield "third (never produced)"
        finally:
            log.append("closed")

    stepper = Stepper(slow(), on_step=recorded.append)
    stepper.step()
    old_thread = threading.Thread(target=stepper.step)
    old_thread.start()
    inside.wait(5)
    stepper.stop()  # the lock is held: only a request
    assert stepper.running and stepper.stop_requested
    release.set()
    old_thread.join(5)
    assert stepper.step() is False  # the new thread ends the work
    assert recorded == ["first", "second (in flight when Stop was pressed)"]
    assert stepper.status == "stopped" and log == ["closed"]


def test_a_bug_in_the_work_fails_the_stepper_with_a_message():
    def broken():
        yield 1
        raise ZeroDivisionError("division by zero")

    ends = []
    stepper = Stepper(broken(), on_end=ends.append)
    assert stepper.step() is True
    assert stepper.step() is False
    assert stepper.status == "failed" and stepper.error == "ZeroDivisionError: division by zero" and ends == ["failed"]


def wait_done(job, seconds=10):
    deadline = time.monotonic() + seconds
    while not job.finished:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return job


def test_jobs_run_in_the_background_and_share_one_run_per_key():
    gate = threading.Event()

    def work(progress):
        progress(1, 2, "half")
        gate.wait(5)
        progress(2, 2, "all")
        return "built"

    first = jobs.start_job("unit:key", "Building", work)
    second = jobs.start_job("unit:key", "Building again", work)
    assert second is first and not first.finished  # a second session joins the running job
    gate.set()
    wait_done(first)
    assert (first.result, first.error, first.done, first.total, first.fraction) == ("built", None, 2, 2, 1.0)
    assert jobs.get_job("unit:key") is first
    third = jobs.start_job("unit:key", "Rebuilding", lambda progress: "again")
    assert third is not first and wait_done(third).result == "again"


def test_job_errors_are_messages_not_tracebacks():
    def expected(progress):
        raise FileNotFoundError("no such folder: /x")

    def bug(progress):
        raise KeyError("page")

    a = wait_done(jobs.start_job("unit:expected", "x", expected, expected=(FileNotFoundError,)))
    b = wait_done(jobs.start_job("unit:bug", "x", bug))
    assert a.error == "no such folder: /x"
    assert b.error == "KeyError: 'page'"


@pytest.mark.parametrize("text", ["**bold** _it_ `code` [link](http://x) <b>html</b> # head", "1. item\n- item\n> quote", "$x$ ~~s~~ | a | b |"])
def test_md_escape_leaves_no_markup_character_unescaped(text):
    escaped = md_escape(text)
    i = 0
    while i < len(escaped):
        if escaped[i] == "\\":
            i += 2
            continue
        assert escaped[i] not in "*_`[]()<>#-.|$~!>:", (escaped, i)
        i += 1


def test_md_escape_stops_url_auto_linking():
    # GFM auto-links "http://..."; the link text then showed the escapes ("127\\.0\\.0\\.1").
    assert md_escape("cannot reach http://127.0.0.1:8001/v1") == r"cannot reach http\://127\.0\.0\.1\:8001/v1"
