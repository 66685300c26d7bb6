"""Wall time of an evaluation at several concurrencies, against a model server with a fixed delay.

    .venv/bin/python bench/eval_concurrency.py                       # 32 questions at concurrency 1, 8, 32
    .venv/bin/python bench/eval_concurrency.py --questions 64 --levels 1,4,16 --delay 0.5

What runs: the real evaluation (`agent.eval_concurrency.run_eval`, the code `python -m agent eval`
uses) over the real sample index (`python -m search_engine sample`, built once under --data), with
the real OpenAI-compatible client, against a local OpenAI-compatible server on 127.0.0.1 started
here (tests/support/fake_openai_server.py: a threaded HTTP server that checks each request as vLLM does
and answers it after `--delay` seconds, many calls at once). Its replies are a fixed script that
depends only on the request (search the question, crop a region, answer), so every level does the
same work: 3 model calls, one search, one page and one crop per question. The per-question results
of every level are checked to be identical to those at concurrency 1.

The speed-up is wall time at concurrency 1 over wall time at N. With a 1 s model, a question costs
3 s of waiting and a few tens of ms of our own CPU work (search, decoding and resizing a page,
JPEG, building the request; the local server's checking of every image is counted too, as it runs
in this process), so the ideal at N is N and what falls short is that CPU work on this shared 2-core
machine (the CPU seconds are printed per level). Results go to bench/results/eval_concurrency.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from agent.eval_concurrency import run_eval  # noqa: E402
from agent.eval_replicas import ReplicaPool  # noqa: E402
from agent.eval_resume import EvalRun  # noqa: E402
from agent.evaluate import parse_examples, summarize  # noqa: E402
from agent.loop import AgentConfig  # noqa: E402
from agent.policies import make_policy  # noqa: E402
from agent.protocol import reuse_page_memory  # noqa: E402
from agent.search import LocalSearcher  # noqa: E402
from support.eval_replies import CALLS_PER_QUESTION, scripted_replier  # noqa: E402
from support.fake_openai_server import FakeOpenAIServer, Slow  # noqa: E402
from search_engine.sample_corpus import EXAMPLE_QUESTIONS, build_sample_index  # noqa: E402

MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
RESULTS = ROOT / "bench" / "results" / "eval_concurrency.json"


def dataset(n: int) -> tuple[list, dict[str, str]]:
    """`n` questions cycling over the sample report's example questions, each with its gold page."""
    examples, answers = [], {}
    for i in range(n):
        q = EXAMPLE_QUESTIONS[i % len(EXAMPLE_QUESTIONS)]
        query = f"{q.question} (#{i:02d})"
        examples.append({"uid": f"b{i:02d}", "query": query, "reference_answer": q.answer, "meta_info": {"page_ids": [q.page_id]}})
        answers[query] = q.answer
    return parse_examples({"examples": examples}, "bench"), answers


def comparable(result) -> dict:
    d = result.to_dict()
    for key in ("seconds", "trajectory_id"):
        d.pop(key)
    return d


def run_level(examples, answers, searcher, concurrency: int, delay: float, workdir: Path) -> dict:
    config = AgentConfig(max_turns=5, protocol="training")
    script = [Slow(delay, scripted_replier(answers))] * (len(examples) * CALLS_PER_QUESTION)
    with FakeOpenAIServer(script) as server:
        policy = make_policy("vllm", base_url=server.base_url, model=MODEL, timeout=120.0)
        run = EvalRun.open(workdir / f"c{concurrency}", {"policy": "vllm", "model": MODEL, "protocol": config.protocol,
                                                         "max_turns": 5, "top_k": 10, "search": searcher.describe()}, examples)
        started, cpu = time.perf_counter(), time.process_time()
        for _ in run_eval(examples, ReplicaPool([policy]), searcher, config, run, concurrency=concurrency):
            pass
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        calls = len(server.requests)
    results, missing = run.results(examples)
    return {"concurrency": concurrency, "wall_seconds": round(wall, 2), "questions_per_second": round(len(examples) / wall, 3),
            "cpu_seconds": round(cpu, 2), "model_calls": calls, "missing": len(missing), "results": results, "summary": summarize(results)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--levels", default="1,8,32", help="concurrencies to measure (the first is the baseline)")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds the server takes to answer each call")
    parser.add_argument("--data", default=str(ROOT / "data"), help="where the sample index is built once")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    reuse_page_memory()
    levels = [int(v) for v in args.levels.split(",")]

    index = build_sample_index(args.data)
    searcher = LocalSearcher(index)
    searcher.search("warm up the embedder", 10)  # model loading is not part of any level
    examples, answers = dataset(args.questions)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        for level in levels:
            row = run_level(examples, answers, searcher, level, args.delay, Path(tmp))
            rows.append(row)
            print(f"concurrency {level:3d}: {row['wall_seconds']:7.2f} s wall, {row['questions_per_second']:.2f} questions/s, "
                  f"{row['cpu_seconds']:.1f} s CPU (client and server), {row['model_calls']} model calls", flush=True)
    base = rows[0]
    same = all([comparable(r) for r in row["results"]] == [comparable(r) for r in base["results"]] for row in rows)
    ideal = args.questions * CALLS_PER_QUESTION * args.delay
    print(f"\n{args.questions} questions, {CALLS_PER_QUESTION} model calls each, server delay {args.delay:g} s "
          f"(pure waiting at concurrency 1: {ideal:.0f} s)")
    print("| concurrency | wall time (s) | questions/s | speed-up vs 1 | CPU (s) |")
    print("|---|---|---|---|---|")
    for row in rows:
        row["speedup"] = round(base["wall_seconds"] / row["wall_seconds"], 2)
        print(f"| {row['concurrency']} | {row['wall_seconds']:.1f} | {row['questions_per_second']:.2f} | {row['speedup']:.2f}x | {row['cpu_seconds']:.1f} |")
    print(f"per-question results identical at every level: {same}; accuracy {base['summary']['accuracy']:.2f}, "
          f"missing {sum(r['missing'] for r in rows)}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "questions": args.questions, "calls_per_question": CALLS_PER_QUESTION, "delay_seconds": args.delay,
        "identical_results": same, "index": index.folder.name, "pages": len(index),
        "levels": [{k: v for k, v in r.items() if k not in ("results", "summary")} for r in rows],
    }, indent=1), encoding="utf-8")
    return 0 if same and all(r["missing"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
