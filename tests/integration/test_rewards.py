"""Rewards on hand-computed cases (log2(3) = 1.58496, log2(5) = 2.32193)."""
from __future__ import annotations

import pytest

from agent.policies.openai_chat import OpenAIChatPolicy
from agent.rewards import (
    LLMJudge,
    RewardWeights,
    anls,
    combined_reward,
    exact_match,
    format_ok,
    levenshtein,
    ndcg,
    normalize_answer,
    recall_at,
    score_trajectory,
)
from agent.trajectory import Trajectory, Turn
from support.fake_openai_server import FakeOpenAIServer


@pytest.mark.parametrize("retrieved, gold, expected", [
    # DCG = 1/log2(3) + 1/log2(5) = 0.63093 + 0.43068 = 1.06161; IDCG = 1 + 1/log2(3) = 1.63093
    (["a", "g1", "b", "g2"], ["g1", "g2"], 1.06161 / 1.63093),
    # one of two gold pages, at rank 1: 1 / 1.63093 (the missing gold page still counts in IDCG)
    (["g1"], ["g1", "g2"], 1 / 1.63093),
    (["g1", "g2"], ["g2", "g1"], 1.0),
    (["x", "g"], ["g"], 1 / 1.58496),
    (["g", "g"], ["g"], 1.0),  # a repeat is not a second hit
    (["x", "g", "g"], ["g"], 1 / 1.58496),
    ([], ["g"], 0.0),
    (["a", "b"], ["g"], 0.0),
    (["g"], [], 0.0),  # no gold: nothing to reward
])
def test_ndcg(retrieved, gold, expected):
    assert ndcg(retrieved, gold) == pytest.approx(expected, abs=1e-5)


def test_recall_at():
    hits = ["a", "g1", "b", "c", "g2", "d"]
    assert recall_at(hits, ["g1"], 1) == 0.0
    assert recall_at(hits, ["g1"], 2) == 1.0
    assert recall_at(hits, ["g1", "g2"], 5) == 1.0
    assert recall_at(hits, ["g1", "g2"], 4) == 0.5
    assert recall_at(hits, [], 5) == 0.0


@pytest.mark.parametrize("text, expected", [
    ("The Answer!", "answer"),
    ("  12.5 %  ", "12 5"),
    ("价格：１２元。", "价格 12元"),  # full-width digits and Chinese punctuation
    ("a cat and an apple", "cat and apple"),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match():
    assert exact_match("Beijing", "beijing.") == 1.0
    assert exact_match("the Beijing", ["Shanghai", "Beijing"]) == 1.0
    assert exact_match("12%", "12 %") == 1.0
    assert exact_match("Beijing city", "Beijing") == 0.0
    assert exact_match("", "x") == 0.0


def test_levenshtein():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("abc", "abc") == 0


@pytest.mark.parametrize("pred, refs, expected", [
    ("hallo", "hello", 0.8),  # 1 edit / 5
    ("Beijing ", "beijing", 1.0),
    ("abc", "xyz", 0.0),
    ("ab", "abcd", 0.0),  # NL = 0.5 reaches the threshold
    ("abc", "abcd", 0.75),
    ("x", ["abcd", "x"], 1.0),  # best reference
    ("", "", 1.0),
    ("", "abc", 0.0),
])
def test_anls(pred, refs, expected):
    assert anls(pred, refs) == pytest.approx(expected)


def test_combined_reward_released_and_custom_weights():
    assert combined_reward(1.0, True, 0.5) == pytest.approx(0.7 + 0.1 + 0.2 * 0.5)
    assert combined_reward(1.0, False, 1.0) == 0.0  # gated on format
    paper = RewardWeights(answer=0.5, format=0.2, retrieval=0.3, gate_on_format=False)
    assert combined_reward(0.0, False, 1.0, paper) == pytest.approx(0.3)
    assert combined_reward(1.0, True, 1.0, paper) == pytest.approx(1.0)


def _trajectory(actions: list[str], answer: str | None, shown: list[str | None]) -> Trajectory:
    turns = [Turn(index=i, raw_text="", action=a, shown_page_id=p) for i, (a, p) in enumerate(zip(actions, shown))]
    return Trajectory(question="What is the capital?", policy={"name": "test"}, turns=turns, answer=answer,
                      finished=answer is not None, gold={"answer": "Beijing", "pages": ["g"]})


def test_format_ok():
    assert format_ok(_trajectory(["search", "answer"], "x", ["g", None]))
    assert not format_ok(_trajectory(["answer"], "x", [None]))  # no search
    assert not format_ok(_trajectory(["search", "bbox"], None, ["g", None]))  # no answer


def test_score_trajectory_by_hand():
    traj = _trajectory(["search", "search", "answer"], "beijing", ["x", "g", None])
    scores = score_trajectory(traj)
    # ndcg = 1/log2(3) = 0.63093; reward = 0.7*1 + 0.1*1 + 0.2*0.63093
    assert scores["ndcg"] == pytest.approx(0.63093, abs=1e-5)
    assert scores["format"] == 1.0 and scores["exact_match"] == 1.0 and scores["anls"] == 1.0
    assert scores["reward"] == pytest.approx(0.8 + 0.2 * 0.63093, abs=1e-5)
    unfinished = _trajectory(["search"], None, ["g"])
    assert score_trajectory(unfinished)["reward"] == 0.0 and score_trajectory(unfinished)["ndcg"] == 1.0


def test_llm_judge_over_http():
    script = ["<judge>True</judge>", "I think <judge> false </judge>", "no verdict"]
    with FakeOpenAIServer(script, model="judge-model") as server:
        judge = LLMJudge(OpenAIChatPolicy(base_url=server.base_url, model="judge-model"))
        assert judge("Capital of China?", "Beijing", "Peking") is True
        assert judge("Capital of China?", "Beijing", "Shanghai") is False
        assert judge("Capital of China?", "Beijing", "x") is None
        sent = server.requests[0]["messages"]
        assert len(sent) == 1 and sent[0]["role"] == "user"
        text = sent[0]["content"][0]["text"]
        assert "Question: Capital of China?" in text and "Reference answer: Beijing" in text and "Model answer: Peking" in text
        # the judge's verdict becomes the answer score
        traj = _trajectory(["search", "answer"], "Peking", ["g", None])
        server.script.append("<judge>True</judge>")
        scores = score_trajectory(traj, judge=judge)
        assert scores["exact_match"] == 0.0 and scores["judge"] == 1.0 and scores["answer"] == 1.0
        assert scores["reward"] == pytest.approx(0.7 + 0.1 + 0.2)
