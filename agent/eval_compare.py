"""Comparing two evaluation runs of the same questions (two policies, two models, two protocols).

Questions are matched by uid (and must ask the same text). For the questions both runs have:
- which flipped: wrong in A and right in B ("fixed"), right in A and wrong in B ("broken");
- the summary of each run over exactly those questions, and B - A for every metric;
- per question, both runs' main metrics side by side.
Questions only one run has are listed, not scored. Everything is read from the runs' folders on
disk (agent/eval_resume.py), so a comparison needs neither the model nor the index.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from agent.eval_resume import EvalRun
from agent.evaluate import ExampleResult, summarize

SIDE_BY_SIDE = ("correct", "ndcg", "reward", "grounding_iou", "grounding_cover", "turns", "invalid_turns", "seconds")


def is_right(result: ExampleResult) -> bool:
    return result.correct >= 0.5


def _metric(result: ExampleResult, key: str):
    if key in ("correct", "turns", "invalid_turns", "seconds"):
        return getattr(result, key)
    if key in result.grounding:
        return result.grounding[key]
    return result.scores.get(key)


@dataclass
class Comparison:
    a: str  # labels (the run folders)
    b: str
    questions: int  # compared: in both runs, same text
    fixed: list[str] = field(default_factory=list)  # uids wrong in A, right in B
    broken: list[str] = field(default_factory=list)  # uids right in A, wrong in B
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    different_text: list[str] = field(default_factory=list)  # same uid, another question: not compared
    summary_a: dict = field(default_factory=dict)  # over the compared questions
    summary_b: dict = field(default_factory=dict)
    deltas: dict = field(default_factory=dict)  # B - A for every numeric summary metric
    per_question: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def compare_results(results_a: list[ExampleResult], results_b: list[ExampleResult], a: str = "A", b: str = "B") -> Comparison:
    """Compare two lists of results (A's order is kept)."""
    by_uid_b = {r.uid: r for r in results_b}
    uids_a = {r.uid for r in results_a}
    pairs, comparison = [], Comparison(a, b, 0)
    for ra in results_a:
        rb = by_uid_b.get(ra.uid)
        if rb is None:
            comparison.only_a.append(ra.uid)
        elif rb.question != ra.question:
            comparison.different_text.append(ra.uid)
        else:
            pairs.append((ra, rb))
    comparison.only_b = [r.uid for r in results_b if r.uid not in uids_a]
    comparison.questions = len(pairs)
    for ra, rb in pairs:
        change = "same" if is_right(ra) == is_right(rb) else ("fixed" if is_right(rb) else "broken")
        if change == "fixed":
            comparison.fixed.append(ra.uid)
        elif change == "broken":
            comparison.broken.append(ra.uid)
        comparison.per_question.append({
            "uid": ra.uid, "question": ra.question, "reference_answer": ra.reference_answer,
            "answer_a": ra.answer, "answer_b": rb.answer, "change": change,
            **{f"{k}_a": _metric(ra, k) for k in SIDE_BY_SIDE}, **{f"{k}_b": _metric(rb, k) for k in SIDE_BY_SIDE},
            "trajectory_a": ra.trajectory_id, "trajectory_b": rb.trajectory_id,
        })
    comparison.summary_a = summarize([ra for ra, _ in pairs])
    comparison.summary_b = summarize([rb for _, rb in pairs])
    comparison.deltas = {k: comparison.summary_b[k] - v for k, v in comparison.summary_a.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(comparison.summary_b.get(k), (int, float))}
    return comparison


def compare_runs(folder_a: str | os.PathLike, folder_b: str | os.PathLike) -> Comparison:
    """Compare the runs in two folders (EvalRunError if either holds none)."""
    run_a, run_b = EvalRun.load(folder_a), EvalRun.load(folder_b)
    results_a, _ = run_a.results()
    results_b, _ = run_b.results()
    return compare_results(results_a, results_b, str(folder_a), str(folder_b))


def describe(comparison: Comparison, limit: int = 20) -> list[str]:
    """A few lines for a person: what flipped and the main deltas."""
    c = comparison
    lines = [f"A = {c.a}", f"B = {c.b}", f"{c.questions} questions in both runs"]
    for key in ("accuracy", "mean_ndcg", "mean_reward", "grounding_iou", "mean_turns", "invalid_action_rate", "errors"):
        if key in c.deltas:
            lines.append(f"  {key}: {c.summary_a[key]:.3f} -> {c.summary_b[key]:.3f} ({c.deltas[key]:+.3f})")
    lines.append(f"fixed by B (wrong in A, right in B): {len(c.fixed)}")
    lines += [f"  {uid}" for uid in c.fixed[:limit]] + ([f"  ... {len(c.fixed) - limit} more"] if len(c.fixed) > limit else [])
    lines.append(f"broken by B (right in A, wrong in B): {len(c.broken)}")
    lines += [f"  {uid}" for uid in c.broken[:limit]] + ([f"  ... {len(c.broken) - limit} more"] if len(c.broken) > limit else [])
    for name, uids in (("only in A", c.only_a), ("only in B", c.only_b), ("same uid, other question (not compared)", c.different_text)):
        if uids:
            lines.append(f"{name}: {len(uids)}")
    return lines
