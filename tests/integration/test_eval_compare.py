"""The per-question table and the comparison of two runs, on hand-made results and on two real run
folders written by `python -m agent eval` (two policies: one right on even questions, one on all)."""
from __future__ import annotations

import csv
import io
import json

import pytest

from agent.__main__ import main
from agent.eval_compare import compare_results, describe
from agent.eval_table import COLUMNS, row, to_csv, to_json
from agent.evaluate import ExampleResult, summarize
from support.agent_index import tiny_index_folder
from support.eval_replies import CALLS_PER_QUESTION, scripted_replier, write_dataset
from support.fake_openai_server import FakeOpenAIServer

MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"


def result(uid: str, correct: float, ndcg: float = 0.0, grounding: dict | None = None, question: str | None = None, turns: int = 3):
    return ExampleResult(uid=uid, question=question or f"question {uid}", reference_answer="a", answer="a" if correct else "b",
                         trajectory_id=f"t-{uid}", scores={"answer": correct, "exact_match": correct, "anls": correct, "ndcg": ndcg,
                                                           "format": 1.0, "reward": 0.7 * correct + 0.1 + 0.2 * ndcg},
                         correct=correct, first_search_recall_at_1=1.0, first_search_recall_at_5=1.0, pages_shown=["p_1", "p_2"],
                         turns=turns, invalid_turns=0, finished=True, seconds=1.25, outcome="answered", protocol="training",
                         grounding=grounding or {})


def test_a_row_has_every_column_and_leaves_missing_metrics_empty():
    r = row(result("q1", 1.0, 0.5, {"grounding_iou": 0.25, "grounding_cover": 1.0, "crops": 1.0, "crops_on_gold": 1.0}))
    assert tuple(r) == COLUMNS
    assert r["correct"] == 1.0 and r["ndcg"] == 0.5 and r["grounding_iou"] == 0.25 and r["pages_shown"] == "p_1 p_2"
    assert r["judge"] is None and r["attention_gold_share"] is None  # not 0: the metric does not apply
    rows = list(csv.DictReader(io.StringIO(to_csv([result("q1", 1.0), result("q2", 0.0)]))))
    assert [x["uid"] for x in rows] == ["q1", "q2"] and rows[0]["judge"] == "" and rows[1]["correct"] == "0.0"
    table = json.loads(to_json([result("q1", 1.0)], {"accuracy": 1.0}))
    assert table["summary"] == {"accuracy": 1.0} and table["columns"] == list(COLUMNS) and table["rows"][0]["judge"] is None


def test_compare_by_hand():
    a = [result("q1", 1.0, 1.0), result("q2", 0.0, 0.0), result("q3", 1.0, 0.5), result("q4", 0.0), result("qa", 1.0),
         result("qx", 1.0, question="old text")]
    b = [result("q1", 1.0, 1.0), result("q2", 1.0, 1.0), result("q3", 0.0, 0.5), result("q4", 0.0), result("qb", 0.0),
         result("qx", 1.0, question="new text")]
    c = compare_results(a, b, "A", "B")
    assert c.questions == 4 and c.fixed == ["q2"] and c.broken == ["q3"]
    assert c.only_a == ["qa"] and c.only_b == ["qb"] and c.different_text == ["qx"]
    assert c.summary_a["accuracy"] == 0.5 and c.summary_b["accuracy"] == 0.5 and c.deltas["accuracy"] == 0.0
    assert c.deltas["mean_ndcg"] == pytest.approx((2.5 - 1.5) / 4)
    assert [q["change"] for q in c.per_question] == ["same", "fixed", "broken", "same"]
    assert c.per_question[1]["ndcg_a"] == 0.0 and c.per_question[1]["ndcg_b"] == 1.0 and c.per_question[1]["answer_b"] == "a"
    text = "\n".join(describe(c))
    assert "fixed by B (wrong in A, right in B): 1\n  q2" in text and "broken by B (right in A, wrong in B): 1\n  q3" in text
    assert "accuracy: 0.500 -> 0.500 (+0.000)" in text and "only in A: 1" in text
    assert summarize([r for r in a[:4]])["accuracy"] == c.summary_a["accuracy"]


def test_eval_compare_cli_on_two_real_runs(tmp_path, capsys):
    n = 6
    answers = write_dataset(tmp_path / "set.json", n)
    everything_right = {q: a for q, a in zip(answers, [e["reference_answer"] for e in json.loads((tmp_path / "set.json").read_text())["examples"]])}
    index = str(tiny_index_folder() / "index")
    for name, replies in (("a", answers), ("b", everything_right)):
        with FakeOpenAIServer([scripted_replier(replies)] * (n * CALLS_PER_QUESTION)) as server:
            code = main(["eval", "--dataset", str(tmp_path / "set.json"), "--index", index, "--policy", "vllm", "--base-url", server.base_url,
                         "--model", MODEL, "--out", str(tmp_path / name), "--concurrency", "3", "--max-turns", "5"])
        assert code == 0
    capsys.readouterr()
    assert main(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    captured = capsys.readouterr()
    comparison = json.loads(captured.out)
    assert comparison["questions"] == n and comparison["fixed"] == ["q01", "q03", "q05"] and comparison["broken"] == []
    assert comparison["summary_a"]["accuracy"] == 0.5 and comparison["summary_b"]["accuracy"] == 1.0
    assert comparison["deltas"]["accuracy"] == 0.5 and comparison["deltas"]["grounding_iou"] == 0.0  # same crops in both
    assert "fixed by B (wrong in A, right in B): 3" in captured.err
    # a folder that is not a run is one clear line
    assert main(["eval", "compare", str(tmp_path / "a"), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path} is not an evaluation run") and err.count("\n") == 1
