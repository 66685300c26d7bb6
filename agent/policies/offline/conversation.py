"""Reading the chat messages the offline policy is sent: the question, its own earlier replies, the
observation image (JPEG bytes) or feedback text that answered each. It sees only what the real
model would be sent, so a saved trajectory replays exactly."""
from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from agent.parsing import ParsedReply, parse_reply
from agent.policies.base import PolicyError
from agent.prompts import FINAL_TURN_NUDGE, question_from_prompt


@dataclass
class Step:
    """One of the policy's own earlier replies and what came back after it."""

    reply: ParsedReply
    image: bytes | None = None  # JPEG bytes of the observation image, if any
    text: str = ""  # feedback text (final-turn nudge, error hint, "all pages shown")


@dataclass
class Conversation:
    question: str
    steps: list[Step] = field(default_factory=list)

    @property
    def nudged(self) -> bool:
        """The loop asks for the answer now (the final-turn nudge is in the last observation)."""
        return bool(self.steps) and FINAL_TURN_NUDGE in self.steps[-1].text

    @property
    def searches(self) -> int:
        return sum(1 for s in self.steps if s.reply.action == "search")


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text")


def _image_of(content) -> bytes | None:
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict) and part.get("type") == "image_url":
            _, _, data = ((part.get("image_url") or {}).get("url", "")).partition("base64,")
            try:
                return base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError) as e:
                raise PolicyError(f"offline policy: an observation image is not valid base64 ({e})") from e
    return None


def read_conversation(messages: list[dict]) -> Conversation:
    """The question, and each earlier reply paired with the user message that answered it."""
    if not messages or messages[0].get("role") != "user":
        raise PolicyError("offline policy: the conversation must start with the user's prompt")
    try:
        conv = Conversation(question_from_prompt(_text_of(messages[0].get("content"))))
    except ValueError as e:
        raise PolicyError(f"offline policy: {e}") from e
    for message in messages[1:]:
        if message.get("role") == "assistant":
            conv.steps.append(Step(parse_reply(_text_of(message.get("content")))))
        elif message.get("role") == "user" and conv.steps:
            conv.steps[-1].image = _image_of(message.get("content"))
            conv.steps[-1].text = _text_of(message.get("content"))
    return conv


def decode_image(jpeg: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(jpeg))
        image.load()
    except (OSError, UnidentifiedImageError) as e:
        raise PolicyError(f"offline policy: an observation image could not be decoded ({e})") from e
    return image.convert("RGB")
