"""The chat messages of an episode, rebuilt from its trajectory (the one source of truth).

The loop calls `build_messages` before every model call, and the attention helper calls it to
re-run a saved trajectory, so both always see exactly what the model was sent:

    user:      [text: the reference prompt]                      (no system message)
    assistant: the model's reply, verbatim                        } once per turn
    user:      [image of the observation?] [text: feedback?]      } (omitted if both are absent)

An observation message holds only the image, as in the reference; text is added only for the
final-turn nudge or for feedback about a malformed reply. Assistant content is a plain string;
OpenAI-compatible servers (vLLM's Qwen2.5-VL chat template included) render it the same as a
one-part text list.
"""
from __future__ import annotations

from typing import Callable

from agent.prompts import render_prompt
from agent.protocol import image_part, text_part
from agent.trajectory import Trajectory


def prompt_message(question: str) -> dict:
    return {"role": "user", "content": [text_part(render_prompt(question))]}


def build_messages(trajectory: Trajectory, read_image: Callable[[str], bytes]) -> list[dict]:
    """OpenAI chat messages sent so far; `read_image(file)` returns the JPEG bytes of an ImageView.file."""
    messages = [prompt_message(trajectory.question)]
    for turn in trajectory.turns:
        messages.append({"role": "assistant", "content": turn.raw_text})
        content = []
        if turn.observation is not None:
            content.append(image_part(read_image(turn.observation.file)))
        if turn.feedback:
            content.append(text_part(turn.feedback))
        if content:
            messages.append({"role": "user", "content": content})
    return messages


def image_count(messages: list[dict]) -> int:
    """How many images a message list carries (vLLM limits this per prompt: --limit-mm-per-prompt)."""
    return sum(1 for m in messages if isinstance(m.get("content"), list) for p in m["content"] if p.get("type") == "image_url")
