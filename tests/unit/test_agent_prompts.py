"""The prompt must be byte-identical to the reference (as written down in the protocol note)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.prompts import (
    FEEDBACK, FINAL_TURN_NUDGE, NO_ANSWER, PROMPT_TEMPLATE, TRAINING_BAD_BBOX, TRAINING_NO_ACTION, feedback_message,
    question_from_prompt, render_prompt,
)

NOTE = Path(__file__).resolve().parents[2] / ".." / "shared" / "notes" / "vrag-protocol.md"


def test_prompt_matches_the_protocol_note():
    text = NOTE.read_text(encoding="utf-8")
    block = re.search(r"## The prompt.*?```\n(.*?)\n```", text, re.DOTALL).group(1)
    assert "(the reference string ends with a newline after `{question}`)" in text
    assert PROMPT_TEMPLATE == block + "\n"
    assert f"`{FINAL_TURN_NUDGE}`" in text
    assert f"`{NO_ANSWER}`" in text


def test_render_prompt():
    prompt = render_prompt("What is the {revenue}?")
    assert prompt.startswith("Answer the given question. You must conduct reasoning inside <think> and </think>")
    assert prompt.endswith("For example, <answer> Beijing </answer>. Question: What is the {revenue}?\n")


@pytest.mark.parametrize("question", ["What is 2+2?", "", "多行\n问题 {x}", "Question: nested? Question: again"])
def test_question_round_trip(question):
    assert question_from_prompt(render_prompt(question)) == question


def test_question_from_prompt_rejects_other_text():
    with pytest.raises(ValueError, match="not a VRAG prompt"):
        question_from_prompt("What is 2+2?")


def _training_messages_in_the_note() -> tuple[str, str]:
    """The two fixed invalid-action messages as the protocol note writes them (backquoted pieces)."""
    text = NOTE.read_text(encoding="utf-8")
    section = text.split("## The training loop differs from the demo client")[1].split("\n## ")[0]
    no_action = re.search(r"- no action at all:\n\s+`([^`]+)` \+ a newline \+ `([^`]+)`", section)
    bad_bbox = re.search(r"a crop that fails:\n\s+`([^`]+)`", section)
    return no_action.group(1) + "\n" + no_action.group(2), bad_bbox.group(1)


def test_training_messages_match_the_protocol_note_verbatim():
    no_action, bad_bbox = _training_messages_in_the_note()
    assert TRAINING_NO_ACTION == no_action
    assert TRAINING_BAD_BBOX == bad_bbox
    assert TRAINING_NO_ACTION.count("\n") == 1 and "\n" not in TRAINING_BAD_BBOX


def test_fixed_feedback_is_the_training_turn_and_specific_feedback_is_ours():
    # the training loop writes "<|im_start|>user\n" + message + "\n<|im_end|>": the newline belongs to the turn
    for code in ("empty_reply", "unclosed_tag", "no_action", "bad_query"):
        assert feedback_message("fixed", code, "whatever") == TRAINING_NO_ACTION + "\n"
    for code in ("bbox_format", "bbox_no_image", "bbox_crop_failed"):
        assert feedback_message("fixed", code, "whatever") == TRAINING_BAD_BBOX + "\n"
    assert feedback_message("specific", "bbox_format", "not JSON") == FEEDBACK["bbox_format"].format(detail="not JSON")
    with pytest.raises(ValueError, match="unknown feedback style"):
        feedback_message("loud", "no_action")
    with pytest.raises(KeyError):  # the strict-only codes have no training counterpart
        feedback_message("fixed", "missing_think")
