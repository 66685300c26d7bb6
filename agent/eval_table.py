"""The per-question table of an evaluation: one row of every metric per question, as CSV and JSON.

A row is flat (a spreadsheet opens it): the answer scores (`scores`: exact_match, anls, judge,
answer, ndcg, format, reward), retrieval (first-search recall, pages shown), grounding
(agent/eval_grounding.py: best IoU, best cover, crops, attention share inside gold), cost and
outcome. A metric a question does not have (no gold boxes, no judge, no attention maps) is empty in
the CSV and null in the JSON, never 0, so means over a column stay honest.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from agent.eval_resume import write_atomically
from agent.evaluate import ExampleResult

SCORE_COLUMNS = ("answer", "exact_match", "anls", "judge", "ndcg", "format", "reward")
GROUNDING_COLUMNS = ("grounding_iou", "grounding_cover", "crops", "crops_on_gold", "attention_gold_share")
COLUMNS = (
    "uid", "question", "reference_answer", "answer_text", "outcome", "correct", *SCORE_COLUMNS,
    "recall@1", "recall@5", "pages_shown", *GROUNDING_COLUMNS,
    "turns", "invalid_turns", "seconds", "protocol", "error", "trajectory_id",
)


def row(result: ExampleResult) -> dict:
    """One question's row: every column of COLUMNS (None where the metric does not apply)."""
    out = {
        "uid": result.uid,
        "question": result.question,
        "reference_answer": result.reference_answer,
        "answer_text": result.answer,
        "outcome": result.outcome,
        "correct": result.correct,
        **{k: result.scores.get(k) for k in SCORE_COLUMNS},
        "recall@1": result.first_search_recall_at_1,
        "recall@5": result.first_search_recall_at_5,
        "pages_shown": " ".join(result.pages_shown),
        **{k: result.grounding.get(k) for k in GROUNDING_COLUMNS},
        "turns": result.turns,
        "invalid_turns": result.invalid_turns,
        "seconds": round(result.seconds, 3),
        "protocol": result.protocol,
        "error": result.error,
        "trajectory_id": result.trajectory_id,
    }
    return out


def rows(results: list[ExampleResult]) -> list[dict]:
    return [row(r) for r in results]


def to_csv(results: list[ExampleResult]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows(results):
        writer.writerow({k: "" if v is None else v for k, v in r.items()})
    return buffer.getvalue()


def to_json(results: list[ExampleResult], summary: dict | None = None) -> str:
    return json.dumps({"summary": summary or {}, "columns": list(COLUMNS), "rows": rows(results)}, ensure_ascii=False, indent=1)


def write_tables(folder: str | os.PathLike, results: list[ExampleResult], summary: dict) -> list[Path]:
    """Write results.csv, results.json and summary.json into `folder` (each replaced atomically)."""
    folder = Path(folder)
    paths = [folder / "results.csv", folder / "results.json", folder / "summary.json"]
    write_atomically(paths[0], to_csv(results))
    write_atomically(paths[1], to_json(results, summary))
    write_atomically(paths[2], json.dumps(summary, ensure_ascii=False, indent=1))
    return paths
