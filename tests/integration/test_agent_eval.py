"""Evaluation: the reference dataset format, one saved trajectory per question, the summary by hand."""
from __future__ import annotations

import json

import pytest

from agent.evaluate import DatasetError, Example, ExampleResult, evaluate, gold_page_ids, load_dataset, parse_examples, summarize
from agent.loop import AgentConfig
from agent.policies import make_policy
from agent.search import LocalSearcher
from agent.trajectory import TrajectoryStore
from support.agent_index import open_tiny_index
from support.fake_openai_server import FakeOpenAIServer

MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"


@pytest.mark.parametrize("meta, expected", [
    ({"file_name": "report.pdf", "reference_page": [2, 3]}, ["report_2", "report_3"]),
    ({"file_name": "decks/aliyun4.pdf", "reference_page": [1]}, ["aliyun4_1"]),
    ({"file_name": "x.pdf", "reference_page": [1], "reference_images": ["img/slide_3_1024.jpg"]}, ["slide_3_1024"]),
    ({"page_ids": ["a_1", "b_2"], "reference_images": ["z.jpg"]}, ["a_1", "b_2"]),
    ({"file_name": "x.pdf"}, []),
    ({}, []),
])
def test_gold_page_ids(meta, expected):
    assert gold_page_ids(meta) == expected


def test_load_dataset(tmp_path):
    data = {"examples": [
        {"uid": "q1", "query": "What was the revenue?", "reference_answer": "4.2 billion",
         "meta_info": {"file_name": "report.pdf", "reference_page": [1], "evidence_box": [[1, 2, 3, 4]]}},
        {"uid": 7, "query": "How many staff?", "reference_answer": "412", "meta_info": {"reference_images": ["report_2.jpg"]}},
    ]}
    path = tmp_path / "set.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    examples = load_dataset(path)
    assert examples[0] == Example(uid="q1", query="What was the revenue?", reference_answer="4.2 billion", gold_pages=["report_1"],
                                  file_name="report.pdf", evidence_box=[[1, 2, 3, 4]], meta_info=data["examples"][0]["meta_info"])
    assert examples[1].uid == "7" and examples[1].gold_pages == ["report_2"]


def test_load_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="no dataset file at"):
        load_dataset(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(DatasetError, match="not a readable JSON dataset"):
        load_dataset(bad)
    with pytest.raises(DatasetError, match="'examples' list"):
        parse_examples({"data": []})
    with pytest.raises(DatasetError, match="example 1 is malformed"):
        parse_examples({"examples": [{"query": "ok"}, {"reference_answer": "no query"}]})


def test_evaluate_saves_each_trajectory_and_summarises(tmp_path):
    index = open_tiny_index()
    examples = [
        Example("q1", "What was the revenue in 2023?", "4.2 billion dollars", ["report_1"]),
        Example("q2", "How many staff?", "412", ["report_2"]),
    ]
    script = [
        "<think>a</think><search>revenue 2023</search>", "<think>b</think><answer>4.2 billion dollars</answer>",  # q1: right
        "<think>a</think><search>revenue 2023</search>", "oops", "<think>c</think><answer>400</answer>",  # q2: wrong page, invalid, wrong
    ]
    store = TrajectoryStore(tmp_path)
    with FakeOpenAIServer(script) as server:
        policy = make_policy("vllm", base_url=server.base_url, model=MODEL)
        results = []
        for result in evaluate(examples, policy, LocalSearcher(index), AgentConfig(max_turns=5), store=store):
            assert store.load(result.trajectory_id).rewards == result.scores  # saved before it is yielded
            results.append(result)
    assert [r.uid for r in results] == ["q1", "q2"]
    q1, q2 = results
    assert q1.correct == 1.0 and q1.first_search_recall_at_1 == 1.0 and q1.turns == 2 and q1.invalid_turns == 0
    assert q1.scores["ndcg"] == 1.0 and q1.scores["reward"] == pytest.approx(1.0)
    assert q2.correct == 0.0 and q2.turns == 3 and q2.invalid_turns == 1
    # q2's first search ranked report_1 first; report_2 is somewhere in the top 3 of a 3-page index
    assert q2.first_search_recall_at_1 == 0.0 and q2.first_search_recall_at_5 == 1.0
    assert q2.scores["ndcg"] == 0.0  # only report_1 was shown
    saved, broken = store.list()
    assert {t.id for t in saved} == {q1.trajectory_id, q2.trajectory_id} and broken == []
    assert {t.gold["uid"] for t in saved} == {"q1", "q2"}

    summary = summarize(results)
    assert summary["examples"] == 2 and summary["accuracy"] == 0.5
    assert summary["recall@1"] == 0.5 and summary["recall@5"] == 1.0
    assert summary["mean_ndcg"] == 0.5 and summary["mean_turns"] == 2.5
    assert summary["invalid_action_rate"] == pytest.approx(1 / 5) and summary["finish_rate"] == 1.0
    assert summary["p50_seconds"] == pytest.approx((q1.seconds + q2.seconds) / 2) and summary["errors"] == 0


def _result(seconds, correct=1.0, turns=2, invalid=0, finished=True, r1=1.0, r5=1.0, ndcg=1.0):
    return ExampleResult(uid="u", question="q", reference_answer="a", answer="a", trajectory_id="t",
                         scores={"ndcg": ndcg, "exact_match": correct, "anls": correct, "reward": 0.0, "answer": correct},
                         correct=correct, first_search_recall_at_1=r1, first_search_recall_at_5=r5, pages_shown=["p1"], turns=turns,
                         invalid_turns=invalid, finished=finished, seconds=seconds)


def test_summarize_by_hand():
    results = [_result(1.0), _result(5.0, correct=0.0, turns=4, invalid=2, finished=False, r1=0.0, ndcg=0.5), _result(3.0, turns=3, r5=0.0, r1=0.0, ndcg=0.0)]
    s = summarize(results)
    assert s["accuracy"] == pytest.approx(2 / 3) and s["recall@1"] == pytest.approx(1 / 3) and s["recall@5"] == pytest.approx(2 / 3)
    assert s["mean_ndcg"] == pytest.approx(0.5) and s["mean_turns"] == 3.0
    assert s["invalid_action_rate"] == pytest.approx(2 / 9) and s["finish_rate"] == pytest.approx(2 / 3)
    assert s["p50_seconds"] == 3.0
    assert summarize([])["examples"] == 0 and summarize([])["accuracy"] == 0.0
