"""Capture the README screenshots at 1280 and 1600 px wide: Ask mid-run, Trajectories, Present.

    .venv/bin/python docs/screenshots/capture.py

Uses the 25 demo pages (../shared/corpus/vrag-demo, indexed once into tests/artifacts/demo-index),
the offline policy on a Chinese example question, the app started with `streamlit run` in a
temporary data root and headless Debian chromium (as in tests/browser/test_browser.py). Writes
ask.png, trajectories.png, present.png (1280 px) and the same names with -1600 (1600 px). PNGs
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

from support.app_support import chromium, streamlit_server  # noqa: E402

DEMO_CORPUS = (ROOT / ".." / "shared" / "corpus" / "vrag-demo").resolve()
DEMO_INDEX = ROOT / "tests" / "artifacts" / "demo-index"
QUESTION = "阿里云的VPC是哪一年诞生的？"  # an example question of the demo set: its answer is on a Chinese slide
WIDTHS = {1280: "", 1600: "-1600"}
HEIGHT = 1000


def save_small(png: bytes, path: Path) -> None:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    image.save(path, optimize=True)
    print(f"{path}: {image.size[0]}x{image.size[1]}, {path.stat().st_size // 1024} KB")


def settled(page, timeout: float = 300_000) -> None:
    """Drawn: no script run in flight, nothing stale, no element still loading, every picture loaded."""
    page.wait_for_function("""() => !document.querySelector("[data-stale='true'], [data-testid='stSkeleton'], [data-testid='stSkeletonElement']")
        && !document.querySelector("[data-testid='stStatusWidgetRunningIcon'], [data-testid='stStatusWidgetRunningManIcon']")
        && document.querySelector('.js-plotly-plot .imagelayer image')
        && [...document.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)""",
                           timeout=timeout, polling=100)
    time.sleep(1.0)  # let plotly finish drawing


def scroll_to(page, selector: str, above: int = 90) -> None:
    """Scroll Streamlit's main area so `selector` sits just under the top navigation bar."""
    page.evaluate("""([s, above]) => { const e = document.querySelector(s); const main = document.querySelector("[data-testid='stMain']");
        main.scrollBy(0, e.getBoundingClientRect().top - above); }""", [selector, above])
    time.sleep(0.6)


def ask_mid_run(url: str, browser, width: int) -> str:
    page = browser.new_page(viewport={"width": width, "height": HEIGHT})
    page.goto(url)
    page.get_by_text(QUESTION, exact=True).first.click()  # an example question
    time.sleep(1.5)
    page.get_by_role("button", name="Ask").click()
    page.get_by_text("Turn 2 of", exact=False).first.wait_for(timeout=600_000)
    settled(page)
    assert page.get_by_role("button", name="Stop").is_enabled(), "the run ended before the screenshot"
    scroll_to(page, "[data-testid='stProgress']", above=130)
    save_small(page.screenshot(), HERE / f"ask{WIDTHS[width]}.png")
    page.get_by_text("Final answer").wait_for(timeout=600_000)
    trajectory_id = page.get_by_text("saved as", exact=False).first.inner_text().rsplit("saved as", 1)[1].strip()
    page.close()
    return trajectory_id


def trajectories(url: str, browser, width: int, trajectory_id: str, turn: int) -> None:
    page = browser.new_page(viewport={"width": width, "height": HEIGHT})
    page.goto(f"{url}/trajectories?id={trajectory_id}&turn={turn}")
    page.get_by_text(f"Turn {turn} of", exact=False).first.wait_for(timeout=300_000)
    settled(page)
    scroll_to(page, "[class*='-strip']", above=150)
    save_small(page.screenshot(), HERE / f"trajectories{WIDTHS[width]}.png")
    page.close()


def present(url: str, browser, width: int, trajectory_id: str, turn: int) -> None:
    page = browser.new_page(viewport={"width": width, "height": HEIGHT})
    page.goto(f"{url}/present?id={trajectory_id}")
    page.get_by_text("Turn 1 of", exact=False).first.wait_for(timeout=300_000)
    for _ in range(turn - 1):
        page.get_by_role("button", name="Next").click()
        time.sleep(0.5)
    page.get_by_text(f"Turn {turn} of", exact=False).first.wait_for(timeout=60_000)
    settled(page)
    scroll_to(page, ".st-key-present-head", above=70)
    save_small(page.screenshot(), HERE / f"present{WIDTHS[width]}.png")
    page.close()


def main() -> None:
    import json

    from search_engine import DocumentIndex

    index = DocumentIndex.open(DEMO_INDEX)
    index.ingest([DEMO_CORPUS])  # a no-op once built
    with tempfile.TemporaryDirectory(prefix="vrag-screens-") as tmp:
        data = Path(tmp) / "data"
        env = {"VRAG_STUDIO_DATA": str(data), "VRAG_STUDIO_INDEX": str(DEMO_INDEX.resolve()), "VRAG_POLICY": "offline", "HF_HUB_OFFLINE": "1"}
        with streamlit_server(env, Path(tmp) / "streamlit.log") as url, chromium() as browser:
            runs = {width: ask_mid_run(url, browser, width) for width in WIDTHS}
            trajectory_id = runs[1280]
            saved = json.loads((data / "trajectories" / trajectory_id / "trajectory.json").read_text())
            crop = next((t["index"] + 1 for t in saved["turns"] if t["action"] == "bbox"), 1)  # the zoomed Chinese crop
            for width in WIDTHS:
                trajectories(url, browser, width, trajectory_id, crop)
                present(url, browser, width, trajectory_id, crop)


if __name__ == "__main__":
    main()
