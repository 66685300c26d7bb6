"""Several model servers answering the same model: spread episodes over them, survive one failing.

- Each episode runs on the replica with the fewest episodes in flight (ties: the first in
  `--base-url` order), so a slow or smaller server gets fewer episodes at once, and an episode's
  calls all go to one server (vLLM's prefix cache keeps its growing conversation warm).
- When a model call fails (a PolicyError: server down, timeout, HTTP error), the episode continues
  ONCE on another replica, from its last recorded turn: the conversation is rebuilt from the
  trajectory (agent/conversation.py), so the other server gets exactly the call that failed and a
  deterministic model gives the same episode as an uninterrupted run; no model work is lost. The
  failover is recorded in `trajectory.config["failover"]`. If that replica fails too, or there is no
  other one, the episode is recorded as an error (a resumed run retries it).
  Why not record the first failure as an error: a server that dies is infrastructure, not the
  model; errors would make the accuracy depend on which server died, and force a resume.
- A replica that fails is asked `probe` (GET /models for an OpenAI-compatible server); if it does
  not answer, or it has failed `max_failures` calls in a row, it is taken out for `cooldown`
  seconds, then tried again. With every replica out, episodes are recorded as errors at once (the
  run goes on, the errors are counted, and resuming later runs them). A pool of one server never
  takes it out: every episode tries it, as a run on one server always did.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

from agent.loop import AgentConfig, run_episode
from agent.policies.base import Completion, Policy, PolicyError
from agent.search import Searcher
from agent.trajectory import Trajectory, Turn

log = logging.getLogger(__name__)

Probe = Callable[[Policy], bool]  # True if the replica's server answers (e.g. GET /models)


class Stop(Protocol):
    """Anything with `is_set()` (a threading.Event): set, the episode ends after its current turn."""

    def is_set(self) -> bool: ...


@dataclass
class Replica:
    policy: Policy
    position: int  # in the order given
    in_flight: int = 0
    episodes: int = 0  # episodes started here
    failures: int = 0  # model calls failed in a row
    down_until: float = 0.0  # time.monotonic() before which it is not used
    last_error: str | None = None

    @property
    def name(self) -> str:
        info = self.policy.describe()
        return str(info.get("base_url") or info.get("description") or info.get("name"))


class _Watched:
    """A policy that remembers whether its last call failed (the loop records the failure as an error)."""

    def __init__(self, policy: Policy):
        self._policy = policy
        self.name = policy.name
        self.failure: PolicyError | None = None

    def describe(self) -> dict:
        return self._policy.describe()

    def complete(self, messages: list[dict]) -> Completion:
        try:
            completion = self._policy.complete(messages)
        except PolicyError as e:
            self.failure = e
            raise
        self.failure = None
        return completion


class ReplicaPool:
    """Policies for the same model on different servers (a pool of one is a plain policy)."""

    def __init__(self, policies: list[Policy], probe: Probe | None = None, cooldown: float = 30.0,
                 max_failures: int = 3, clock: Callable[[], float] = time.monotonic):
        if not policies:
            raise ValueError("a replica pool needs at least one policy")
        self.replicas = [Replica(p, i) for i, p in enumerate(policies)]
        self.probe = probe
        self.cooldown = cooldown
        self.max_failures = max_failures
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def primary(self) -> Policy:
        return self.replicas[0].policy

    def acquire(self, avoid: Replica | None = None) -> Replica | None:
        """The usable replica with the fewest episodes in flight (None if every other one is out)."""
        with self._lock:
            now = self._clock()
            usable = [r for r in self.replicas if r is not avoid and r.down_until <= now]
            if not usable:
                return None
            chosen = min(usable, key=lambda r: (r.in_flight, r.position))
            chosen.in_flight += 1
            chosen.episodes += 1
            return chosen

    def release(self, replica: Replica, failure: PolicyError | None) -> None:
        """The episode left `replica`; `failure` is the error of its last call, if it failed."""
        with self._lock:
            replica.in_flight -= 1
            if failure is None:
                replica.failures = 0
                return
            replica.failures += 1
            replica.last_error = str(failure)
            strikes = replica.failures
            if len(self.replicas) == 1:  # the only server: every episode keeps trying it
                return
            replica.down_until = self._clock() + self.cooldown  # out while it is probed
        answers = self.probe(replica.policy) if self.probe is not None else True
        if answers and strikes < self.max_failures:
            with self._lock:
                replica.down_until = 0.0
            return
        log.warning("model server %s taken out for %.0f s (%s): %s", replica.name, self.cooldown,
                    "does not answer" if not answers else f"{strikes} failed calls in a row", failure)

    def status(self) -> list[dict]:
        """Per replica: name, in flight, episodes started, whether it is out now, its last error."""
        now = self._clock()
        with self._lock:
            return [{"name": r.name, "in_flight": r.in_flight, "episodes": r.episodes, "out": r.down_until > now,
                     "last_error": r.last_error} for r in self.replicas]

    def all_out_message(self) -> str:
        names = "; ".join(f"{r.name} ({r.last_error or 'out'})" for r in self.replicas)
        return f"every model server is out of service: {names}"


def run_on_pool(trajectory: Trajectory, pool: ReplicaPool, searcher: Searcher, config: AgentConfig,
                stop: Stop | None = None) -> Iterator[Turn]:
    """`run_episode` on the pool's least busy replica, continuing once on another if a model call fails.

    Yields each turn as the loop does. `stop` (set from another thread) ends the episode after the
    current turn, marking it `stopped`.
    """
    replica = pool.acquire()
    if replica is None:
        trajectory.error = pool.all_out_message()
        return
    trajectory.policy = replica.policy.describe()
    failed_over = False
    while True:
        watched = _Watched(replica.policy)
        try:
            for turn in run_episode(trajectory, watched, searcher, config):
                yield turn
                if stop is not None and stop.is_set() and not trajectory.finished:
                    trajectory.stopped = True
                    return
        finally:
            pool.release(replica, watched.failure)
        if watched.failure is None or failed_over:
            return
        other = pool.acquire(avoid=replica)
        if other is None:
            return
        trajectory.config = {**trajectory.config, "failover": {
            "from": replica.name, "to": other.name, "at_turn": len(trajectory.turns), "error": trajectory.error or ""}}
        log.warning("episode %s: %s failed at turn %d, continuing on %s", trajectory.id, replica.name, len(trajectory.turns), other.name)
        trajectory.error = None
        replica, failed_over = other, True
