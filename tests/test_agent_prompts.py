"""The prompt must be byte-identical to the reference (as written down in the protocol note)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.prompts import FINAL_TURN_NUDGE, NO_ANSWER, PROMPT_TEMPLATE, question_from_prompt, render_prompt

NOTE = Path(__file__).resolve().parents[1] / ".." / "shared" / "notes" / "vrag-protocol.md"


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
