"""The one wiring of an agent run, shared by the Ask page and `python -m agent ask`. No Streamlit here.

A run is: a searcher and a policy built from the user's `workspace.Settings`, a new trajectory,
the loop (`agent.loop.run_episode`), the trajectory saved after every turn, scored at the end
when the question's reference is known, and a user's stop recorded as `trajectory.stopped`.

    run = Run(RunRequest("question", policy="offline"), settings, store, open_index=lambda: index)
    for turn in run.turns():          # the CLI, in the foreground
        ...
    worker = Worker(run.turns()).start()  # the app: a background thread; the page draws from
    worker.stop()                         # run.trajectory, and Stop ends the run after this turn

`Run.turns()` builds the searcher and the policy on its first step (`Run.setup`, which the CLI
calls first to print who answers), so a page that starts a run in a worker has Stop enabled at
once while the index and the model load.

Stop: `Worker` is generic (any generator in a thread with a stop flag: an evaluation's results
drive the same way). It checks the flag between items, so a stop takes effect after the step in
flight (a model call cannot be interrupted), then closes the generator; `Run.turns` treats that
close (or a KeyboardInterrupt in the CLI) as the user's stop.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterator, TypeVar

from agent.loop import AgentConfig, new_trajectory, run_episode
from agent.policies import Policy, PolicyError, make_policy
from agent.protocol import DEFAULT_PROFILE
from agent.rewards import score_trajectory
from agent.search import HttpSearcher, LocalSearcher, Searcher
from agent.trajectory import Trajectory, TrajectoryStore, Turn
from agent.workspace import Settings

if TYPE_CHECKING:
    from search_engine.index import DocumentIndex

log = logging.getLogger(__name__)

POLICIES = ("vllm", "transformers", "offline")
WAITING_FOR = {"vllm": "the model server", "transformers": "the in-process model", "offline": "the offline policy (OCR)"}


class RunSetupError(ValueError):
    """A run that cannot start from these settings (no index to search, say); the message is for a person."""


# --- building the parts ------------------------------------------------------------------------


def make_searcher(settings: Settings, index: "DocumentIndex | None") -> Searcher:
    """The search server named in the settings, else `index` in this process."""
    url = settings.search_url.strip()
    if url:
        return HttpSearcher(url)
    if index is None:
        raise RunSetupError("There is no index to search: build one, or set a search server.")
    return LocalSearcher(index)


def warm_up(searcher: Searcher) -> None:
    """Load an in-process index's embedder now, not inside the first search turn."""
    index = getattr(searcher, "index", None)
    if index is not None and len(index):
        _ = index.embedder  # the property loads the model


def load_transformers(folder: str, **options: Any) -> Policy:
    return make_policy("transformers", model=folder, **options)


def make_run_policy(
    name: str,
    settings: Settings,
    index: "DocumentIndex | None" = None,
    *,
    transformers: Callable[..., Policy] = load_transformers,
    **options: Any,
) -> Policy:
    """The policy `name` as the settings configure it (an empty setting = the policy's default).
    `options` (temperature, max_tokens, timeout...; None = the policy's default) go to the model
    policies; `transformers(folder, **options)` loads the in-process model (the app passes a cached
    loader). PolicyError when it cannot start."""
    if name == "vllm":
        return make_policy("vllm", base_url=settings.base_url or None, model=settings.model or None,
                           api_key=settings.api_key or None, **options)
    if name == "transformers":
        folder = settings.transformers_model.strip()
        if not folder:
            raise PolicyError(
                "The transformers policy needs a local Qwen2.5-VL model folder (weights cannot be downloaded here).",
                app_hint="Set the model folder on the Settings page.",
                cli_hint="Give it with --model DIR.",
            )
        return transformers(folder, **options)
    if name == "offline":
        return make_policy("offline", index=index)  # borrows the index's OCR engine when there is one
    raise PolicyError(f"Unknown policy {name!r}; choose one of: {', '.join(POLICIES)}.")


# --- one run ------------------------------------------------------------------------------------


@dataclass
class RunRequest:
    """What a person asked for: the question, the policy by name, the budget, the reference if known."""

    question: str
    policy: str = "offline"
    max_turns: int = 10
    top_k: int = 10
    gold: dict = field(default_factory=dict)  # {"answer", "pages", "boxes"}: scored at the end when given
    index_name: str | None = None  # recorded in the trajectory's config (which index was searched)
    policy_options: dict = field(default_factory=dict)  # temperature, max_tokens, timeout
    protocol: str = DEFAULT_PROFILE  # agent/protocol.py: how replies are sent back and pages shown
    episode_timeout: float | None = None  # seconds for the whole episode (None: no limit)

    def config(self) -> AgentConfig:
        """The loop's settings; ValueError on a bad budget or an unknown protocol."""
        return AgentConfig(max_turns=self.max_turns, top_k=self.top_k, protocol=self.protocol,
                           episode_timeout=self.episode_timeout)


class Run:
    """One question being answered. `trajectory` is the record pages draw from (None until `setup`).

    `open_index()` gives the index searched in process (or used by the offline policy for OCR);
    it may return None when a search server is set. `transformers(folder, **options)` loads the
    in-process model. Both are called in `setup`, in whichever thread steps the run. `preload`
    loads the index's embedder in `setup` rather than in the first search turn (the app's progress
    line says so; the CLI leaves it to the first search).
    """

    def __init__(
        self,
        request: RunRequest,
        settings: Settings,
        store: TrajectoryStore,
        *,
        open_index: Callable[[], "DocumentIndex | None"],
        transformers: Callable[..., Policy] = load_transformers,
        preload: bool = True,
    ):
        self.request = request
        self.settings = settings
        self.store = store
        self.config = request.config()
        self._open_index = open_index
        self._transformers = transformers
        self._preload = preload
        self.trajectory: Trajectory | None = None
        self.policy: Policy | None = None
        self.searcher: Searcher | None = None
        self.phase = "starting"  # what the run is doing now, in words for a progress line
        self.ended: str | None = None  # "done" | "stopped" | "failed" once the run is over

    @property
    def folder(self) -> Path | None:
        return self.store.path(self.trajectory.id) if self.trajectory is not None else None

    @property
    def waiting_for(self) -> str:
        return WAITING_FOR.get(self.request.policy, "the policy")

    def setup(self) -> Trajectory:
        """Build the searcher and the policy and save the new, empty trajectory (once)."""
        if self.trajectory is not None:
            return self.trajectory
        self.phase = "opening the search index and loading its embedder (slow only the first time)"
        index = self._open_index()
        searcher = make_searcher(self.settings, index)
        if self._preload:
            warm_up(searcher)
        self.phase = "loading the policy"
        policy = make_run_policy(self.request.policy, self.settings, index, transformers=self._transformers, **self.request.policy_options)
        extra = {"search": searcher.describe()}
        if self.request.index_name:
            extra["index"] = self.request.index_name
        trajectory = new_trajectory(self.request.question, policy, self.config, gold=dict(self.request.gold), **extra)
        self.store.save(trajectory)
        self.searcher, self.policy, self.trajectory = searcher, policy, trajectory
        return trajectory

    def turns(self) -> Iterator[Turn]:
        """Run the episode, yielding each turn once it is saved. Closing this generator (or a
        KeyboardInterrupt) is the user's stop: the turns so far are kept and the run is marked stopped."""
        trajectory = self.setup()
        steps = run_episode(trajectory, self.policy, self.searcher, self.config)
        ended = "stopped"
        try:
            while True:
                self.phase = f"turn {len(trajectory.turns) + 1}: waiting for {self.waiting_for}"
                try:
                    turn = next(steps)
                except StopIteration:
                    ended = "done"
                    break
                self.store.save(trajectory)
                try:
                    yield turn
                except GeneratorExit:
                    if trajectory.finished or trajectory.error or len(trajectory.turns) >= self.config.max_turns:
                        for _ in steps:  # nothing left to ask the model: let the loop close its record
                            pass
                        ended = "done"
                    raise
        except Exception as e:
            ended = "failed"
            if trajectory.error is None:
                trajectory.error = f"The run failed on an unexpected problem ({e.__class__.__name__}: {e})"
            raise
        finally:
            steps.close()
            self._finish(ended)

    def _finish(self, ended: str) -> None:
        trajectory = self.trajectory
        if ended == "stopped":
            trajectory.stopped = True
        elif ended == "done" and (trajectory.gold.get("pages") or trajectory.gold.get("answer")):
            trajectory.rewards = score_trajectory(trajectory)
        self.store.save(trajectory)
        self.ended, self.phase = ended, ended
        log.info("run %s %s after %d turns", trajectory.id, ended, len(trajectory.turns))


# --- a generator in a background thread ---------------------------------------------------------

T = TypeVar("T")


class Worker(Generic[T]):
    """Steps `steps` in a daemon thread until it ends, fails, or is stopped.

    `on_item(item)` runs in the worker thread after each item (record it). `stop()` asks the worker
    to end after the item in flight; the generator is then closed (its `finally` blocks run).
    `status` is "running", then "done", "stopped" or "failed"; a failure keeps its `exception` (a
    user-facing one is of a type in `expected`; anything else is a bug, logged with its traceback).
    Nothing here touches Streamlit: a page keeps the Worker in its session and polls it.
    """

    def __init__(self, steps: Iterator[T], *, on_item: Callable[[T], None] = lambda item: None,
                 expected: tuple[type[BaseException], ...] = (), name: str = "vrag-worker"):
        self.steps = steps
        self.on_item = on_item
        self.expected = expected
        self.name = name
        self.status = "running"
        self.items = 0
        self.exception: BaseException | None = None
        self.started = time.monotonic()
        self.ended: float | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    @property
    def unexpected(self) -> bool:
        """The work failed on a bug (not on a problem of an `expected` type)."""
        return self.exception is not None and not isinstance(self.exception, self.expected)

    @property
    def is_started(self) -> bool:
        return self._thread is not None

    def start(self) -> "Worker[T]":
        """Start the thread (once; later calls do nothing)."""
        if self._thread is None:
            self.started = time.monotonic()
            self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """End the work after the item in flight (at once if it is between items)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the work is over; True if it is."""
        return self._done.wait(timeout)

    def _work(self) -> None:
        status = "failed"
        try:
            while not self._stop.is_set():
                try:
                    item = next(self.steps)
                except StopIteration:
                    status = "done"
                    break
                self.items += 1
                self.on_item(item)
            else:
                status = "stopped"
                close = getattr(self.steps, "close", None)
                if close is not None:
                    close()
        except Exception as e:
            self.exception = e
            if not isinstance(e, self.expected):
                log.exception("%s failed", self.name)
        finally:
            self.ended = time.monotonic()
            self.status = status
            self._done.set()
