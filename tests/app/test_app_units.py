"""The app's glue without a page: the background jobs (agent/jobs.py),
the Evaluate charts' figures, markdown escaping."""
from __future__ import annotations

import threading
import time

import pytest

from agent.jobs import JobRegistry
from pages.common import md_escape


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

    jobs = JobRegistry()
    first = jobs.start("unit:key", "Building", work)
    second = jobs.start("unit:key", "Building again", work)
    assert second is first and not first.finished and jobs.running("unit:key")  # a second session joins the running job
    deadline = time.monotonic() + 5
    while first.done != 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert first.describe().startswith("Building (1 / 2 pages, ") and first.describe().endswith("s): half")
    gate.set()
    wait_done(first)
    assert (first.result, first.error, first.done, first.total, first.fraction) == ("built", None, 2, 2, 1.0)
    assert jobs.get("unit:key") is first and not jobs.running("unit:key")
    assert jobs.get("unit:other") is None and not jobs.running("unit:other")
    third = jobs.start("unit:key", "Rebuilding", lambda progress: "again")
    assert third is not first and wait_done(third).result == "again"


def test_job_errors_are_messages_not_tracebacks():
    def expected(progress):
        raise FileNotFoundError("no such folder: /x")

    def bug(progress):
        raise KeyError("page")

    jobs = JobRegistry()
    a = wait_done(jobs.start("unit:expected", "x", expected, expected=(FileNotFoundError,)))
    b = wait_done(jobs.start("unit:bug", "x", bug))
    assert a.error == "no such folder: /x"
    assert b.error == "KeyError: 'page'"


def test_the_app_keeps_one_job_registry():
    from pages import jobs

    assert isinstance(jobs.registry(), JobRegistry) and jobs.registry() is jobs.registry()


def test_histogram_bins_put_1_in_the_last_bin_and_clamp():
    from pages.eval_view import histogram_bins

    assert histogram_bins([1.0, 1.0, 1.0]) == [0] * 9 + [3]
    assert histogram_bins([0.0, 0.05, 0.1, 0.95, -1, 2]) == [3, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert histogram_bins([]) == [0] * 10


def bars(figure) -> list[tuple]:
    trace = figure.to_dict()["data"][0]
    return list(zip(trace["x"], trace["y"], trace["text"]))


def test_an_ndcg_chart_where_every_value_is_1_draws_a_bar_inside_its_axis():
    from pages.eval_view import ndcg_figure

    figure = ndcg_figure([1.0, 1.0, 1.0, 1.0])
    drawn = [(x, y, text) for x, y, text in bars(figure) if y or text]
    assert drawn == [("0.9–1.0", 4, "4")]
    layout = figure.to_dict()["layout"]
    assert layout["xaxis"]["type"] == "category" and layout["yaxis"]["range"][1] > 4


def test_a_zero_accuracy_is_labelled_so_its_bar_is_seen():
    from pages.eval_view import accuracy_figure, turns_figure

    figure = accuracy_figure({"table": [1.0, 1.0], "chart": [0.0, 0.0, 0.0]})
    assert bars(figure) == [("chart", 0.0, "0/3"), ("table", 1.0, "2/2")]
    trace = figure.to_dict()["data"][0]
    assert trace["textposition"] == "outside" and trace["cliponaxis"] is False
    assert figure.to_dict()["layout"]["yaxis"]["range"][1] > 1  # room for the label above a full bar
    assert bars(turns_figure([2, 2, 5])) == [(2, 2, "2"), (5, 1, "1")]


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
