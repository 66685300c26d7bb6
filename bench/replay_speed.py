"""How fast the Trajectories page replays a 10-turn trajectory, measured in real headless Chromium.

    .venv/bin/python bench/replay_speed.py [--runs 3] [--width 1600] [--out bench/results/replay_speed.json]

Set-up, outside the timing: the 25 demo pages indexed (tests/artifacts/demo-index, built once from
../shared/corpus/vrag-demo), and a real 10-turn trajectory over them (search, crops, a crop of a
crop, an invalid reply, a Chinese query, an answer: tests/support/replay_fixtures.py, the replies served
over HTTP by the local OpenAI-compatible test server) saved in a temporary data root.

"Drawn" means: the turn view shows "Turn k of 10", the main figure's page image is rendered by
plotly, every thumbnail image has loaded, and no script run is in flight. Figures, per run:
- fresh server: `streamlit run app.py` started (not timed until /_stcore/health answers), then a
  browser opens /trajectories?id=<it>: from navigation until drawn. Also from the process launch.
- fresh session on a warm server: a new tab (a new Streamlit session) on the same server, with the
  browser's HTTP cache warm (a tab of the same browser profile) and cold (a new profile: every
  script of the page, plotly.js's 4.7 MB among them, downloaded and compiled again).
- turn change: a click on the next turn in the filmstrip until that turn is drawn; every turn of
  the trajectory, in a warm session.
Each figure is given as wall time and as the CPU time the app's processes (the Streamlit server
and every Chromium process) spent in it: on a 2-core machine shared with other jobs the wall time
mostly measures the wait for a core (the load average is recorded), the CPU time what the work
costs. Targets (issue 9): under 3 s to draw in a fresh session, under 0.5 s per turn change.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support.app_support import APP, chromium, free_port  # noqa: E402

DEMO_CORPUS = (ROOT / ".." / "shared" / "corpus" / "vrag-demo").resolve()
DEMO_INDEX = ROOT / "tests" / "artifacts" / "demo-index"

DRAWN = """(turn) => {
  const plot = [...document.querySelectorAll('.js-plotly-plot')].find(p => p._fullLayout && String(p._fullLayout.uirevision).includes(`-${turn - 1}-`));
  if (!plot) return false;
  const label = [...document.querySelectorAll('strong')].some(e => e.textContent.trim() === `Turn ${turn} of 10`);
  const picture = plot.querySelector('.imagelayer image');
  const images = [...document.querySelectorAll("[data-testid='stImage'] img, .vrag-hit img")];
  const running = document.querySelector("[data-testid='stStatusWidgetRunningIcon'], [data-testid='stStatusWidgetRunningManIcon']");
  const stale = document.querySelector("[data-stale='true'], [data-testid='stSkeleton'], [data-testid='stSkeletonElement']");
  return Boolean(label && picture && picture.getAttribute('href') && images.length > 0
                 && images.every(i => i.complete && i.naturalWidth > 0) && !running && !stale);
}"""


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds() -> float:
    """CPU time (user + system) of every process this benchmark started: the server and the browser."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in _descendants(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


class Clock:
    """Wall and CPU seconds of one interval."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, cpu_seconds() - self.cpu


def build(data: Path) -> str:
    from support.replay_fixtures import ten_turn_trajectory
    from search_engine import DocumentIndex

    index = DocumentIndex.open(DEMO_INDEX)
    report = index.ingest([DEMO_CORPUS])
    assert not report.skipped and len(index) == 25, report.skipped
    return ten_turn_trajectory(data, DEMO_INDEX.resolve()).id


def wait_drawn(page, turn: int, timeout: float = 180_000, polling: int = 25) -> None:
    """Poll the page (the check runs in the page, so it costs the browser a little: polling in ms)."""
    page.wait_for_function(DRAWN, arg=turn, timeout=timeout, polling=polling)


def open_and_time(context, url: str) -> tuple[Clock, object]:
    page = context.new_page()
    page.set_viewport_size({"width": WIDTH, "height": 1200})
    with Clock() as clock:
        page.goto(url)
        wait_drawn(page, 1, polling=100)
    return clock, page


def turn_changes(page, trajectory_id: str) -> list[Clock]:
    clocks = []
    for turn in range(2, 11):
        button = page.locator(f".st-key-traj-{trajectory_id}-go-{turn - 1} button")
        with Clock() as clock:
            button.click()
            wait_drawn(page, turn)
        clocks.append(clock)
    return clocks


def start_server(data: Path, log: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    env = {**os.environ, "VRAG_STUDIO_DATA": str(data), "VRAG_STUDIO_INDEX": str(DEMO_INDEX.resolve()), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1", "--server.port", str(port),
               "--server.headless", "true", "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"]
    launched = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    while True:
        assert process.poll() is None, f"streamlit exited: see {log}"
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=1) as response:
                if response.status == 200:
                    return process, url, launched
        except OSError:
            time.sleep(0.05)


def one_run(data: Path, trajectory_id: str, browser, log: Path) -> dict:
    process, url, launched = start_server(data, log)
    link = f"{url}/trajectories?id={trajectory_id}"
    try:
        warm_profile = browser.new_context()
        fresh_server, page = open_and_time(warm_profile, link)  # the browser's cache is cold here too
        from_launch = time.perf_counter() - launched
        changes = turn_changes(page, trajectory_id)
        page.close()
        time.sleep(SETTLE_SECONDS)  # a closed tab's process exits first, so the next CPU count only holds the next tab
        warm_session, page = open_and_time(warm_profile, link)  # a new session; the browser has the scripts
        page.close()
        time.sleep(SETTLE_SECONDS)
        cold_context = browser.new_context()
        cold_session, page = open_and_time(cold_context, link)  # a new session in a new browser profile
        cold_context.close()
        warm_profile.close()
        return {"fresh_server_s": fresh_server.wall, "fresh_server_cpu_s": fresh_server.cpu, "fresh_server_from_launch_s": from_launch,
                "fresh_session_warm_browser_s": warm_session.wall, "fresh_session_warm_browser_cpu_s": warm_session.cpu,
                "fresh_session_cold_browser_s": cold_session.wall, "fresh_session_cold_browser_cpu_s": cold_session.cpu,
                "turn_change_s": [c.wall for c in changes], "turn_change_cpu_s": [c.cpu for c in changes]}
    finally:
        process.terminate()
        process.wait(timeout=15)


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def main() -> None:
    global WIDTH
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "replay_speed.json")
    args = parser.parse_args()
    WIDTH = args.width
    with tempfile.TemporaryDirectory(prefix="vrag-replay-") as tmp:
        data = Path(tmp) / "data"
        trajectory_id = build(data)
        runs = []
        with chromium() as browser:
            for i in range(args.runs):
                load = load_average()
                result = one_run(data, trajectory_id, browser, Path(tmp) / f"streamlit-{i}.log")
                result["load_average_before"] = load
                runs.append(result)
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else [round(x, 3) for x in v]) for k, v in result.items()}), flush=True)
    changes = [s for r in runs for s in r["turn_change_s"]]
    changes_cpu = [s for r in runs for s in r["turn_change_cpu_s"]]
    median = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    summary = {
        "runs": args.runs,
        "width": args.width,
        **{f"{key}_median": median(key) for key in (
            "fresh_server_s", "fresh_server_cpu_s", "fresh_server_from_launch_s", "fresh_session_warm_browser_s",
            "fresh_session_warm_browser_cpu_s", "fresh_session_cold_browser_s", "fresh_session_cold_browser_cpu_s")},
        "turn_change_s_median": statistics.median(changes),
        "turn_change_s_p90": sorted(changes)[int(0.9 * (len(changes) - 1))],
        "turn_change_cpu_s_median": statistics.median(changes_cpu),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average": [r["load_average_before"] for r in runs],
        "details": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "details"}, indent=1))


WIDTH = 1600
SETTLE_SECONDS = 2.0

if __name__ == "__main__":
    main()
