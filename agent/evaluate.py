"""Evaluation over a question set in the reference dataset format.

    {"examples": [{"uid", "query", "reference_answer",
                   "meta_info": {"file_name", "reference_page": [1-based pages],
                                 "reference_images": [image file names],   # optional
                                 "page_ids": [index page ids],              # optional
                                 "evidence_box": ...}}]}                    # optional

Gold page ids follow the index naming (`{pdf_stem}_{page}`): `page_ids` if given, else the stems of
`reference_images`, else `file_name`'s stem joined with each `reference_page`.

Gold evidence boxes (`meta_info.bbox` or `evidence_box`) go onto the trajectory as `gold["boxes"]`
and are scored by agent/eval_grounding.py.

`run_example` runs and scores one question (on a `ReplicaPool`, agent/eval_replicas.py); `evaluate`
is a generator yielding one `ExampleResult` per question, one at a time; agent/eval_concurrency.py
runs many at once into a resumable run folder. `saved_result` rebuilds a result from a saved
trajectory alone (the summary is always computed from what is on disk); `summarize` turns results
into the summary the CLI prints.
"""
from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from agent.eval_grounding import GoldBoxError, gold_boxes, grounding_scores
from agent.eval_replicas import ReplicaPool, Stop, run_on_pool
from agent.loop import AgentConfig, new_trajectory
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
    outcome: str = ""  # Trajectory.outcome: answered, no answer, error, stopped, unfinished
    protocol: str = ""  # the protocol profile it ran with (agent/protocol.py)
    grounding: dict[str, float] = field(default_factory=dict)  # agent/eval_grounding.grounding_scores

    def to_dict(self) -> dict:
        return asdict(self)


def first_search_hits(trajectory: Trajectory) -> list[str]:
    """Page ids of the first search's ranked hits ([] if the episode never searched)."""
    for turn in trajectory.turns:
        if turn.action == "search":
            return [h["page_id"] for h in turn.hits]
    return []


def saved_result(trajectory: Trajectory, seconds: float | None = None) -> ExampleResult:
    """The result of a scored trajectory, from the trajectory alone (its gold, rewards and turns)."""
    gold = trajectory.gold or {}
    scores = dict(trajectory.rewards) or score_trajectory(trajectory)
    hits = first_search_hits(trajectory)
    if seconds is None:
        seconds = (trajectory.config.get("eval") or {}).get("seconds")
        if not isinstance(seconds, (int, float)):
            seconds = sum(t.model_seconds + t.tool_seconds for t in trajectory.turns)
    return ExampleResult(
        uid=str(gold.get("uid", trajectory.id)),
        question=trajectory.question,
        reference_answer=str(gold.get("answer", "")),
        answer=trajectory.answer,
        trajectory_id=trajectory.id,
        scores=scores,
        correct=scores.get("answer", 0.0),
        first_search_recall_at_1=recall_at(hits, gold.get("pages", []), 1),
        first_search_recall_at_5=recall_at(hits, gold.get("pages", []), 5),
        pages_shown=trajectory.retrieved_pages,
        turns=len(trajectory.turns),
        invalid_turns=sum(t.action == "invalid" for t in trajectory.turns),
        finished=trajectory.finished,
        seconds=float(seconds),
        error=trajectory.error,
        error_hints=dict(trajectory.error_hints),
        outcome=trajectory.outcome,
        protocol=str(trajectory.config.get("protocol", "")),
        grounding=grounding_scores(trajectory),
    )


def result_of(example: Example, trajectory: Trajectory, seconds: float, judge: LLMJudge | None = None,
              weights: RewardWeights = RELEASED_WEIGHTS) -> ExampleResult:
    """Score `trajectory` (its rewards are set) and return its result; a judge that fails leaves the
    exact-match scores and the result names its failure."""
    try:
        trajectory.rewards = score_trajectory(trajectory, judge=judge, weights=weights)
        judge_failure = None
    except PolicyError as e:
        trajectory.rewards = score_trajectory(trajectory, judge=None, weights=weights)
        judge_failure = e
    result = saved_result(trajectory, seconds)
    if judge_failure is not None and result.error is None:
        result.error = f"the judge failed: {judge_failure}"
        result.error_hints = {k: v for k, v in (("cli", judge_failure.cli_hint), ("app", judge_failure.app_hint)) if v}
    return result


def example_gold(example: Example) -> dict:
    """What a trajectory is scored against: answer, gold pages, uid, and gold boxes where the dataset has them."""
    gold = {"answer": example.reference_answer, "pages": example.gold_pages, "uid": example.uid}
    try:
        boxes = gold_boxes(example.meta_info or {}, example.gold_pages)
    except GoldBoxError as e:
        log.warning("question %s: its evidence boxes are not scored: %s", example.uid, e)
        boxes = {}
    if boxes:
        gold["boxes"] = boxes
    return gold


def run_example(example: Example, policy: Policy | ReplicaPool, searcher: Searcher, config: AgentConfig,
                store: TrajectoryStore | None = None, judge: LLMJudge | None = None,
                weights: RewardWeights = RELEASED_WEIGHTS, trajectory_id: str | None = None,
                stop: Stop | None = None, **extra_config) -> ExampleResult:
    """Run one question's episode, score it, save its trajectory (if `store`) and return its result.

    `policy` may be a ReplicaPool (agent/eval_replicas.py). The trajectory is saved even when the
    episode raised (a bug): then it is recorded as an error and the evaluation goes on.
    """
    pool = policy if isinstance(policy, ReplicaPool) else ReplicaPool([policy])
    trajectory = new_trajectory(example.query, pool.primary, config, gold=example_gold(example), **extra_config)
    if trajectory_id is not None:
        trajectory.id = trajectory_id
    started = time.perf_counter()
    try:
        for _ in run_on_pool(trajectory, pool, searcher, config, stop):
            pass
    except Exception as e:  # a bug: recorded, so one question does not end a long evaluation
        log.exception("question %s: the episode raised", example.uid)
        trajectory.error = f"internal error ({e.__class__.__name__}: {e}); please report it with this trajectory"
    except BaseException:  # Ctrl-C: keep what was done, unscored (a resumed run runs it again)
        if store is not None:
            store.save(trajectory)
        raise
    seconds = time.perf_counter() - started
    trajectory.config = {**trajectory.config, "eval": {**(trajectory.config.get("eval") or {}), "seconds": round(seconds, 3)}}
    result = result_of(example, trajectory, seconds, judge, weights)
    if store is not None:
        store.save(trajectory)
    log.info("%s: %s (%.1f s)", example.uid, result.outcome if result.error or not result.finished else
             ("correct" if result.correct else "wrong"), seconds)
    return result


def evaluate(
    examples: Iterable[Example],
    policy: Policy,
    searcher: Searcher,
    config: AgentConfig,
    store: TrajectoryStore | None = None,
    judge: LLMJudge | None = None,
    weights: RewardWeights = RELEASED_WEIGHTS,
) -> Iterator[ExampleResult]:
    """Run one episode per example, in order, save its trajectory (if `store`), and yield its result.

    A question whose model call, search or judge fails yields a result with `error` set (its
    partial trajectory saved with that error) and the evaluation goes on with the next.
    """
    for example in examples:
        yield run_example(example, policy, searcher, config, store, judge, weights)


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
        **grounding_summary(results),
    }


def grounding_summary(results: list[ExampleResult]) -> dict:
    """Means of the grounding metrics over the questions that have them (with how many do)."""
    boxed = [r for r in results if "grounding_iou" in r.grounding]
    attended = [r for r in results if "attention_gold_share" in r.grounding]
    return {
        "grounding_questions": len(boxed),
        "grounding_iou": _mean([r.grounding["grounding_iou"] for r in boxed]),
        "grounding_cover": _mean([r.grounding["grounding_cover"] for r in boxed]),
        "crop_rate": _mean([float(r.grounding["crops"] > 0) for r in boxed]),
        "attention_questions": len(attended),
        "attention_gold_share": _mean([r.grounding["attention_gold_share"] for r in attended]),
    }
