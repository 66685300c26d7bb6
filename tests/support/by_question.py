"""A model server's replies chosen by the question found in the request."""
from __future__ import annotations

import json
import time

from support.fake_openai_server import Slow


class ByQuestion:
    """Scripted replies per question (found in the request), so questions in flight at once never take each
    other's replies; `asked` counts the calls per question. A Slow entry answers after its delay."""

    def __init__(self, scripts: dict[str, list] | None = None):
        self.scripts = {q: list(r) for q, r in (scripts or {}).items()}
        self.asked: dict[str, int] = {}

    def __call__(self, body: dict) -> str:
        sent = json.dumps(body, ensure_ascii=False)
        question = next((q for q in self.scripts if q in sent), None)
        if question is None or not self.scripts[question]:
            return "<think>No script for this question.</think><answer>none</answer>"
        self.asked[question] = self.asked.get(question, 0) + 1
        reply = self.scripts[question].pop(0)
        if isinstance(reply, Slow):
            time.sleep(reply.seconds)
            reply = reply.reply
        return reply
