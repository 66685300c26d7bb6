"""Capture the README screenshots: the Ask page mid-run and the Trajectories page, 1280x800.

    .venv/bin/python docs/screenshots/capture.py

Uses the project's own sample report (built into a temporary data root), the offline policy, the
app started with `streamlit run` and headless Debian chromium (as in tests/test_browser.py). PNGs
are quantised to 256 colours to stay small.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from app_support import chromium, streamlit_server  # noqa: E402

QUESTION = "How much water was delivered to the Hillcrest district in 2025?"
SIZE = {"width": 1280, "height": 800}


def save_small(png: bytes, path: Path) -> None:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    image.save(path, optimize=True)
    print(f"{path}: {path.stat().st_size // 1024} KB")


def scroll_to(page, selector: str) -> None:
    page.evaluate("(s) => document.querySelector(s).scrollIntoView({block: 'start'})", selector)
    time.sleep(0.8)  # let plotly finish drawing


def main() -> None:
    from search_engine.sample_corpus import build_sample_index

    with tempfile.TemporaryDirectory(prefix="vrag-screens-") as tmp:
        data = Path(tmp) / "data"
        build_sample_index(data)
        env = {"VRAG_STUDIO_DATA": str(data), "VRAG_POLICY": "offline", "HF_HUB_OFFLINE": "1"}
        with streamlit_server(env, Path(tmp) / "streamlit.log") as url, chromium() as browser:
            page = browser.new_page(viewport=SIZE)
            page.goto(url)
            page.get_by_text(QUESTION, exact=True).first.click()  # an example question
            time.sleep(1.5)
            page.get_by_role("button", name="Ask").click()
            page.get_by_text("Turn 2", exact=False).first.wait_for(timeout=300_000)
            scroll_to(page, "[data-testid='stProgress']")
            page.mouse.wheel(0, -140)  # out from under the top navigation bar
            time.sleep(0.5)
            save_small(page.screenshot(), HERE / "ask.png")

            page.get_by_text("Final answer").wait_for(timeout=300_000)
            page.goto(url + "/trajectories")
            page.get_by_role("heading", name="Trajectories").wait_for(timeout=60_000)
            slider = page.get_by_role("slider").first
            slider.wait_for()
            slider.focus()
            page.keyboard.press("ArrowRight")  # the crop turn
            page.get_by_text("Turn 2", exact=False).first.wait_for()
            time.sleep(2)
            scroll_to(page, "[data-testid='stSlider']")
            page.mouse.wheel(0, -260)
            time.sleep(1)
            save_small(page.screenshot(), HERE / "trajectories.png")


if __name__ == "__main__":
    main()
