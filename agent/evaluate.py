"""Evaluation over a question set in the reference dataset format.

    {"examples": [{"uid", "query", "reference_answer",
                   "meta_info": {"file_name", "reference_page": [1-based pages],
                                 "reference_images": [image file names],   # optional
                                 "page_ids": [index page ids],              # optional
                                 "evidence_box": ...}}]}                    # optional

Gold page ids follow the index naming (`{pdf_stem}_{page}`): `page_ids` if given, else the stems of
`reference_images`, else `file_name`'s stem joined with each `reference_page`.

`evaluate` is a generator yielding one `ExampleResult` per question as it finishes (the app shows
progress); `summarize` turns the results into the summary the CLI prints.
"""
from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from agent.loop import AgentConfig, new_trajectory, run_episode
from agent.policies.base import Policy, PolicyError
from agent.rewards import RELEASED_WEIGHTS, LLMJudge, RewardWeights, recall_at, score_trajectory
from agent.search import Searcher
from agent.trajectory import Trajectory, TrajectoryStore

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset file that cannot be read; the message names the file and the problem."""


@dataclass
class Example:
    uid: str
    query: str
    reference_answer: str
    gold_pages: list[str] = field(default_factory=list)
    file_name: str = ""
    evidence_box: object = None  # kept as given (format varies between sets)
    meta_info: dict = field(default_factory=dict)


def gold_page_ids(meta: dict) -> list[str]:
    if meta.get("page_ids"):
        return [str(p) for p in meta["page_ids"]]
    if meta.get("reference_images"):
        return [Path(str(name)).stem for name in meta["reference_images"]]
    if meta.get("file_name") and meta.get("reference_page"):
        stem = Path(str(meta["file_name"])).stem
        return [f"{stem}_{int(p)}" for p in meta["reference_page"]]
    return []


def parse_examples(data: dict, where: str = "dataset") -> list[Example]:
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise DatasetError(f"{where}: expected an object with an 'examples' list")
    examples = []
    for i, raw in enumerate(data["examples"]):
        try:
            meta = raw.get("meta_info") or {}
            examples.append(Example(
                uid=str(raw.get("uid", i)),
                query=str(raw["query"]),
                reference_answer=str(raw.get("reference_answer", "")),
                gold_pages=gold_page_ids(meta),
                file_name=str(meta.get("file_name", "")),
                evidence_box=meta.get("evidence_box"),
                meta_info=meta,
            ))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DatasetError(f"{where}: example {i} is malformed ({e.__class__.__name__}: {e})") from e
    return examples


def load_dataset(path: str | Path) -> list[Example]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"no dataset file at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path} is not a readable JSON dataset: {e}") from e
    return parse_examples(data, str(path))


@dataclass
class ExampleResult:
    uid: str
    question: str
    reference_answer: str
    answer: str | None
    trajectory_id: str
    scores: dict[str, float]  # see rewards.score_trajectory
    correct: float  # the answer score: judge if given, else exact match
    first_search_recall_at_1: float
    first_search_recall_at_5: float
    pages_shown: list[str]  # page ids shown to the model, in order
    turns: int
    invalid_turns: int
    finished: bool
    seconds: float
    error: str | None = None  # why the episode (or its judge) failed; the other questions go on
    error_hints: dict[str, str] = field(default_factory=dict)  # {"cli": ..., "app": ...}: what to do about it

    def to_dict(self) -> dict:
        return asdict(self)


def first_search_hits(trajectory: Trajectory) -> list[str]:
    """Page ids of the first search's ranked hits ([] if the episode never searched)."""
    for turn in trajectory.turns:
        if turn.action == "search":
            return [h["page_id"] for h in turn.hits]
    return []


def result_of(example: Example, trajectory: Trajectory, seconds: float, judge: LLMJudge | None = None,
              weights: RewardWeights = RELEASED_WEIGHTS) -> ExampleResult:
    """Score `trajectory`; a judge that fails leaves the exact-match scores and names its failure."""
    error, hints = trajectory.error, dict(trajectory.error_hints)
    try:
        scores = score_trajectory(trajectory, judge=judge, weights=weights)
    except PolicyError as e:
        scores = score_trajectory(trajectory, judge=None, weights=weights)
        error = error or f"the judge failed: {e}"
        hints = hints or {k: v for k, v in (("cli", e.cli_hint), ("app", e.app_hint)) if v}
    trajectory.rewards = scores
    hits = first_search_hits(trajectory)
    return ExampleResult(
        uid=example.uid,
        question=example.query,
        reference_answer=example.reference_answer,
        answer=trajectory.answer,
        trajectory_id=trajectory.id,
        scores=scores,
        correct=scores["answer"],
        first_search_recall_at_1=recall_at(hits, example.gold_pages, 1),
        first_search_recall_at_5=recall_at(hits, example.gold_pages, 5),
        pages_shown=trajectory.retrieved_pages,
        turns=len(trajectory.turns),
        invalid_turns=sum(t.action == "invalid" for t in trajectory.turns),
        finished=trajectory.finished,
        seconds=seconds,
        error=error,
        error_hints=hints,
    )


def evaluate(
    examples: Iterable[Example],
    policy: Policy,
    searcher: Searcher,
    config: AgentConfig,
    store: TrajectoryStore | None = None,
    judge: LLMJudge | None = None,
    weights: RewardWeights = RELEASED_WEIGHTS,
) -> Iterator[ExampleResult]:
    """Run one episode per example, save its trajectory (if `store`), and yield its result.

    A question whose model call, search or judge fails yields a result with `error` set (its
    partial trajectory saved with that error) and the evaluation goes on with the next.
    """
    for example in examples:
        trajectory = new_trajectory(example.query, policy, config, gold={
            "answer": example.reference_answer, "pages": example.gold_pages, "uid": example.uid,
        })
        started = time.perf_counter()
        try:
            for _ in run_episode(trajectory, policy, searcher, config):
                pass
        finally:
            seconds = time.perf_counter() - started
            if store is not None:  # keep even a partial trajectory when something raised
                store.save(trajectory)
        result = result_of(example, trajectory, seconds, judge, weights)
        if store is not None:
            store.save(trajectory)  # now with its rewards
        log.info("%s: %s (%.1f s)", example.uid, "correct" if result.correct else "wrong", seconds)
        yield result


def _mean(values: list[float]) -> float:
    return float(statistics.fmean(values)) if values else 0.0


def summarize(results: list[ExampleResult]) -> dict:
    """The evaluation summary (all rates in [0, 1]; seconds are wall time per question)."""
    n = len(results)
    total_turns = sum(r.turns for r in results)
    return {
        "examples": n,
        "accuracy": _mean([r.correct for r in results]),
        "exact_match": _mean([r.scores.get("exact_match", 0.0) for r in results]),
        "anls": _mean([r.scores.get("anls", 0.0) for r in results]),
        "recall@1": _mean([r.first_search_recall_at_1 for r in results]),
        "recall@5": _mean([r.first_search_recall_at_5 for r in results]),
        "mean_ndcg": _mean([r.scores.get("ndcg", 0.0) for r in results]),
        "mean_reward": _mean([r.scores.get("reward", 0.0) for r in results]),
        "mean_turns": total_turns / n if n else 0.0,
        "invalid_action_rate": sum(r.invalid_turns for r in results) / total_turns if total_turns else 0.0,
        "finish_rate": _mean([float(r.finished) for r in results]),
        "p50_seconds": float(statistics.median([r.seconds for r in results])) if results else 0.0,
        "errors": sum(r.error is not None for r in results),
    }
