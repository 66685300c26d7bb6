"""The chat messages of an episode, rebuilt from its trajectory (the one source of truth).

The loop calls `build_messages` before every model call, and the attention helper calls it to
re-run a saved trajectory, so both always see exactly what the model was sent:

    user:      [text: the reference prompt]                      (no system message)
    assistant: the model's reply, as the profile keeps it          } once per turn
    user:      [image of the observation?] [text: feedback?]      } (omitted if both are absent)

An observation message holds only the image, as in the reference; text is added only for the
final-turn nudge or for feedback about a malformed reply. Assistant content is a plain string;
OpenAI-compatible servers (vLLM's Qwen2.5-VL chat template included) render it the same as a
one-part text list.

The trajectory's protocol profile (`config["protocol"]`, agent/protocol.py) decides how a reply is
kept: "verbatim" sends back the recorded `Turn.raw_text`; "tags" (the training loop) sends only its
tag pairs (agent/parsing.tags_only). The raw reply stays recorded either way: the rule is applied
here, when the messages are built, so a saved trajectory rebuilds exactly what was sent.
"""
from __future__ import annotations

from typing import Callable

from agent.parsing import tags_only
from agent.prompts import render_prompt
from agent.protocol import image_part, profile_of, text_part
from agent.trajectory import Trajectory


def prompt_message(question: str) -> dict:
    return {"role": "user", "content": [text_part(render_prompt(question))]}


def build_messages(trajectory: Trajectory, read_image: Callable[[str], bytes]) -> list[dict]:
    """OpenAI chat messages sent so far; `read_image(file)` returns the JPEG bytes of an ImageView.file."""
    keep_tags_only = profile_of(trajectory).context == "tags"
    messages = [prompt_message(trajectory.question)]
    for turn in trajectory.turns:
        messages.append({"role": "assistant", "content": tags_only(turn.raw_text) if keep_tags_only else turn.raw_text})
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
