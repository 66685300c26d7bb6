"""How long the app takes to start: `streamlit run app.py` until the Ask page is drawn in a browser.

    .venv/bin/python bench/app_startup.py [--runs 3]

The sample index is built first (outside the timing), as `make run` does before starting the app.
Two figures per run, from launching the process:
- server: until /_stcore/health answers (the Streamlit server is up);
- ask page: until headless Chromium shows the Ask page with its example questions (the first
  script run is done: imports, page rendering, reading the index manifest).
The target (issue 4) is under 5 s on this 2-core machine with the sample corpus.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from app_support import APP, chromium, free_port  # noqa: E402

FIRST_EXAMPLE = "When did the Kestrel Ridge treatment plant open?"


def one_run(data: Path, browser) -> tuple[float, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "VRAG_STUDIO_DATA": str(data), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1", "--server.port", str(port),
               "--server.headless", "true", "--server.fileWatcherType", "none"]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.02)
        server = time.perf_counter() - started
        page = browser.new_page()
        page.goto(url)
        page.get_by_text(FIRST_EXAMPLE, exact=True).wait_for(timeout=60_000)
        ask = time.perf_counter() - started
        page.close()
        return server, ask
    finally:
        process.terminate()
        process.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from search_engine.sample_corpus import build_sample_index

    with tempfile.TemporaryDirectory(prefix="vrag-startup-") as tmp, chromium() as browser:
        data = Path(tmp) / "data"
        build_sample_index(data)
        results = [one_run(data, browser) for _ in range(args.runs)]
    for i, (server, ask) in enumerate(results, 1):
        print(f"run {i}: server up {server:.2f} s, Ask page drawn {ask:.2f} s")
    print(f"median: server up {statistics.median(r[0] for r in results):.2f} s, "
          f"Ask page drawn {statistics.median(r[1] for r in results):.2f} s (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
