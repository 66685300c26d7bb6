"""The in-process transformers policy on the tiny random Qwen2.5-VL, alone and inside the real loop."""
from __future__ import annotations

import json
import time

import pytest
from PIL import Image

from agent import protocol
from agent.loop import AgentConfig, new_trajectory, run_episode
from agent.policies import PolicyError, make_policy
from agent.policies.transformers_policy import TransformersPolicy
from agent.prompts import FINAL_TURN_NUDGE, NO_ANSWER
from agent.search import LocalSearcher
from agent.trajectory import Trajectory
from support.agent_index import open_tiny_index
from support.tiny_vlm import tiny_model_dir


@pytest.fixture(scope="module")
def policy():
    return TransformersPolicy(tiny_model_dir(), max_new_tokens=12, temperature=0)


def _chat_with_images(demo_corpus, names):
    messages = [{"role": "user", "content": [protocol.text_part("Question: what is shown?")]}]
    sizes = []
    for name in names:
        resized, jpeg = protocol.prepare_image(Image.open(demo_corpus / name))
        sizes.append(resized.size)
        messages += [{"role": "assistant", "content": "<think>look</think><search>slides</search>"},
                     {"role": "user", "content": [protocol.image_part(jpeg)]}]
    return messages, sizes


@pytest.mark.parametrize(
    "model, needle",
    [
        ("autumncc/Qwen2.5-VL-7B-VRAG", "huggingface-cli download autumncc/Qwen2.5-VL-7B-VRAG"),
        ("/nonexistent/Qwen2.5-VL-7B-VRAG", "does not exist"),
    ],
)
def test_absent_weights_fail_fast_with_instructions(model, needle):
    started = time.perf_counter()
    with pytest.raises(PolicyError) as err:
        TransformersPolicy(model)
    assert time.perf_counter() - started < 5  # no download attempt, no hang
    message = str(err.value)
    assert needle in message and "autumncc/Qwen2.5-VL-7B-VRAG" in message and "vllm serve" in message


def test_folders_that_are_not_qwen25_vl_are_refused(tmp_path):
    with pytest.raises(PolicyError, match="no config.json"):
        TransformersPolicy(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(PolicyError, match="holds a 'llama' model; this needs Qwen2.5-VL"):
        TransformersPolicy(tmp_path)


def test_complete_counts_prompt_tokens_including_every_image(policy, demo_corpus):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    messages, sizes = _chat_with_images(demo_corpus, ["slide_1_1024.jpg", "aliyun4_1.jpg"])
    text_only = policy.complete(messages[:2] + [{"role": "user", "content": [protocol.text_part("x")]}])
    completion = policy.complete(messages)
    assert isinstance(completion.text, str)
    assert 1 <= completion.completion_tokens <= 12
    image_tokens = 0
    for w, h in sizes:
        rh, rw = smart_resize(h, w, factor=28, min_pixels=protocol.MIN_PIXELS, max_pixels=protocol.MAX_PIXELS)
        image_tokens += (rh // 28) * (rw // 28)
    # each image adds <|vision_start|> + its pads + <|vision_end|>; the rest is the same chat text
    per_turn = len(policy.loaded.processor.tokenizer.encode("<|im_start|>assistant\n<think>look</think><search>slides</search><|im_end|>\n<|im_start|>user\n<|im_end|>\n"))
    x_tokens = len(policy.loaded.processor.tokenizer.encode("x"))
    expected = text_only.prompt_tokens - x_tokens + image_tokens + 2 * 2 + per_turn
    assert completion.prompt_tokens == expected
    assert policy.complete(messages) == completion  # greedy: deterministic


def test_describe_and_registry(policy):
    d = policy.describe()
    assert d["name"] == "transformers" and d["model"] == str(tiny_model_dir())
    assert "transformers" in d["description"]
    assert type(make_policy("transformers", model=str(tiny_model_dir()), max_new_tokens=4)).__name__ == "TransformersPolicy"


def test_loop_records_gibberish_as_invalid_turns_within_budget(policy, tmp_path):
    config = AgentConfig(max_turns=3)
    trajectory = new_trajectory("What was revenue in 2023?", policy, config)
    turns = list(run_episode(trajectory, policy, LocalSearcher(open_tiny_index()), config))
    assert len(turns) == 3 and trajectory.error is None
    assert [t.action for t in turns] == ["invalid"] * 3  # random weights never follow the protocol
    assert all(t.error and t.feedback for t in turns)
    assert FINAL_TURN_NUDGE in turns[1].feedback
    assert not trajectory.finished and trajectory.answer == NO_ANSWER
    # each call saw the previous replies and feedback: the prompt grows turn by turn
    assert turns[0].prompt_tokens < turns[1].prompt_tokens < turns[2].prompt_tokens
    assert all(1 <= t.completion_tokens <= 12 for t in turns)
    assert trajectory.policy["name"] == "transformers"
    folder = trajectory.save(tmp_path / "run")
    assert Trajectory.load(folder) == trajectory


def test_policy_and_attention_share_one_loaded_model(policy, tmp_path):
    from agent.attention import compute_attention_maps

    shared = TransformersPolicy(policy.loaded, max_new_tokens=4)
    assert shared.loaded is policy.loaded
    config = AgentConfig(max_turns=2)
    trajectory = new_trajectory("q", shared, config)
    list(run_episode(trajectory, shared, LocalSearcher(open_tiny_index()), config))
    folder = trajectory.save(tmp_path / "run")
    run = compute_attention_maps(folder, shared.loaded)  # gibberish never searched: no image, no map
    assert run.maps == [] and run.skipped == {0: "no image in context yet", 1: "no image in context yet"}
    assert Trajectory.load(folder).turns[0].maps == {}
