"""The loop's rules with an in-process policy and searcher: page de-duplication, budget and nudge,
invalid turns, infrastructure errors, streaming, and 10,000 random replies that never break it."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from agent.conversation import build_messages, image_count
from agent.loop import AgentConfig, new_trajectory, run_episode, run_to_end
from agent.policies.base import PolicyError
from agent.prompts import ALL_PAGES_SHOWN, FINAL_TURN_NUDGE, NO_ANSWER, NO_PAGES_FOUND, render_prompt
from agent.search import SearchError
from agent.trajectory import Trajectory
from support.agent_doubles import MemorySearcher, ScriptedPolicy, noise_page
from support.reply_strategies import replies

T = "<think>t</think>"
PAGES = {f"doc_{i}": noise_page(640, 400, i) for i in range(1, 4)}  # 256,000 px: sent unresized


def run(script, max_turns=10, top_k=10, pages=PAGES):
    policy = ScriptedPolicy(script)
    searcher = MemorySearcher(pages)
    config = AgentConfig(max_turns=max_turns, top_k=top_k)
    traj = new_trajectory("What is shown?", policy, config)
    return run_to_end(traj, policy, searcher, config), policy, searcher


def test_config_validation():
    with pytest.raises(ValueError, match="max_turns"):
        AgentConfig(max_turns=0)
    with pytest.raises(ValueError, match="top_k"):
        AgentConfig(top_k=0)
    with pytest.raises(ValueError, match="top_k must be an integer from 1 to 100"):
        AgentConfig(top_k=101)
    with pytest.raises(ValueError, match="unknown protocol profile"):
        AgentConfig(protocol="fast")
    assert AgentConfig().to_dict() == {"max_turns": 10, "top_k": 10, "protocol": "demo"}


def test_each_page_is_shown_at_most_once():
    script = [T + "<search>q</search>"] * 4 + [T + "<answer>done</answer>"]
    traj, policy, searcher = run(script)
    ranked = [h["page_id"] for h in traj.turns[0].hits]
    assert [t.shown_page_id for t in traj.turns[:4]] == ranked + [None]
    assert traj.turns[3].observation is None and traj.turns[3].feedback == ALL_PAGES_SHOWN
    assert traj.turns[3].action == "search" and traj.turns[3].error is None
    assert traj.retrieved_pages == ranked
    assert traj.answer == "done" and traj.finished
    # the model was told in a text-only user message
    last_messages = policy.calls[4]
    assert last_messages[-1] == {"role": "user", "content": [{"type": "text", "text": ALL_PAGES_SHOWN}]}


def test_top_k_limits_hits_and_empty_results_are_told():
    traj, *_ = run([T + "<search>q</search>", T + "<answer>a</answer>"], top_k=2)
    assert len(traj.turns[0].hits) == 2
    traj, *_ = run([T + "<search>q</search>", T + "<answer>a</answer>"], pages={})
    assert traj.turns[0].feedback == NO_PAGES_FOUND and traj.turns[0].hits == []


def test_budget_nudge_and_fallback():
    traj, policy, _ = run([T + "<search>a</search>", T + "<search>b</search>", T + "<search>c</search>"], max_turns=3)
    assert len(traj.turns) == 3 and len(policy.calls) == 3
    # the observation before the last call carries the nudge, after the image
    assert traj.turns[1].feedback == FINAL_TURN_NUDGE and traj.turns[0].feedback is None and traj.turns[2].feedback is None
    last_user = policy.calls[2][-1]
    assert [p["type"] for p in last_user["content"]] == ["image_url", "text"]
    assert last_user["content"][1]["text"] == FINAL_TURN_NUDGE
    assert traj.answer == NO_ANSWER and not traj.finished and traj.error is None


def test_nudge_joins_feedback_on_an_invalid_second_to_last_turn():
    traj, *_ = run(["no think", "still nothing"], max_turns=2)
    assert traj.turns[0].action == "invalid"
    assert traj.turns[0].feedback.endswith("\n" + FINAL_TURN_NUDGE)
    assert traj.answer == NO_ANSWER


def test_single_turn_budget_has_no_nudge():
    traj, policy, _ = run([T + "<search>a</search>"], max_turns=1)
    assert len(traj.turns) == 1 and traj.turns[0].feedback is None and traj.answer == NO_ANSWER


def test_invalid_turns_are_recorded_and_the_episode_goes_on():
    script = [
        T + "<bbox>[1, 2, 3, 4]</bbox>",  # before any image
        "I forgot to think <search>q</search>",
        T + "<search>q</search>",
        T + "<bbox>[0, 0, 2000, 2000]</bbox>",  # outside the 640x400 image
        T + "<bbox>[1, 2, 3]</bbox>",
        T + "<answer>42</answer>",
    ]
    traj, policy, _ = run(script)
    assert [t.action for t in traj.turns] == ["invalid", "invalid", "search", "invalid", "invalid", "answer"]
    assert "before any image" in traj.turns[0].error
    assert "missing <think>" in traj.turns[1].error
    assert "640x400" in traj.turns[3].feedback
    assert "expected 4 numbers" in traj.turns[4].error
    for t in traj.turns:
        if t.action == "invalid":
            assert t.observation is None and t.feedback and t.bbox_page is None
    # the feedback went back as one short text-only user message
    assert policy.calls[1][-1] == {"role": "user", "content": [{"type": "text", "text": traj.turns[0].feedback}]}
    assert traj.answer == "42" and traj.finished


def test_bbox_crops_the_last_image_and_records_both_coordinate_spaces():
    traj, *_ = run([T + "<search>q</search>", T + "<bbox>[100, 100, 300, 200]</bbox>", T + "<bbox>[0, 0, 50, 50]</bbox>", T + "<answer>x</answer>"])
    search, crop1, crop2 = traj.turns[:3]
    page = PAGES[search.shown_page_id]
    assert search.observation.region == [0, 0, 640, 400] and search.observation.input_size == (640, 400)
    # 640x400 is sent unresized: raw = input, so the crop is the box padded by 56 px
    assert crop1.acted_on == search.observation and crop1.bbox_model == [100, 100, 300, 200]
    assert crop1.bbox_page == [44, 44, 356, 256] == crop1.observation.region
    # 312x212 = 66,144 px < min: scaled up by sqrt(200704/66144) = 1.74193 -> 543x369
    assert crop1.observation.input_size == (543, 369)
    # crop of the crop: [0, 0, 50, 50] in 543x369 -> raw 28.73, 28.73 (312/543, 212/369), padded and clamped
    assert crop2.acted_on == crop1.observation
    assert crop2.bbox_page == [44, 44, 44 + 85, 44 + 85]
    sent = Image.open(io.BytesIO(traj.images[crop2.observation.file]))
    assert sent.size == crop2.observation.input_size
    expected = page.crop((44, 44, 129, 129)).resize(crop2.observation.input_size)
    assert np.abs(np.asarray(sent, dtype=int) - np.asarray(expected, dtype=int)).mean() < 20  # JPEG noise only


def test_a_query_the_engine_refuses_is_an_invalid_turn():
    traj, policy, _ = run([T + "<search>" + "word " * 500 + "</search>", T + "<answer>a</answer>"])
    turn = traj.turns[0]
    assert turn.action == "invalid" and "search refused" in turn.error and "2,000" in turn.error
    assert turn.feedback.startswith("The search engine refused your query") and turn.hits == []
    assert traj.finished and traj.error is None


def test_policy_error_stops_cleanly_and_keeps_turns():
    traj, policy, _ = run([T + "<search>q</search>", PolicyError("model server http://x/v1 is down")])
    assert len(traj.turns) == 1 and traj.error == "model server http://x/v1 is down"
    assert traj.answer is None and not traj.finished


class BrokenSearcher(MemorySearcher):
    def search(self, query, top_k):
        raise SearchError("cannot reach the search server at http://127.0.0.1:9/search")


def test_search_error_stops_cleanly_and_records_the_turn():
    policy = ScriptedPolicy([T + "<search>q</search>", T + "<answer>never</answer>"])
    config = AgentConfig()
    traj = new_trajectory("q?", policy, config)
    turns = list(run_episode(traj, policy, BrokenSearcher(PAGES), config))
    assert len(turns) == 1 and turns[0].raw_text == T + "<search>q</search>"
    assert "http://127.0.0.1:9/search" in traj.error and len(policy.calls) == 1


def test_a_page_fetch_failure_keeps_the_hits_found():
    class NoPages(MemorySearcher):
        def page_image(self, page_id):
            raise SearchError(f"the search server has no image for {page_id}")

    policy = ScriptedPolicy([T + "<search>q</search>"])
    config = AgentConfig()
    traj = new_trajectory("q?", policy, config)
    [turn] = list(run_episode(traj, policy, NoPages(PAGES), config))
    assert len(turn.hits) == 3 and turn.observation is None and traj.images == {}
    assert traj.error.startswith("the search server has no image for")


def test_bugs_raise():
    class Buggy(MemorySearcher):
        def search(self, query, top_k):
            raise ZeroDivisionError("a bug")

    policy = ScriptedPolicy([T + "<search>q</search>"])
    traj = new_trajectory("q?", policy, AgentConfig())
    with pytest.raises(ZeroDivisionError):
        list(run_episode(traj, policy, Buggy(PAGES), AgentConfig()))


def test_turns_stream_one_at_a_time():
    policy = ScriptedPolicy([T + "<search>q</search>", T + "<bbox>[0, 0, 100, 100]</bbox>", T + "<answer>a</answer>"])
    config = AgentConfig()
    traj = new_trajectory("q?", policy, config)
    episode = run_episode(traj, policy, MemorySearcher(PAGES), config)
    first = next(episode)
    assert first.action == "search" and len(policy.calls) == 1 and traj.turns == [first]
    second = next(episode)
    assert second.action == "bbox" and len(policy.calls) == 2
    assert next(episode).action == "answer"
    with pytest.raises(StopIteration):
        next(episode)


def test_messages_are_rebuilt_from_the_trajectory():
    traj, policy, _ = run([T + "<search>q</search>", "bad", T + "<bbox>[0, 0, 100, 100]</bbox>", T + "<answer>a</answer>"])
    # what the policy got each turn is exactly build_messages of the trajectory so far
    for i, sent in enumerate(policy.calls):
        partial = Trajectory(question=traj.question, policy=traj.policy, turns=traj.turns[:i])
        assert build_messages(partial, traj.images.__getitem__) == sent
    final = policy.calls[-1]
    assert final[0] == {"role": "user", "content": [{"type": "text", "text": render_prompt("What is shown?")}]}
    assert [m["role"] for m in final] == ["user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert image_count(final) == 2 and all(m.get("role") != "system" for m in final)


def test_timing_and_tokens_recorded():
    traj, *_ = run([T + "<search>q</search>", T + "<answer>a</answer>"])
    t = traj.turns[0]
    assert t.prompt_tokens == 10 and t.completion_tokens == 5 and t.tool_seconds > 0 and t.model_seconds >= 0


# --- 10,000 random replies ------------------------------------------------------------------

SMALL = {f"p_{i}": noise_page(448, 448, i) for i in range(4)}  # 200,704 px: sent unresized, which keeps this fast


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(script=st.lists(replies, min_size=10, max_size=10), budgets=st.lists(st.integers(1, 10), min_size=10, max_size=10))
def test_random_replies_never_break_the_loop(script, budgets):
    """1,000 examples x 10 replies = 10,000 replies: every episode uses at least one reply, so ten
    episodes (one per budget) always use all ten (asserted at the end)."""
    fed = 0
    for max_turns in budgets:
        if fed == len(script):
            break
        chunk = script[fed:fed + max_turns]
        policy = ScriptedPolicy(chunk)
        config = AgentConfig(max_turns=len(chunk), top_k=3)
        traj = new_trajectory("q?", policy, config)
        yielded = list(run_episode(traj, policy, MemorySearcher(SMALL), config))
        used = len(policy.calls)
        # every reply became exactly one recorded turn, verbatim
        assert traj.error is None and yielded == traj.turns and len(traj.turns) == used
        assert [t.raw_text for t in traj.turns] == chunk[:used]
        fed += used
        assert traj.finished == (traj.turns[-1].action == "answer")
        assert traj.answer is not None and (traj.finished or traj.answer == NO_ANSWER)
        shown = traj.retrieved_pages
        assert len(shown) == len(set(shown))
        for t in traj.turns:
            assert t.action in ("search", "bbox", "answer", "invalid")
            assert (t.action == "invalid") == (t.error is not None)
            if t.action == "invalid":
                assert t.feedback
            if t.observation is not None:
                assert t.observation.file in traj.images
                x1, y1, x2, y2 = t.observation.region
                w, h = SMALL[t.observation.page_id].size
                assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            if t.action == "bbox":
                assert t.acted_on is not None and t.bbox_page == t.observation.region
        assert image_count(build_messages(traj, traj.images.__getitem__)) == sum(t.observation is not None for t in traj.turns)
        assert Trajectory.from_dict(traj.to_dict()) == traj

    assert fed == len(script) == 10


# --- the episode deadline -------------------------------------------------------------------------


class SlowPolicy(ScriptedPolicy):
    def __init__(self, replies, seconds):
        super().__init__(replies)
        self.seconds = seconds

    def complete(self, messages):
        import time

        time.sleep(self.seconds)
        return super().complete(messages)


class SlowSearcher(MemorySearcher):
    def __init__(self, pages, seconds_by_call):
        super().__init__(pages)
        self.seconds_by_call = list(seconds_by_call)

    def search(self, query, top_k):
        import time

        time.sleep(self.seconds_by_call.pop(0) if self.seconds_by_call else 0)
        return super().search(query, top_k)


def test_config_validates_the_episode_timeout():
    assert AgentConfig(episode_timeout=2.5).to_dict() == {"max_turns": 10, "top_k": 10, "protocol": "demo", "episode_timeout": 2.5}
    for bad in (0, -1, float("inf"), float("nan"), True, "3"):
        with pytest.raises(ValueError, match="episode_timeout must be a positive number"):
            AgentConfig(episode_timeout=bad)


def test_episode_deadline_during_a_model_call():
    import time

    policy = SlowPolicy([T + "<search>q</search>"] * 5, seconds=0.4)
    config = AgentConfig(episode_timeout=1.0)
    traj = new_trajectory("q?", policy, config)
    started = time.monotonic()
    turns = list(run_episode(traj, policy, MemorySearcher(PAGES), config))
    late = time.monotonic() - started - 1.0
    assert -0.05 < late < 0.3  # ends at the deadline, not after the call
    assert len(turns) == 2 and traj.turns == turns and not traj.finished and traj.answer is None
    assert traj.error == "the episode did not finish within its 1 s limit (the model was still answering turn 3; 2 turns kept)"
    assert traj.error_hints["cli"].startswith("raise --episode-timeout") and traj.outcome == "error"


def test_episode_deadline_during_a_search_keeps_the_reply_and_drops_the_late_result(tmp_path):
    import time

    policy = ScriptedPolicy([T + "<search>a</search>", T + "<search>b</search>", T + "<answer>x</answer>"])
    searcher = SlowSearcher(PAGES, [0.0, 1.5])
    config = AgentConfig(episode_timeout=0.6)
    traj = new_trajectory("q?", policy, config)
    started = time.monotonic()
    list(run_episode(traj, policy, searcher, config))
    assert time.monotonic() - started < 0.6 + 0.3
    assert [t.action for t in traj.turns] == ["search", "search"] and traj.turns[1].argument == "b"
    assert traj.turns[1].observation is None and traj.turns[1].hits == []
    assert traj.turns[1].error == "the search was not carried out: the episode's time ran out"
    assert "turn 2's search was still running; 2 turns kept" in traj.error
    folder = traj.save(tmp_path / traj.id)
    time.sleep(1.2)  # the abandoned search finishes now: it must change nothing
    assert set(traj.images) == {traj.turns[0].observation.file} and traj.turns[1].observation is None
    assert Trajectory.load(folder) == traj


def test_without_a_deadline_no_thread_is_started(monkeypatch):
    import agent.loop as loop

    monkeypatch.setattr(loop, "run_before", lambda *a, **k: (_ for _ in ()).throw(AssertionError("a thread was used")))
    traj, *_ = run([T + "<search>q</search>", T + "<bbox>[0, 0, 100, 100]</bbox>", T + "<answer>a</answer>"])
    assert traj.finished and len(traj.turns) == 3
