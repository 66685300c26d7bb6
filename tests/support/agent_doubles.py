"""Fast in-process stand-ins for loop tests that run thousands of episodes (the HTTP and index tests
use the real server and the real DocumentIndex)."""
from __future__ import annotations

import zlib

import numpy as np
from PIL import Image

from agent.policies.base import Completion, PolicyError
from agent.search import QueryRejected
from search_engine.query import QueryError, validate_query
from search_engine.types import SearchHit


class ScriptedPolicy:
    """Replies from a list, in order; a PolicyError instance in the list is raised instead."""

    name = "scripted"

    def __init__(self, replies: list):
        self.replies = list(replies)
        self.calls: list[list[dict]] = []

    def describe(self) -> dict:
        return {"name": self.name, "model": "script", "description": "replies from a test script"}

    def complete(self, messages: list[dict]) -> Completion:
        self.calls.append(messages)
        if not self.replies:
            raise PolicyError("script exhausted")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return Completion(text=reply, prompt_tokens=10, completion_tokens=5)


def noise_page(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


class MemorySearcher:
    """Pages held in memory; a query ranks them by a rotation chosen from its hash (deterministic)."""

    def __init__(self, pages: dict[str, Image.Image]):
        self.pages = pages
        self.order = sorted(pages)
        self.queries: list[str] = []

    def search(self, query: str, top_k: int) -> list[SearchHit]:
        self.queries.append(query)
        try:
            query = validate_query(query, top_k)  # the engine's own rules
        except QueryError as e:
            raise QueryRejected(str(e)) from e
        shift = zlib.crc32(query.encode()) % max(1, len(self.order))
        ranked = self.order[shift:] + self.order[:shift]
        return [SearchHit(rank=i + 1, score=1.0 / (i + 1), page_id=p, image_file=f"/memory/{p}.png", source="memory", page=1)
                for i, p in enumerate(ranked[:top_k])]

    def page_image(self, page_id: str) -> Image.Image:
        return self.pages[page_id]

    def describe(self) -> dict:
        return {"kind": "memory"}
