"""The one small call every policy answers: chat messages in, reply text out.

Messages are OpenAI chat messages exactly as the reference VRAG client sends them: the first is a
user message with the prompt text, each observation is a user message with one image
(`{"type": "image_url", "image_url": {"url": "data:image;base64,..."}}`), and the model's own
replies are assistant messages. A policy never sees our Python objects, so the vLLM policy, the
in-process transformers policy and the offline policy are interchangeable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int | None = None  # where the server reports usage
    completion_tokens: int | None = None


class PolicyError(RuntimeError):
    """The policy could not produce a reply (server down, timeout, context too long, missing weights).

    The message names the endpoint or model and what to do; the loop records it on the trajectory
    and stops, keeping the turns so far.
    """


class Policy(Protocol):
    name: str  # "vllm", "transformers", "offline"

    def describe(self) -> dict:
        """What produced the replies, for the trajectory record: {"name", "model", "description"}."""
        ...

    def complete(self, messages: list[dict]) -> Completion:
        """Return the model's next reply to `messages`. Raises PolicyError on infrastructure failure."""
        ...
