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

    The message names the endpoint or model and what went wrong, in words for a person (no shell
    syntax); the loop records it on the trajectory and stops, keeping the turns so far. What to do
    about it depends on where the person is: `cli_hint` speaks of flags and commands (the CLI
    prints it), `app_hint` of pages and fields (the app shows it). Either may be None.
    """

    def __init__(self, message: str, *, cli_hint: str | None = None, app_hint: str | None = None):
        super().__init__(message)
        self.cli_hint = cli_hint
        self.app_hint = app_hint


class Policy(Protocol):
    name: str  # "vllm", "transformers", "offline"

    def describe(self) -> dict:
        """What produced the replies, for the trajectory record: {"name", "model", "description"}."""
        ...

    def complete(self, messages: list[dict]) -> Completion:
        """Return the model's next reply to `messages`. Raises PolicyError on infrastructure failure."""
        ...
