"""What the browser tests do on a page: ask a question, wait for the page to settle, read the saved runs."""
from __future__ import annotations

import json
import time
from pathlib import Path

RUN_SECONDS = 240_000  # ms: an offline run OCRs each page it sees (a few seconds a page on a busy machine)


def ask(page, question: str, label: str = "no model is reasoning") -> float:
    """Type the question and click Ask; returns the time of the click."""
    page.get_by_role("heading", name="Ask").wait_for(timeout=60_000)
    page.get_by_text(label).first.wait_for()  # the policy says what it is
    box = page.get_by_role("textbox", name="Question", exact=True)
    box.fill(question)
    box.press("Control+Enter")  # commit the text area (Streamlit reruns and enables Ask)
    button = page.get_by_role("button", name="Ask")
    deadline = time.monotonic() + 30
    while button.is_disabled():
        assert time.monotonic() < deadline, "the Ask button stayed disabled"
        time.sleep(0.05)
    clicked = time.monotonic()
    button.click()
    return clicked


def settled(page, timeout: float = 120_000) -> None:
    """No script run in flight, no element left over (stale) from an earlier run or still loading."""
    page.wait_for_function("""() => !document.querySelector("[data-stale='true'], [data-testid='stSkeleton'], [data-testid='stSkeletonElement']")
        && !document.querySelector("[data-testid='stStatusWidgetRunningIcon'], [data-testid='stStatusWidgetRunningManIcon']")""",
                           timeout=timeout, polling=50)


def trajectories(data: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((data / "trajectories").glob("*/trajectory.json"))]
