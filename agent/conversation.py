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

from agent.parsing import TAG_RE, tags_only
from agent.prompts import render_prompt
from agent.protocol import image_part, profile_of, text_part
from agent.trajectory import Trajectory


def prompt_message(question: str) -> dict:
    return {"role": "user", "content": [text_part(render_prompt(question))]}


def build_messages(trajectory: Trajectory, read_image: Callable[[str], bytes]) -> list[dict]:
    """OpenAI chat messages sent so far; `read_image(file)` returns the JPEG bytes of an ImageView.file."""
    context = profile_of(trajectory).context
    messages = [prompt_message(trajectory.question)]
    for turn in trajectory.turns:
        messages.append({"role": "assistant", "content": sent_reply(turn.raw_text, context)})
        content = []
        if turn.observation is not None:
            content.append(image_part(read_image(turn.observation.file)))
        if turn.feedback:
            content.append(text_part(turn.feedback))
        if content:
            messages.append({"role": "user", "content": content})
    return messages


def sent_reply(raw_text: str, context: str) -> str:
    """A recorded reply as it is sent back to the model under a profile's `context` rule."""
    return tags_only(raw_text) if context == "tags" else raw_text


def reply_segments(raw_text: str, context: str) -> list[tuple[int, int, int]]:
    """Where the sent reply's characters come from in `Turn.raw_text`: (sent start, raw start, length) runs.

    "verbatim": one run over the whole reply. "tags": one run per tag pair, in order; the newlines
    joining them are not in the raw reply. For mapping offsets in the sent text (e.g. a token's, in
    a re-run chat) back to the recorded reply.
    """
    if context != "tags":
        return [(0, 0, len(raw_text))] if raw_text else []
    runs, at = [], 0
    for m in TAG_RE.finditer(raw_text or ""):
        runs.append((at, m.start(), m.end() - m.start()))
        at += m.end() - m.start() + 1
    return runs


def image_count(messages: list[dict]) -> int:
    """How many images a message list carries (vLLM limits this per prompt: --limit-mm-per-prompt)."""
    return sum(1 for m in messages if isinstance(m.get("content"), list) for p in m["content"] if p.get("type") == "image_url")
