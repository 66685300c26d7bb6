"""Command line: ask one question, or evaluate a question set.

    python -m agent ask "question" --index DIR --policy offline|vllm|transformers [--base-url URL --model NAME]
                        [--max-turns N] [--top-k K] [--search-url URL] --out DIR
    python -m agent eval --dataset FILE --index DIR --policy ... --out DIR [--limit N] [--judge-url URL --judge-model NAME]

`ask` prints each turn as it happens, then the answer; `eval` prints one line per question on
stderr and the JSON summary on stdout. Each run is saved as a trajectory folder under --out.
User mistakes and infrastructure failures print one `error:` line (exit 2 and 1), never a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXIT_FAILED = 1  # the run started but could not finish (model or search server failed)
EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in the command line; printed as one line."""


def _local_index(args):
    """The --index folder, opened (None with --search-url); UserError when it is missing or empty."""
    if args.search_url:
        return None
    if not args.index:
        raise UserError("give --index DIR (a folder built with `python -m search_engine ingest`) or --search-url URL")
    folder = Path(args.index)
    if not folder.is_dir():
        raise UserError(f"no index at {folder}: build one with `python -m search_engine ingest PATH... --index {folder}`")
    from search_engine.index import DocumentIndex

    index = DocumentIndex.open(folder)
    if len(index) == 0:
        raise UserError(f"the index at {folder} has no pages: ingest files with `python -m search_engine ingest PATH... --index {folder}`")
    return index


def _searcher(args):
    from agent.search import HttpSearcher, LocalSearcher

    index = _local_index(args)
    return (HttpSearcher(args.search_url) if args.search_url else LocalSearcher(index)), index


def _policy(args, index):
    from agent.policies import make_policy

    if args.policy == "vllm":
        return make_policy("vllm", base_url=args.base_url, model=args.model, api_key=args.api_key,
                           temperature=args.temperature, max_tokens=args.max_tokens, timeout=args.timeout)
    if args.policy == "transformers":
        if not args.model:
            raise UserError("the transformers policy needs --model: a local Qwen2.5-VL folder (e.g. a download of autumncc/Qwen2.5-VL-7B-VRAG)")
        return make_policy("transformers", model=args.model, max_new_tokens=args.max_tokens, temperature=args.temperature)
    return make_policy("offline", index=index)  # borrows the index's OCR engine when there is one


def _config(args):
    from agent.loop import AgentConfig

    try:
        return AgentConfig(max_turns=args.max_turns, top_k=args.top_k)
    except ValueError as e:
        raise UserError(str(e)) from None


def _describe_turn(turn) -> str:
    head = f"[{turn.index + 1}] {turn.action}"
    if turn.action == "invalid":
        return f"{head}: {turn.error}"
    if turn.action == "search":
        if turn.shown_page_id:
            score = next((h["score"] for h in turn.hits if h["page_id"] == turn.shown_page_id), 0.0)
            return f"{head} {turn.argument!r} -> page {turn.shown_page_id} (score {score:.3f}, {len(turn.hits)} hits)"
        return f"{head} {turn.argument!r} -> no new page ({len(turn.hits)} hits)"
    if turn.action == "bbox":
        region = ", ".join(f"{v:.0f}" for v in turn.bbox_page)
        return f"{head} {turn.argument} -> crop of page {turn.observation.page_id} [{region}]"
    return f"{head}: {turn.argument}"


def _run_request(args):
    """The run `ask` asks for, wired by agent/runs.py exactly as the app's Ask page wires it."""
    from agent.runs import RunRequest
    from agent.workspace import Settings

    if args.policy == "transformers" and not args.model:
        raise UserError("the transformers policy needs --model: a local Qwen2.5-VL folder (e.g. a download of autumncc/Qwen2.5-VL-7B-VRAG)")
    settings = Settings(base_url=args.base_url or "", model=(args.model or "") if args.policy == "vllm" else "",
                        api_key=args.api_key or "", transformers_model=(args.model or "") if args.policy == "transformers" else "",
                        search_url=args.search_url or "")
    options = {"temperature": args.temperature}
    if args.policy == "vllm":
        options |= {"max_tokens": args.max_tokens, "timeout": args.timeout}
    elif args.policy == "transformers":
        options |= {"max_new_tokens": args.max_tokens}
    else:
        options = {}
    request = RunRequest(args.question, policy=args.policy, max_turns=args.max_turns, top_k=args.top_k,
                         index_name=Path(args.index).name if args.index and not args.search_url else None, policy_options=options)
    return request, settings


def cmd_ask(args) -> int:
    from agent.runs import Run
    from agent.trajectory import TrajectoryStore

    if not args.question.strip():
        raise UserError("the question is empty")
    _config(args)  # a bad budget is the user's mistake, said before anything loads
    request, settings = _run_request(args)
    index = _local_index(args)
    run = Run(request, settings, TrajectoryStore(args.out), open_index=lambda: index, preload=False)
    run.setup()
    print(f"policy: {run.policy.describe()['description']}", flush=True)
    try:
        for turn in run.turns():  # saved after every turn, scored at the end (agent/runs.py)
            if turn.thought:
                print(f"    think: {turn.thought[:300]}", flush=True)
            print(_describe_turn(turn), flush=True)
    except KeyboardInterrupt:  # Ctrl+C is a stop: the turns so far are saved, marked stopped
        print(f"stopped after {len(run.trajectory.turns)} turns", file=sys.stderr)
        print(f"saved: {run.folder}")
        return EXIT_FAILED
    trajectory = run.trajectory
    if trajectory.error:
        print(f"error: {trajectory.error}", file=sys.stderr)
        hint = getattr(run.policy_failure, "cli_hint", None)
        if hint:
            print(hint, file=sys.stderr)
        print(f"saved: {run.folder}")
        return EXIT_FAILED
    print(f"answer: {trajectory.answer}")
    print(f"saved: {run.folder}")
    return 0


def cmd_eval(args) -> int:
    from agent.evaluate import DatasetError, evaluate, load_dataset, summarize
    from agent.rewards import LLMJudge
    from agent.trajectory import TrajectoryStore

    try:
        examples = load_dataset(args.dataset)
    except DatasetError as e:
        raise UserError(str(e)) from None
    if args.limit is not None:
        examples = examples[: args.limit]
    config = _config(args)
    searcher, index = _searcher(args)
    policy = _policy(args, index)
    judge = None
    if args.judge_url:
        from agent.policies import make_policy

        judge = LLMJudge(make_policy("vllm", base_url=args.judge_url, model=args.judge_model, api_key=args.api_key))
    results = []
    for result in evaluate(examples, policy, searcher, config, store=TrajectoryStore(args.out), judge=judge):
        results.append(result)
        mark = "error" if result.error else ("ok" if result.correct else "wrong")
        print(f"[{len(results)}/{len(examples)}] {result.uid}: {mark}  answer={result.answer!r} reference={result.reference_answer!r}", file=sys.stderr, flush=True)
    summary = summarize(results) | {"policy": policy.describe(), "dataset": str(args.dataset), "out": str(args.out)}
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agent", description="The VRAG agent: ask a question or evaluate a question set.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--index", help="a local index folder (python -m search_engine ingest ...)")
        p.add_argument("--search-url", help="our search server instead of a local index, e.g. http://127.0.0.1:8002")
        p.add_argument("--policy", choices=["offline", "vllm", "transformers"], default="offline")
        p.add_argument("--base-url", help="OpenAI-compatible endpoint for --policy vllm (default http://127.0.0.1:8001/v1)")
        p.add_argument("--model", help="served model name (vllm) or local model folder (transformers)")
        p.add_argument("--api-key", default=None)
        p.add_argument("--temperature", type=float, default=None, help="not sent unless given (the reference sends none)")
        p.add_argument("--max-tokens", type=int, default=None, help="not sent unless given")
        p.add_argument("--timeout", type=float, default=None, help="seconds per model call (vllm)")
        p.add_argument("--max-turns", type=int, default=10, help="model calls per question (reference UI: 3..10)")
        p.add_argument("--top-k", type=int, default=10, help="hits per search (the reference uses 10)")
        p.add_argument("--out", required=True, help="folder of saved trajectories")
        p.add_argument("-v", "--verbose", action="store_true")

    ask = sub.add_parser("ask", help="answer one question, printing each turn")
    ask.add_argument("question")
    common(ask)
    ask.set_defaults(func=cmd_ask)

    ev = sub.add_parser("eval", help="evaluate a dataset in the reference format; prints a JSON summary")
    ev.add_argument("--dataset", required=True)
    ev.add_argument("--limit", type=int, default=None, help="only the first N questions")
    ev.add_argument("--judge-url", help="OpenAI-compatible endpoint of an LLM judge (optional)")
    ev.add_argument("--judge-model", help="the judge's served model name")
    common(ev)
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from agent.policies.base import PolicyError
    from agent.protocol import reuse_page_memory

    reuse_page_memory()  # each search turn decodes a full-size page; reuse its memory

    try:
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except PolicyError as e:  # a policy that cannot start (missing weights, missing module)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
