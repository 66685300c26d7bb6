"""agent/eval_session.py, the one wiring of an evaluation (the Evaluate page's and `agent eval`'s), over the
real demo index (25 page images of ../shared/corpus/vrag-demo): the offline policy gives the same
per-question results at any concurrency and the session writes the CLI's tables; Stop, set from
another thread while the session's generator waits in a background Worker, ends the episodes in
flight after their model call, and the run resumes with every question done once; several servers
make a replica pool; run folders are named, listed, compared and copied to the Trajectories store."""
from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path

import pytest

from agent.eval_resume import EvalRun, EvalRunError
from agent.eval_session import (
    EvalRequest, EvalSession, check_run_name, compare_saved, copy_to_store, saved_runs, suggested_run_name,
)
from agent.evaluate import load_dataset
from agent.policies import PolicyError
from agent.runs import Worker
from agent.trajectory import TrajectoryStore
from agent.workspace import Settings
from support.fake_openai_server import FakeOpenAIServer, Slow

ROOT = Path(__file__).resolve().parents[2]
DEMO_SET = ROOT / "agent" / "questions" / "vrag_demo_examples.json"


@pytest.fixture(scope="module")
def examples():
    return load_dataset(DEMO_SET)[:3]  # three English slide questions, each with a gold evidence box


def session(examples, out, index, *, settings=None, **request) -> EvalSession:
    return EvalSession(EvalRequest(list(examples), out=out, dataset=str(DEMO_SET), **request), settings or Settings(),
                       open_index=lambda: index)


def per_question(results) -> list[tuple]:
    return [(r.uid, r.answer, r.outcome, r.correct, r.pages_shown, r.turns, r.grounding.get("grounding_iou")) for r in results]


def test_the_offline_policy_gives_the_same_results_at_any_concurrency_and_the_cli_tables(demo_index, examples, tmp_path):
    examples = examples[:2]  # each offline episode OCRs its crops: seconds each on this machine
    reports = []
    one = EvalSession(EvalRequest(list(examples), out=tmp_path / "one", dataset="demo", policy="offline"), Settings(),
                      open_index=lambda: demo_index, progress=reports.append)
    sequential = list(one.results())
    two = session(examples, tmp_path / "two", demo_index, policy="offline", concurrency=2)
    concurrent = list(two.results())

    assert [r.uid for r in sequential] == [e.uid for e in examples]
    assert per_question(sequential) == sorted(per_question(concurrent), key=lambda q: [e.uid for e in examples].index(q[0]))
    # progress: one report before the first question, then one per question, the same ones the page polls
    assert [p.done for p in reports] == [0, 1, 2] and reports[0].last is None and one.progress is reports[-1]
    assert [line.split(":")[0] for line in one.lines] == [f"[{i}/2] {e.uid}" for i, e in enumerate(examples, 1)]
    # the tables and the summary, written from what is on disk, as the CLI writes them
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary == one.summary and summary["examples"] == 2 and summary["missing"] == 0 and summary["dataset"] == "demo"
    assert summary["grounding_questions"] == 2 and summary["policy"]["name"] == "offline"
    with open(tmp_path / "one" / "results.csv", newline="") as f:
        assert [row["uid"] for row in csv.DictReader(f)] == [e.uid for e in examples]
    trajectory = EvalRun.load(tmp_path / "one").saved(examples[0].uid)
    assert trajectory.config["protocol"] == "training" and trajectory.gold["boxes"]
    # a run started again with the same settings has nothing left to do
    again = session(examples, tmp_path / "one", demo_index, policy="offline")
    assert list(again.results()) == [] and again.progress.skipped == 2 and again.summary["examples"] == 2


def test_stop_from_another_thread_ends_the_run_after_the_call_in_flight_and_it_resumes(demo_index, examples, tmp_path):
    questions = [e.query for e in examples]
    asked: dict[str, int] = {}
    lock = threading.Lock()

    def reply(body: dict) -> str:
        sent = json.dumps(body, ensure_ascii=False)
        question = next(q for q in questions if q in sent)
        with lock:
            asked[question] = asked.get(question, 0) + 1
            calls = asked[question]
        if question == questions[1] and calls == 1:
            time.sleep(2.0)  # the second question's first call is slow: Stop comes while it is in flight
        return "<think>s</think><search>" + question + "</search>" if calls == 1 else "<think>a</think><answer>none</answer>"

    with FakeOpenAIServer([reply] * 100) as server:
        settings = Settings(base_url=server.base_url, model="Qwen/Qwen2.5-VL-7B-Instruct")
        first = session(examples, tmp_path / "run", demo_index, settings=settings, policy="vllm")
        worker = Worker(first.results()).start()
        deadline = time.monotonic() + 120
        while asked.get(questions[1], 0) < 1:
            assert time.monotonic() < deadline and worker.running, "the second question never started"
            time.sleep(0.02)
        stopped_at = time.monotonic()
        first.stop()
        worker.stop()
        assert worker.join(30), "the worker did not end after Stop"
        assert time.monotonic() - stopped_at < 10  # the call in flight (2 s), not the rest of the run
        assert asked == {questions[0]: 2, questions[1]: 1}  # no call after the one in flight, no third question
        run = EvalRun.load(tmp_path / "run")
        outcomes = {e.uid: (run.saved(e.uid).outcome if run.saved(e.uid) else None) for e in examples}
        assert outcomes == {examples[0].uid: "answered", examples[1].uid: "stopped", examples[2].uid: None}
        assert first.summary is not None and first.summary["missing"] == 1  # the tables are written when the worker ends

        second = session(examples, tmp_path / "run", demo_index, settings=settings, policy="vllm", concurrency=2)
        results = list(second.results())
    assert sorted(r.uid for r in results) == sorted(e.uid for e in examples[1:])
    assert second.progress.skipped == 1 and second.progress.done == 3 and asked[questions[0]] == 2
    trajectories, bad = run.store.list()
    assert not bad and sorted(t.gold["uid"] for t in trajectories) == sorted(e.uid for e in examples)  # each once
    assert all(t.outcome == "answered" for t in trajectories)


def test_several_model_servers_make_a_replica_pool_and_a_policy_that_cannot_start_says_why(demo_index, examples, tmp_path):
    with FakeOpenAIServer([]) as a, FakeOpenAIServer([]) as b:
        s = session(examples, tmp_path / "pool", demo_index, policy="vllm", base_urls=(a.base_url, b.base_url),
                    settings=Settings(model="Qwen/Qwen2.5-VL-7B-Instruct"))
        s.setup()
        assert [r.policy.describe()["base_url"] for r in s.pool.replicas] == [a.base_url, b.base_url]
        assert s.run.settings["policy"] == "vllm" and s.run.settings["search"] == s.searcher.describe()
    with pytest.raises(PolicyError) as caught:
        session(examples, tmp_path / "tf", demo_index, policy="transformers").setup()
    assert caught.value.app_hint == "Set the model folder on the Settings page."
    assert not (tmp_path / "tf").exists()  # nothing written for a run that could not start
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        session(examples, tmp_path / "x", demo_index, concurrency=0)


def test_a_run_folder_of_other_settings_is_refused_before_any_question_runs(demo_index, examples, tmp_path):
    list(session(examples[:1], tmp_path / "run", demo_index, policy="offline", max_turns=4).results())
    with pytest.raises(EvalRunError, match="max_turns=4"):
        session(examples, tmp_path / "run", demo_index, policy="offline", max_turns=6).setup()
    redo = session(examples[:1], tmp_path / "run", demo_index, policy="offline", max_turns=6, resume=False)
    assert len(list(redo.results())) == 1 and EvalRun.load(tmp_path / "run").settings["max_turns"] == 6


def test_run_names_saved_runs_comparison_and_copy_to_the_trajectories_store(demo_index, examples, tmp_path):
    assert suggested_run_name("vrag_demo_dev.json", "offline") == "vrag_demo_dev-offline"
    assert suggested_run_name("The sample report's questions", "vllm") == "The_sample_report_s_questions-vllm"
    assert check_run_name("ok-1.2_x") is None and check_run_name("../up") and check_run_name("") and check_run_name("a" * 65)

    root = tmp_path / "evals"
    list(session(examples[:1], root / "a", demo_index, policy="offline", max_turns=3).results())
    time.sleep(0.05)
    list(session(examples[:1], root / "b", demo_index, policy="offline").results())
    (root / "not-a-run").mkdir()
    assert list(saved_runs(root)) == ["b", "a"]  # newest first; a folder without a manifest is not a run

    comparison = compare_saved(root / "a", root / "b")
    assert (comparison.a, comparison.b, comparison.questions) == ("a", "b", 1)
    assert [q["uid"] for q in comparison.per_question] == [examples[0].uid]

    store = TrajectoryStore(tmp_path / "trajectories")
    run = EvalRun.load(root / "b")
    tid = run.trajectory_id(examples[0].uid)
    assert copy_to_store(root / "b", tid, store) == tid and store.load(tid).question == examples[0].query
    changed = run.saved(examples[0].uid)
    changed.answer = "a newer answer"
    run.store.save(changed)
    copy_to_store(root / "b", tid, store)  # an older copy is replaced, not kept
    assert store.load(tid).answer == "a newer answer" and store.ids() == [tid]
    with pytest.raises(ValueError, match="has no trajectory"):
        copy_to_store(root / "b", "ev000000-nothing", store)
