"""A deterministic model for evaluation tests and the concurrency bench: its reply is a function of the
request alone (the question and how many replies came before), so it answers the same whatever order
concurrent episodes reach the server in. Served by tests/support/fake_openai_server.py over real HTTP.

Each episode: search the question, crop a region of the page, answer from `answers` (question ->
answer text; questions not in it get "I do not know").
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from agent.prompts import question_from_prompt


def scripted_replier(answers: dict[str, str], bbox: str = "[60, 40, 480, 140]") -> Callable[[dict], str]:
    def reply(body: dict) -> str:
        messages = body["messages"]
        question = question_from_prompt(messages[0]["content"][0]["text"])
        turn = sum(1 for m in messages if m["role"] == "assistant")
        if turn == 0:
            return f"<think>Look it up.</think>\n<search>{question}</search>"
        if turn == 1:
            return f"<think>Zoom in.</think>\n<bbox>{bbox}</bbox>"
        return f"<think>Read it.</think>\n<answer>{answers.get(question, 'I do not know')}</answer>"

    return reply


CALLS_PER_QUESTION = 3


def tiny_dataset(n: int) -> tuple[dict, dict[str, str]]:
    """`n` questions over the tiny index (tests/support/agent_index.py) in the reference format, and the
    replier's answers: right for even-numbered questions, wrong for odd ones."""
    # gold box: the sentence box of each page (points 72,120 to 520,260 at 144 dpi)
    topics = [("What was the revenue in 2023?", "4.2 billion dollars", 1, [144, 240, 1040, 520]),
              ("How many staff did the company employ?", "412", 2, [144, 240, 1040, 520]),
              ("What does object storage cost per terabyte?", "12 yuan", 3, [144, 240, 1040, 520])]
    examples, answers = [], {}
    for i in range(n):
        query, answer, page, box = topics[i % len(topics)]
        query = f"{query} (q{i:02d})"
        examples.append({"uid": f"q{i:02d}", "query": query, "reference_answer": answer,
                         "meta_info": {"file_name": "report.pdf", "reference_page": [page], "bbox": box}})
        answers[query] = answer if i % 2 == 0 else "no idea"
    return {"examples": examples}, answers


def write_dataset(path: Path, n: int) -> dict[str, str]:
    data, answers = tiny_dataset(n)
    path.write_text(json.dumps(data), encoding="utf-8")
    return answers
