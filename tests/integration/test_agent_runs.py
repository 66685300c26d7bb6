"""agent/runs.py: the one wiring of a run (searcher + policy from Settings, save per turn, score, stop)
and the generic background Worker. Real index (a generated 3-page PDF), real HTTP to the local
OpenAI-compatible test server; a scripted in-process policy only where a test needs a reply to
raise (KeyboardInterrupt)."""
from __future__ import annotations

import threading
import time

import pytest

from agent.policies import PolicyError
from agent.runs import Run, RunRequest, RunSetupError, Worker, make_run_policy, make_searcher
from agent.search import HttpSearcher, LocalSearcher
from agent.trajectory import Trajectory, TrajectoryStore
from agent.workspace import Settings
from support.agent_doubles import ScriptedPolicy
from support.agent_index import open_tiny_index
from support.fake_openai_server import FakeOpenAIServer, Slow

SCRIPT = [
    "<think>Find the revenue.</think><search>revenue 2023</search>",
    "<think>zoom</think><bbox>[60, 40, 480, 140]</bbox>",
    "<think>It is 4.2 billion.</think><answer>4.2 billion dollars</answer>",
]
GOLD = {"answer": "4.2 billion dollars", "pages": ["report_1"]}


@pytest.fixture(scope="module")
def index():
    return open_tiny_index()


def vllm_run(server, index, store, **request) -> Run:
    settings = Settings(base_url=server.base_url, model=server.model, api_key="EMPTY")
    return Run(RunRequest("What was the revenue in 2023?", policy="vllm", **request), settings, store, open_index=lambda: index)


def on_disk(store: TrajectoryStore, run: Run) -> Trajectory:
    return store.load(run.trajectory.id)


def test_a_run_saves_after_every_turn_and_scores_at_the_end(index, tmp_path):
    store = TrajectoryStore(tmp_path)
    with FakeOpenAIServer(list(SCRIPT)) as server:
        run = vllm_run(server, index, store, gold=GOLD, index_name="tiny")
        saved_turns = []
        for turn in run.turns():
            saved = on_disk(store, run)  # the turn is on disk before the caller sees it
            saved_turns.append(len(saved.turns))
            assert saved.turns[-1].action == turn.action and not saved.rewards
    assert saved_turns == [1, 2, 3]
    final = on_disk(store, run)
    assert final.outcome == "answered" and final.answer == "4.2 billion dollars" and not final.stopped
    assert final.rewards["ndcg"] == 1.0 and final.rewards["exact_match"] == 1.0
    assert final.config["index"] == "tiny" and final.config["search"]["kind"] == "local" and final.policy["name"] == "vllm"
    assert run.ended == "done"


def test_a_run_without_a_reference_has_no_rewards(index, tmp_path):
    store = TrajectoryStore(tmp_path)
    with FakeOpenAIServer([SCRIPT[2]]) as server:
        run = vllm_run(server, index, store)
        list(run.turns())
    assert on_disk(store, run).rewards == {}


def test_stop_during_a_model_call_takes_effect_after_it(index, tmp_path):
    store = TrajectoryStore(tmp_path)
    holder = {}

    def press_stop(body):  # the user presses Stop while the model is answering turn 2
        holder["worker"].stop()
        return SCRIPT[1]

    with FakeOpenAIServer([SCRIPT[0], press_stop, SCRIPT[2]]) as server:
        run = vllm_run(server, index, store, gold=GOLD)
        worker = holder["worker"] = Worker(run.turns())
        worker.start()
        assert worker.join(60)
        assert len(server.requests) == 2  # no model call after Stop
    assert worker.status == "stopped" and worker.exception is None and worker.items == 2
    saved = on_disk(store, run)
    assert [t.action for t in saved.turns] == ["search", "bbox"]  # the call in flight was kept
    assert saved.stopped and saved.error is None and saved.outcome == "stopped"
    assert saved.rewards == {}  # a stopped run is not scored as if it had finished


def test_stop_is_clickable_at_once_while_the_model_is_slow(index, tmp_path):
    store = TrajectoryStore(tmp_path)
    with FakeOpenAIServer([Slow(1.5, SCRIPT[0]), SCRIPT[1], SCRIPT[2]]) as server:
        run = vllm_run(server, index, store)
        worker = Worker(run.turns()).start()
        deadline = time.monotonic() + 30
        while not server.requests:  # the first model call is in flight
            assert time.monotonic() < deadline
            time.sleep(0.02)
        worker.stop()
        assert worker.running and worker.stop_requested  # only a request: the call in flight goes on
        assert worker.join(30)
    assert worker.status == "stopped" and len(server.requests) == 1
    assert [t.action for t in on_disk(store, run).turns] == ["search"]


def test_a_stop_after_the_last_turn_leaves_the_run_finished(index, tmp_path):
    store = TrajectoryStore(tmp_path)
    holder = {}

    def answer_and_stop(body):
        holder["worker"].stop()
        return SCRIPT[2]

    with FakeOpenAIServer([SCRIPT[0], answer_and_stop]) as server:
        run = vllm_run(server, index, store, gold=GOLD)
        worker = holder["worker"] = Worker(run.turns()).start()
        assert worker.join(60)
    saved = on_disk(store, run)
    assert saved.outcome == "answered" and not saved.stopped and saved.rewards  # nothing was left to stop


def test_a_budget_spent_when_stopped_keeps_the_no_answer_record(index, tmp_path):
    store = TrajectoryStore(tmp_path)
    holder = {}

    def search_and_stop(body):
        holder["worker"].stop()
        return SCRIPT[0]

    with FakeOpenAIServer([search_and_stop]) as server:
        run = vllm_run(server, index, store, max_turns=1)
        worker = holder["worker"] = Worker(run.turns()).start()
        assert worker.join(60)
    saved = on_disk(store, run)
    assert saved.outcome == "no answer" and saved.answer and not saved.stopped


def test_ctrl_c_in_the_foreground_is_a_stop(index, tmp_path):
    store = TrajectoryStore(tmp_path)
    settings = Settings(transformers_model="/models/scripted")

    class Interrupted(ScriptedPolicy):  # the person presses Ctrl+C during the second model call
        def complete(self, messages):
            if self.calls:
                raise KeyboardInterrupt
            return super().complete(messages)

    policy = Interrupted([SCRIPT[0]])
    run = Run(RunRequest("q?", policy="transformers"), settings, store, open_index=lambda: index,
              transformers=lambda folder, **options: policy)
    with pytest.raises(KeyboardInterrupt):
        for _ in run.turns():
            pass
    saved = on_disk(store, run)
    assert saved.stopped and saved.outcome == "stopped" and [t.action for t in saved.turns] == ["search"]


def test_a_policy_that_cannot_start_fails_the_worker_with_a_message_for_the_app(index, tmp_path):
    store = TrajectoryStore(tmp_path)
    run = Run(RunRequest("q?", policy="transformers"), Settings(), store, open_index=lambda: index)
    worker = Worker(run.turns(), expected=(PolicyError,)).start()
    assert worker.join(30)
    assert worker.status == "failed" and isinstance(worker.exception, PolicyError) and not worker.unexpected
    assert "local Qwen2.5-VL model folder" in str(worker.exception) and "Settings page" in worker.exception.app_hint
    assert "--model" in worker.exception.cli_hint
    assert run.trajectory is None and store.ids() == []  # nothing to save: the run never started


def test_a_bug_in_the_loop_is_recorded_on_the_trajectory_and_saved(index, tmp_path):
    store = TrajectoryStore(tmp_path)

    class BrokenSearcher(LocalSearcher):
        def search(self, query, top_k):
            raise ZeroDivisionError("division by zero")

    with FakeOpenAIServer([SCRIPT[0]]) as server:
        run = vllm_run(server, index, store)
        run.setup()
        run.searcher = BrokenSearcher(index)
        worker = Worker(run.turns(), expected=(PolicyError,)).start()
        assert worker.join(60)
    assert worker.status == "failed" and worker.unexpected and isinstance(worker.exception, ZeroDivisionError)
    saved = on_disk(store, run)
    assert saved.outcome == "error" and "ZeroDivisionError: division by zero" in saved.error


def test_the_server_down_is_an_error_on_the_trajectory_not_a_failed_worker(index, tmp_path):
    from support.fake_openai_server import closed_port_url

    store = TrajectoryStore(tmp_path)
    settings = Settings(base_url=closed_port_url(), model="m")
    run = Run(RunRequest("q?", policy="vllm"), settings, store, open_index=lambda: index)
    worker = Worker(run.turns()).start()
    assert worker.join(60)
    assert worker.status == "done"
    saved = on_disk(store, run)
    assert saved.outcome == "error" and "cannot reach the model server" in saved.error and saved.turns == []
    assert run.trajectory.error_hints.get("app") and run.trajectory.error_hints.get("cli")  # what to do, for the app and the CLI


def test_settings_choose_the_searcher_and_the_policy(index):
    assert isinstance(make_searcher(Settings(), index), LocalSearcher)
    remote = make_searcher(Settings(search_url=" http://127.0.0.1:9/ "), None)
    assert isinstance(remote, HttpSearcher)
    with pytest.raises(RunSetupError, match="no index to search"):
        make_searcher(Settings(), None)
    offline = make_run_policy("offline", Settings(), index)
    assert offline.describe()["name"] == "offline"
    vllm = make_run_policy("vllm", Settings(base_url="http://127.0.0.1:9/v1", model="served-name"), None, timeout=3.0)
    assert vllm.describe()["name"] == "vllm" and "served-name" in vllm.describe()["description"]
    with pytest.raises(PolicyError, match="Unknown policy"):
        make_run_policy("gpt", Settings(), index)


def test_the_worker_drives_any_generator_and_closes_it_on_stop():
    log, seen = [], []
    gate = threading.Event()

    def counting():
        try:
            for i in range(100):
                if i == 3:
                    gate.wait(10)  # a slow step: stop is requested while it runs
                yield i
        finally:
            log.append("closed")

    worker = Worker(counting(), on_item=seen.append).start()
    while len(seen) < 3:
        time.sleep(0.01)
    worker.stop()
    gate.set()
    assert worker.join(10)
    assert worker.status == "stopped" and seen == [0, 1, 2, 3] and log == ["closed"]
    assert worker.seconds >= 0 and not worker.running

    finished = Worker(iter(range(5)), on_item=seen.append).start()
    assert finished.join(10) and finished.status == "done" and finished.items == 5

    def broken():
        yield 1
        raise ValueError("bad input")

    failed = Worker(broken(), expected=(ValueError,)).start()
    assert failed.join(10) and failed.status == "failed" and not failed.unexpected and str(failed.exception) == "bad input"
