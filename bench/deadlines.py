"""Are the model-call and episode deadlines honoured within a second? Wall times against misbehaving servers.

    .venv/bin/python bench/deadlines.py [--timeout 3] [--repeat 5]

A local OpenAI-compatible server (tests/support/fake_openai_server.py, real HTTP on 127.0.0.1) that
- "trickle": sends the headers at once, then the body one byte a second (the probe that kept
  `ask --timeout 3` running for 43 s before the deadline was a real one);
- "hang": reads the request and never answers.
For each: `OpenAIChatPolicy.complete` in this process (`--repeat` times: how far past the deadline the
PolicyError came back), and `python -m agent ask --timeout T` as a real process: from the faulty
request's arrival to the `error:` line, and to the process's exit (which adds the interpreter's
teardown of torch, imported with the index's embedder). Then the episode deadline: replies that
take 1.5 s each under a 4 s episode limit, over a warmed index in this process, and as a fresh
`ask --episode-timeout 4` process. Results go to bench/results/deadlines.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from agent.policies.base import PolicyError  # noqa: E402
from agent.policies.openai_chat import OpenAIChatPolicy  # noqa: E402
from agent.protocol import text_part  # noqa: E402
from support.agent_index import tiny_index_folder  # noqa: E402
from support.fake_openai_server import FakeOpenAIServer, Hang, Slow, Trickle, completion_json  # noqa: E402

ANSWER = "<think>It is 4.2 billion.</think><answer>4.2 billion dollars</answer>"
SEARCH = "<think>Find it.</think><search>revenue 2023</search>"
BODY = json.dumps(completion_json(ANSWER)).encode()


def faults():
    return {"trickle": lambda: Trickle(BODY, interval=1.0), "hang": Hang}


def in_process(make, timeout: float, repeat: int) -> dict:
    late = []
    for _ in range(repeat):
        with FakeOpenAIServer([make()]) as server:
            policy = OpenAIChatPolicy(base_url=server.base_url, timeout=timeout)
            started = time.monotonic()
            try:
                policy.complete([{"role": "user", "content": [text_part("q")]}])
                raise AssertionError("the call succeeded")
            except PolicyError:
                late.append(time.monotonic() - started - timeout)
    return {"past_deadline_s_median": round(statistics.median(late), 3), "past_deadline_s_max": round(max(late), 3)}


def cli(argv: list[str]) -> tuple[int, float | None, float, str]:
    """Run `python -m agent ...`: (exit code, when the error line came out, when it exited, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "agent", *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    said, lines = None, []
    for line in proc.stderr:
        lines.append(line)
        if said is None and line.startswith("error: "):
            said = time.monotonic()
    proc.stdout.read()
    proc.wait()
    return proc.returncode, said, time.monotonic(), "".join(lines)


def as_process(make, timeout: float, index: str, out: Path) -> dict:
    with FakeOpenAIServer([make()]) as server:
        started = time.monotonic()
        code, said, ended, stderr = cli(["ask", "What was the revenue?", "--index", index, "--policy", "vllm", "--base-url",
                                         server.base_url, "--timeout", f"{timeout:g}", "--out", str(out)])
        arrival = server.arrivals[0]
    assert code == 1 and said is not None and "Traceback" not in stderr, stderr
    return {
        "error_line_after_arrival_s": round(said - arrival, 3),
        "error_line_past_deadline_s": round(said - arrival - timeout, 3),
        "exit_past_deadline_s": round(ended - arrival - timeout, 3),
        "whole_command_s": round(ended - started, 3),
        "error": next(line for line in stderr.splitlines() if line.startswith("error: ")),
    }


def episode_warm(index_folder: str, limit: float = 4.0, reply_seconds: float = 1.5) -> dict:
    """run_episode over a warmed local index (its embedder loaded, as the app does before a run)."""
    from agent.loop import AgentConfig, new_trajectory, run_episode
    from agent.search import LocalSearcher
    from search_engine.index import DocumentIndex

    searcher = LocalSearcher(DocumentIndex.open(index_folder))
    searcher.search("warm up", 1)
    config = AgentConfig(episode_timeout=limit)
    with FakeOpenAIServer([Slow(reply_seconds, SEARCH)] * 10) as server:
        policy = OpenAIChatPolicy(base_url=server.base_url)
        trajectory = new_trajectory("What was the revenue?", policy, config)
        started = time.monotonic()
        for _ in run_episode(trajectory, policy, searcher, config):
            pass
        ended = time.monotonic()
    return {"episode_timeout_s": limit, "reply_s": reply_seconds, "turns_kept": len(trajectory.turns),
            "past_deadline_s": round(ended - started - limit, 3), "error": trajectory.error}


def episode_cold_process(index: str, out: Path, limit: float = 4.0, reply_seconds: float = 1.5) -> dict:
    """`ask --episode-timeout` in a fresh process: the first search also loads the embedder, and a
    tool call is not interrupted (the deadline is checked after it, and bounds every model call)."""
    with FakeOpenAIServer([Slow(reply_seconds, SEARCH)] * 10) as server:
        code, said, ended, stderr = cli(["ask", "What was the revenue?", "--index", index, "--policy", "vllm", "--base-url",
                                         server.base_url, "--episode-timeout", f"{limit:g}", "--out", str(out)])
        first = server.arrivals[0]
    assert code == 1 and said is not None, stderr
    return {"episode_timeout_s": limit, "reply_s": reply_seconds, "past_deadline_s": round(said - first - limit, 3),
            "error": next(line for line in stderr.splitlines() if line.startswith("error: "))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "deadlines.json"))
    args = parser.parse_args()
    index = str(tiny_index_folder() / "index")
    scratch = ROOT / "tests" / "artifacts" / "bench-deadlines"
    results = {"timeout_s": args.timeout, "load_average": os.getloadavg()[0]}
    for name, make in faults().items():
        results[name] = {"in_process": in_process(make, args.timeout, args.repeat),
                         "ask_process": as_process(make, args.timeout, index, scratch)}
    results["episode_warm_index"] = episode_warm(index)
    results["episode_cold_process"] = episode_cold_process(index, scratch)
    text = json.dumps(results, indent=1, ensure_ascii=False)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
