"""Evaluation with many episodes in flight, into a resumable run folder, with progress.

`run_eval` keeps `concurrency` episodes running on threads (a vLLM server batches the requests it
gets at once, so N in flight is up to N times faster), each one `agent.evaluate.run_example` on a
`ReplicaPool` (agent/eval_replicas.py), saved into an `EvalRun` folder (agent/eval_resume.py) whose
finished questions are skipped. Episodes are independent and each is deterministic given its
replies, so a deterministic policy gives the same per-question results at any concurrency; results
are yielded as questions finish, and the run's table and summary are read back from disk in dataset
order (`EvalRun.results`).

What the threads share, and how it is kept safe:
- the search engine: `DocumentIndex.search` is not thread-safe (it loads its embedder and builds its
  BM25 matrix lazily on first use, and a Hugging Face fast tokenizer raises "Already borrowed" when
  two threads encode at once), so a local index's searches go one at a time (`SerializedSearch`;
  a search is milliseconds next to a model call). Page images are opened per call (no shared state).
  Our search server over HTTP (`HttpSearcher`: one httpx client, which is thread-safe) is not serialised.
- the model: the OpenAI-compatible policy is an HTTP client (thread-safe, one per replica).
  Every other policy (offline: the OCR engine and its caches; transformers: one model in memory)
  answers one call at a time (`SerializedPolicy`).
- the trajectory store: each question writes only its own folder (atomic renames).
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Iterator

from agent.eval_replicas import ReplicaPool
from agent.eval_resume import EvalRun
from agent.evaluate import Example, ExampleResult, run_example
from agent.loop import AgentConfig
from agent.policies.base import Completion, Policy
from agent.rewards import RELEASED_WEIGHTS, LLMJudge, RewardWeights
from agent.search import HttpSearcher, Searcher, decoded_top
from search_engine.types import SearchHit

log = logging.getLogger(__name__)

THREAD_SAFE_POLICIES = ("vllm",)  # policy names whose `complete` may run on several threads at once


class SerializedSearch:
    """A searcher whose `search` calls run one at a time (see the module docstring)."""

    def __init__(self, searcher: Searcher):
        self._searcher = searcher
        self._lock = threading.Lock()

    def search(self, query: str, top_k: int) -> list[SearchHit]:
        with self._lock:
            return self._searcher.search(query, top_k)

    def model_view(self, page_id: str):
        return self._searcher.model_view(page_id)

    def page_image(self, page_id: str):
        return self._searcher.page_image(page_id)

    def page_top(self, page_id: str, rows: int | None):
        return decoded_top(self._searcher, page_id, rows)

    def describe(self) -> dict:
        return self._searcher.describe()


class SerializedPolicy:
    """A policy answering one call at a time."""

    def __init__(self, policy: Policy):
        self._policy = policy
        self.name = policy.name
        self._lock = threading.Lock()

    def describe(self) -> dict:
        return self._policy.describe()

    def complete(self, messages: list[dict]) -> Completion:
        with self._lock:
            return self._policy.complete(messages)


def shared_searcher(searcher: Searcher) -> Searcher:
    return searcher if isinstance(searcher, (HttpSearcher, SerializedSearch)) else SerializedSearch(searcher)


def shared_policy(policy: Policy) -> Policy:
    return policy if policy.name in THREAD_SAFE_POLICIES or isinstance(policy, SerializedPolicy) else SerializedPolicy(policy)


@dataclass(frozen=True)
class EvalProgress:
    """Where a run is, after each question (what the CLI's bar and the Evaluate page show)."""

    done: int  # questions processed, whatever their outcome, the ones skipped as already done included
    total: int
    skipped: int  # done before this run started (resumed)
    errors: int  # questions of this run that ended in an error
    correct: float  # sum of the answer scores of this run's questions
    elapsed: float  # seconds since this run started
    last: ExampleResult | None = None  # the question that just finished (None for the first report)

    @property
    def ran(self) -> int:
        return self.done - self.skipped

    @property
    def rate(self) -> float:
        """Questions per second in this run."""
        return self.ran / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds to go at the current rate (None before the first question finishes)."""
        return (self.total - self.done) / self.rate if self.rate > 0 else None


Progress = Callable[[EvalProgress], None]


class _Either:
    """Set when either event is (the caller's stop, or the generator being closed)."""

    def __init__(self, *events: threading.Event | None):
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def run_eval(examples: list[Example], pool: ReplicaPool, searcher: Searcher, config: AgentConfig, run: EvalRun, *,
             concurrency: int = 1, judge: LLMJudge | None = None, weights: RewardWeights = RELEASED_WEIGHTS,
             progress: Progress | None = None, stop: threading.Event | None = None, resume: bool = True) -> Iterator[ExampleResult]:
    """Run every question of `examples` not yet done in `run` (every one if not `resume`),
    `concurrency` at a time; yield each result as it finishes.

    `progress` is called once before the first question and after each one, on the caller's
    thread. The pool's policies are wrapped in place to be shared safely (`shared_policy`). `stop` (set from
    another thread, e.g. a Stop button) lets the episodes in flight end after their current turn
    (recorded as stopped, so a resumed run runs them again) and starts no more; closing the
    generator early does the same.
    """
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
    closed = threading.Event()
    halt = _Either(stop, closed)
    todo = run.todo(examples) if resume else list(examples)
    skipped = len(examples) - len(todo)
    searcher = shared_searcher(searcher)
    for replica in pool.replicas:
        replica.policy = shared_policy(replica.policy)
    started, errors, correct, done = time.perf_counter(), 0, 0.0, skipped

    def report(last: ExampleResult | None) -> None:
        if progress is not None:
            progress(EvalProgress(done, len(examples), skipped, errors, correct, time.perf_counter() - started, last))

    def job(example: Example) -> ExampleResult | None:
        if halt.is_set():
            return None
        return run_example(example, pool, searcher, config, run.store, judge, weights,
                           trajectory_id=run.trajectory_id(example.uid), stop=halt, eval={"run": run.run_id})

    report(None)
    queue = iter(todo)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="eval") as executor:
        running: set[Future] = set()
        try:
            while True:
                while len(running) < concurrency and not halt.is_set():
                    example = next(queue, None)
                    if example is None:
                        break
                    running.add(executor.submit(job, example))
                if not running:
                    return
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    result = future.result()
                    if result is None:
                        continue
                    done += 1
                    errors += result.error is not None
                    correct += result.correct
                    report(result)
                    yield result
        finally:
            closed.set()  # the episodes in flight end after their current turn; the executor waits for them
