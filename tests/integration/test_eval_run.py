"""Evaluation at scale over real HTTP and the real tiny index: concurrent runs give the sequential run's
per-question results, a failing model server does not stop a run, a run killed half-way (SIGKILL of a
real process) resumes with every question done once, and the summary is read back from disk."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.eval_concurrency import EvalProgress, SerializedPolicy, SerializedSearch, run_eval, shared_policy, shared_searcher
from agent.eval_replicas import ReplicaPool
from agent.eval_resume import EvalRun, EvalRunError
from agent.eval_table import COLUMNS
from agent.evaluate import evaluate, load_dataset, summarize
from agent.loop import AgentConfig
from agent.policies import make_policy
from agent.policies.openai_chat import health
from agent.search import HttpSearcher, LocalSearcher
from agent.trajectory import TrajectoryStore
from support.agent_index import open_tiny_index, tiny_index_folder
from support.eval_replies import CALLS_PER_QUESTION, scripted_replier, write_dataset
from support.fake_openai_server import Fail, FakeOpenAIServer, Slow, closed_port_url

ROOT = Path(__file__).resolve().parents[2]
MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
SETTINGS = {"policy": "vllm", "model": MODEL, "protocol": "training", "max_turns": 5, "top_k": 10, "search": {"kind": "local"}}


@pytest.fixture(scope="module")
def index():
    return open_tiny_index()


class TimedServer(FakeOpenAIServer):
    """The fake server, recording when each delayed reply is taken and for how long it is held."""

    def __init__(self, script):
        super().__init__(script)
        self.spans: list[tuple[float, float]] = []

    def _next(self):
        entry = super()._next()
        if isinstance(entry, Slow):
            start = time.monotonic()
            with self._lock:
                self.spans.append((start, start + entry.seconds))
        return entry

    @property
    def peak_in_flight(self) -> int:
        events = sorted([(start, 1) for start, _ in self.spans] + [(end, -1) for _, end in self.spans])
        peak = now = 0
        for _, step in events:
            now += step
            peak = max(peak, now)
        return peak


def comparable(result) -> dict:
    """A result without what legitimately differs between runs (timing, trajectory ids)."""
    d = result.to_dict()
    for key in ("seconds", "trajectory_id"):
        d.pop(key)
    return d


def policies(*servers, timeout=30.0):
    return [make_policy("vllm", base_url=s if isinstance(s, str) else s.base_url, model=MODEL, timeout=timeout) for s in servers]


def probe(policy) -> bool:
    return health(policy.describe()["base_url"])["ok"]


def test_concurrent_and_sequential_runs_give_the_same_results(index, tmp_path):
    answers = write_dataset(tmp_path / "set.json", 12)
    examples = load_dataset(tmp_path / "set.json")
    config = AgentConfig(max_turns=5, protocol="training")
    runs = {}
    for concurrency in (1, 6):
        reply = scripted_replier(answers)
        with TimedServer([Slow(0.2, reply)] * (12 * CALLS_PER_QUESTION)) as server:
            run = EvalRun.open(tmp_path / f"run-{concurrency}", SETTINGS, examples)
            seen = [r.uid for r in run_eval(examples, ReplicaPool(policies(server)), LocalSearcher(index), config, run,
                                            concurrency=concurrency)]
            peak = server.peak_in_flight
        results, missing = run.results(examples)
        assert missing == [] and sorted(seen) == sorted(e.uid for e in examples)
        runs[concurrency] = (results, peak)
    (sequential, peak_1), (concurrent, peak_6) = runs[1], runs[6]
    assert peak_1 == 1 and peak_6 >= 4  # the concurrent run really overlapped its model calls
    assert [r.uid for r in concurrent] == [e.uid for e in examples]  # dataset order on disk
    assert [comparable(r) for r in concurrent] == [comparable(r) for r in sequential]
    assert [r.correct for r in sequential] == [1.0, 0.0] * 6
    assert all(r.outcome == "answered" and r.turns == 3 and "grounding_iou" in r.grounding for r in sequential)
    # the one-at-a-time generator the Evaluate page steps gives the same results too
    with FakeOpenAIServer([scripted_replier(answers)] * (12 * CALLS_PER_QUESTION)) as server:
        stepped = list(evaluate(examples, policies(server)[0], LocalSearcher(index), config))
    assert [comparable(r) for r in stepped] == [comparable(r) for r in sequential]


@pytest.mark.parametrize("failure", ["refused", "http 500"])
def test_a_failing_replica_does_not_stop_the_run(index, tmp_path, failure):
    answers = write_dataset(tmp_path / "set.json", 8)
    examples = load_dataset(tmp_path / "set.json")
    config = AgentConfig(max_turns=5, protocol="training")
    with FakeOpenAIServer([Fail(500, "engine crashed")] * 40) as broken, FakeOpenAIServer([scripted_replier(answers)] * 40) as good:
        bad = closed_port_url() if failure == "refused" else broken.base_url
        pool = ReplicaPool(policies(bad, good), probe=probe, cooldown=60.0, max_failures=2)
        run = EvalRun.open(tmp_path / "run", SETTINGS, examples)
        results = list(run_eval(examples, pool, LocalSearcher(index), config, run, concurrency=3))
        status = pool.status()
    assert len(results) == 8 and all(r.outcome == "answered" and r.error is None for r in results)
    assert [r.correct for r in sorted(results, key=lambda r: r.uid)] == [1.0, 0.0] * 4
    assert status[0]["out"] and not status[1]["out"]
    if failure == "refused":  # it does not answer GET /models: out after its first failure
        assert "cannot reach" in status[0]["last_error"] and status[0]["episodes"] in (1, 2)  # 2: started before the failure
    else:  # it answers GET /models but fails every call: out after max_failures (2) in a row, plus those already started
        assert "HTTP 500" in status[0]["last_error"] and 2 <= status[0]["episodes"] <= 3
        assert len(broken.requests) == status[0]["episodes"]
    moved = [t for t in (run.saved(e.uid) for e in examples) if "failover" in t.config]
    assert len(moved) == status[0]["episodes"]
    for t in moved:  # continued on the good server from the call that failed (the first one)
        assert t.config["failover"]["from"] == pool.replicas[0].name and t.config["failover"]["to"] == good.base_url
        assert t.config["failover"]["at_turn"] == 0 and t.config["failover"]["error"] and t.policy["base_url"] == pool.replicas[0].name


def test_with_every_replica_down_the_run_records_errors_and_goes_on(index, tmp_path):
    write_dataset(tmp_path / "set.json", 3)
    examples = load_dataset(tmp_path / "set.json")
    pool = ReplicaPool(policies(closed_port_url(), closed_port_url()), probe=probe)
    run = EvalRun.open(tmp_path / "run", SETTINGS, examples)
    results = list(run_eval(examples, pool, LocalSearcher(index), AgentConfig(max_turns=5, protocol="training"), run, concurrency=2))
    assert len(results) == 3 and all(r.outcome == "error" for r in results)
    assert any("every model server is out of service" in r.error for r in results)
    assert run.todo(examples) == examples  # errors are run again on resume
    assert summarize(results)["errors"] == 3


def test_resume_skips_done_questions_and_reruns_the_rest(index, tmp_path):
    answers = write_dataset(tmp_path / "set.json", 6)
    examples = load_dataset(tmp_path / "set.json")
    config = AgentConfig(max_turns=5, protocol="training")
    run = EvalRun.open(tmp_path / "run", SETTINGS, examples)
    # first run: the server dies after two questions (its script runs out: HTTP 500)
    with FakeOpenAIServer([scripted_replier(answers)] * (2 * CALLS_PER_QUESTION)) as server:
        first = list(run_eval(examples, ReplicaPool(policies(server)), LocalSearcher(index), config, run))
    assert [r.outcome for r in first] == ["answered"] * 2 + ["error"] * 4
    kept = {e.uid: run.saved(e.uid).created_at for e in examples[:2]}
    reports: list[EvalProgress] = []
    with FakeOpenAIServer([scripted_replier(answers)] * 100) as server:
        again = list(run_eval(examples, ReplicaPool(policies(server)), LocalSearcher(index), config,
                              EvalRun.open(tmp_path / "run", SETTINGS, examples), progress=reports.append))
        calls = len(server.requests)
    assert [r.uid for r in again] == [e.uid for e in examples[2:]] and calls == 4 * CALLS_PER_QUESTION
    assert {e.uid: run.saved(e.uid).created_at for e in examples[:2]} == kept  # done questions untouched
    results, missing = run.results(examples)
    assert missing == [] and [r.outcome for r in results] == ["answered"] * 6
    assert len(TrajectoryStore(run.folder).ids()) == 6  # one trajectory per question
    # progress: a first report before any question, then one per question
    assert [(p.done, p.skipped, p.last is None) for p in reports] == [(2, 2, True)] + [(k, 2, False) for k in range(3, 7)]
    assert reports[-1].total == 6 and reports[-1].eta == 0.0 and reports[-1].rate > 0 and reports[-1].errors == 0


def test_a_run_folder_refuses_other_settings_and_duplicate_uids(tmp_path):
    write_dataset(tmp_path / "set.json", 2)
    examples = load_dataset(tmp_path / "set.json")
    run = EvalRun.open(tmp_path / "run", SETTINGS, examples)
    assert run.trajectory_id("q01") == f"{run.run_id}-q01" and run.trajectory_id("a/b c").startswith(f"{run.run_id}-a_b_c-")
    with pytest.raises(EvalRunError, match=r"holds a run with protocol='training', not protocol='demo'"):
        EvalRun.open(tmp_path / "run", {**SETTINGS, "protocol": "demo"}, examples)
    redo = EvalRun.open(tmp_path / "run", {**SETTINGS, "protocol": "demo"}, examples, resume=False)
    assert redo.run_id == run.run_id and redo.settings["protocol"] == "demo"
    with pytest.raises(EvalRunError, match="two questions with uid 'q00'"):
        EvalRun.open(tmp_path / "other", SETTINGS, examples + examples[:1])
    with pytest.raises(EvalRunError, match="is not an evaluation run"):
        EvalRun.load(tmp_path)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "eval.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(EvalRunError, match="not a readable evaluation manifest"):
        EvalRun.load(tmp_path / "plain")


def test_stop_ends_the_episodes_in_flight_and_starts_no_more(index, tmp_path):
    answers = write_dataset(tmp_path / "set.json", 6)
    examples = load_dataset(tmp_path / "set.json")
    stop = threading.Event()
    run = EvalRun.open(tmp_path / "run", SETTINGS, examples)
    with FakeOpenAIServer([Slow(0.3, scripted_replier(answers))] * 100) as server:
        threading.Timer(0.5, stop.set).start()
        results = list(run_eval(examples, ReplicaPool(policies(server)), LocalSearcher(index), AgentConfig(max_turns=5, protocol="training"),
                                run, concurrency=2, stop=stop))
    assert len(results) == 2 and all(r.outcome == "stopped" for r in results)
    assert len(run.todo(examples)) == 6  # stopped questions are run again on resume


def test_shared_wrappers():
    index_searcher = LocalSearcher(open_tiny_index())
    assert isinstance(shared_searcher(index_searcher), SerializedSearch)
    assert shared_searcher(HttpSearcher("http://127.0.0.1:1")).__class__ is HttpSearcher
    offline = make_policy("offline")
    assert isinstance(shared_policy(offline), SerializedPolicy) and shared_policy(offline).describe() == offline.describe()
    vllm = make_policy("vllm", base_url="http://127.0.0.1:1", model=MODEL)
    assert shared_policy(vllm) is vllm


def test_killed_run_resumes_with_every_question_done_once(tmp_path):
    """The real command in its own process, SIGKILLed half-way, then run again with the same command."""
    n = 10
    answers = write_dataset(tmp_path / "set.json", n)
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with FakeOpenAIServer([Slow(0.4, scripted_replier(answers))] * 200) as server:
        argv = [sys.executable, "-m", "agent", "eval", "--dataset", str(tmp_path / "set.json"), "--index", str(tiny_index_folder() / "index"),
                "--policy", "vllm", "--base-url", server.base_url, "--model", MODEL, "--out", str(out), "--concurrency", "2",
                "--max-turns", "5"]
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while len(TrajectoryStore(out).ids()) < 3:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the first run saved nothing in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        run = EvalRun.load(out)
        done_before = {uid: run.saved(uid).created_at for uid in run.uids if run.saved(uid) is not None}
        assert 3 <= len(done_before) < n
        again = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{n} questions, {len(done_before)} already done" in again.stderr
    summary = json.loads(again.stdout)
    assert summary["examples"] == n and summary["missing"] == 0 and summary["errors"] == 0 and summary["accuracy"] == 0.5
    assert summary["grounding_questions"] == n and summary["crop_rate"] == 1.0
    ids = TrajectoryStore(out).ids()
    assert len(ids) == n and len(set(ids)) == n  # every question once
    assert sorted(TrajectoryStore(out).load(i).gold["uid"] for i in ids) == [f"q{i:02d}" for i in range(n)]
    assert {uid: run.saved(uid).created_at for uid in done_before} == done_before  # the first run's work was kept
    with open(out / "results.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["uid"] for r in rows] == [f"q{i:02d}" for i in range(n)] and list(rows[0]) == list(COLUMNS)
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["examples"] == n
    assert len(json.loads((out / "results.json").read_text(encoding="utf-8"))["rows"]) == n


def test_cli_records_the_protocol_and_refuses_to_resume_with_another(tmp_path, capsys):
    from agent.__main__ import main

    answers = write_dataset(tmp_path / "set.json", 2)
    out = tmp_path / "run"
    argv = ["eval", "--dataset", str(tmp_path / "set.json"), "--index", str(tiny_index_folder() / "index"), "--policy", "vllm",
            "--model", MODEL, "--out", str(out), "--max-turns", "5"]
    with FakeOpenAIServer([scripted_replier(answers)] * 6) as server:
        assert main(argv + ["--base-url", server.base_url, "--protocol", "demo"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["protocol"] == "demo" and "[2/2] q01: wrong" in captured.err
    assert {TrajectoryStore(out).load(i).config["protocol"] for i in TrajectoryStore(out).ids()} == {"demo"}
    assert main(argv + ["--base-url", "http://127.0.0.1:1"]) == 2  # the default protocol is training
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out} holds a run with protocol='demo', not protocol='training'") and err.count("\n") == 1
    assert main(argv + ["--policy", "offline", "--base-url", "http://a", "--base-url", "http://b"]) == 2
    assert "needs --policy vllm" in capsys.readouterr().err
    assert main(argv + ["--concurrency", "0"]) == 2
    assert "--concurrency must be at least 1" in capsys.readouterr().err
