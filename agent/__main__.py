"""Command line: ask one question, evaluate a question set, share saved trajectories.

    python -m agent ask "question" --index DIR --policy offline|vllm|transformers [--base-url URL --model NAME]
                        [--max-turns N] [--top-k K] [--timeout S] [--episode-timeout S] [--search-url URL] --out DIR
    python -m agent eval --dataset FILE --index DIR --policy ... --out DIR [--limit N] [--judge-url URL --judge-model NAME]
                         [--concurrency N] [--base-url URL --base-url URL2 ...] [--protocol training|demo|explain] [--no-resume]
    python -m agent eval compare RUN_A RUN_B
    python -m agent trajectories list [--store DIR]
    python -m agent trajectories import ZIP_OR_FOLDER [--store DIR]
    python -m agent trajectories export ID [--store DIR] [--html FILE] [--zip FILE]

`ask` prints each turn as it happens, then the answer; `eval` shows a progress bar and one line per
question on stderr and the JSON summary on stdout; it resumes a run folder (--out) by default and
writes results.csv, results.json and summary.json into it; `eval compare` prints which questions
flipped between two run folders and the metric deltas (JSON on stdout). Each episode is saved as a
trajectory folder under --out.
User mistakes and infrastructure failures print one `error:` line (exit 2 and 1), never a
traceback, and a `hint:` line with what to do when there is advice; a failed question of `eval`
is one line and the evaluation goes on (exit 1 at the end if any failed). `trajectories import`
exits 1 when it refused something. --store defaults to the app's store (VRAG_STUDIO_DATA).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from agent.protocol import DEFAULT_PROFILE, PROFILES

EXIT_FAILED = 1  # the run started but could not finish (model or search server failed)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # Ctrl-C during an evaluation (what was done is kept; resume with the same command)


class UserError(Exception):
    """A mistake in the command line; printed as one line."""


def _print_failure(message: str, cli_hint: str | None = None) -> None:
    print(f"error: {message}", file=sys.stderr)
    if cli_hint:
        print(f"hint: {cli_hint}", file=sys.stderr)


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


def _config(args):
    from agent.loop import AgentConfig

    try:
        return AgentConfig(max_turns=args.max_turns, top_k=args.top_k, protocol=args.protocol,
                           episode_timeout=args.episode_timeout)
    except ValueError as e:
        raise UserError(str(e)) from None


def _base_urls(args) -> list[str | None]:
    """--base-url, given once or more (None: the policy's default endpoint)."""
    urls = args.base_url or [None]
    if len(urls) > 1 and args.policy != "vllm":
        raise UserError("--base-url more than once spreads episodes over several model servers: it needs --policy vllm")
    return urls


def _describe_turn(turn) -> str:
    head = f"[{turn.index + 1}] {turn.action}"
    if turn.action == "invalid":
        return f"{head}: {turn.error}"
    if turn.error:  # a search or crop not carried out (the episode's time ran out)
        return f"{head} {turn.argument}: {turn.error}"
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
    if args.timeout is not None and not args.timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    urls = _base_urls(args)
    if len(urls) > 1:
        raise UserError("ask talks to one model server: give --base-url once")
    settings = Settings(base_url=urls[0] or "", model=(args.model or "") if args.policy == "vllm" else "",
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
                         protocol=args.protocol, episode_timeout=args.episode_timeout,
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
        _print_failure(trajectory.error, trajectory.error_hints.get("cli"))
        print(f"saved: {run.folder}")
        return EXIT_FAILED
    print(f"answer: {trajectory.answer}")
    print(f"saved: {run.folder}")
    return 0


def _eval_request(args, examples):
    """The evaluation `eval` asks for, wired by agent/eval_session.py exactly as the app's Evaluate page wires it."""
    from agent.eval_session import EvalRequest
    from agent.workspace import Settings

    if args.policy == "vllm" and args.timeout is not None and not args.timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    if args.policy == "transformers" and not args.model:
        raise UserError("the transformers policy needs --model: a local Qwen2.5-VL folder (e.g. a download of autumncc/Qwen2.5-VL-7B-VRAG)")
    urls = _base_urls(args)
    settings = Settings(base_url=urls[0] or "", model=(args.model or "") if args.policy == "vllm" else "",
                        api_key=args.api_key or "", transformers_model=(args.model or "") if args.policy == "transformers" else "",
                        search_url=args.search_url or "")
    if args.policy == "vllm":
        options = {"temperature": args.temperature, "max_tokens": args.max_tokens, "timeout": args.timeout}
    elif args.policy == "transformers":
        options = {"max_new_tokens": args.max_tokens, "temperature": args.temperature}
    else:
        options = {}
    request = EvalRequest(examples, out=Path(args.out), dataset=str(args.dataset), policy=args.policy,
                          max_turns=args.max_turns, top_k=args.top_k, protocol=args.protocol, episode_timeout=args.episode_timeout,
                          concurrency=args.concurrency, resume=args.resume,
                          base_urls=tuple(u or "" for u in urls) if len(urls) > 1 else (), policy_options=options)
    return request, settings


def cmd_eval(args) -> int:
    from tqdm import tqdm

    from agent.eval_resume import EvalRunError
    from agent.eval_session import EvalSession, question_line
    from agent.evaluate import DatasetError, load_dataset
    from agent.rewards import LLMJudge

    if args.concurrency < 1:
        raise UserError(f"--concurrency must be at least 1, got {args.concurrency}")
    try:
        examples = load_dataset(args.dataset)
    except DatasetError as e:
        raise UserError(str(e)) from None
    if args.limit is not None:
        examples = examples[: args.limit]
    config = _config(args)
    request, settings = _eval_request(args, examples)
    index = _local_index(args)
    judge = None
    if args.judge_url:
        from agent.policies import make_policy

        judge = LLMJudge(make_policy("vllm", base_url=args.judge_url, model=args.judge_model, api_key=args.api_key))

    bar, hints = None, []

    def progress(p) -> None:
        nonlocal bar
        if bar is None:
            print(f"run {session.run.run_id} in {session.run.folder}: {p.total} questions, {p.skipped} already done, "
                  f"{args.concurrency} at a time on {len(session.pool.replicas)} model server(s), protocol {config.protocol}",
                  file=sys.stderr, flush=True)
            bar = tqdm(total=p.total, initial=p.skipped, unit="q", file=sys.stderr, mininterval=0.5, dynamic_ncols=True)
        if p.last is not None:
            bar.update(1)
            bar.set_postfix(errors=p.errors, refresh=False)
            bar.write(question_line(p), file=sys.stderr)
            hint = p.last.error_hints.get("cli") if p.last.error else None
            if hint and hint not in hints:
                hints.append(hint)

    session = EvalSession(request, settings, open_index=lambda: index, judge=judge, progress=progress, preload=False)
    try:
        session.setup()
    except EvalRunError as e:
        raise UserError(str(e)) from None
    interrupted = False
    try:
        for _ in session.results():  # the table and the summary are written from what is on disk at the end
            pass
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    for hint in hints:  # once per kind of failure, not once per question
        print(f"hint: {hint}", file=sys.stderr)
    summary = session.summary if session.summary is not None else session.finish()
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    print(f"table: {session.tables[0]} and {session.tables[1].name}", file=sys.stderr)
    if interrupted:
        print(f"interrupted: {summary['missing']} questions not run; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_FAILED if summary["errors"] else 0


def cmd_compare(argv: list[str]) -> int:
    from agent.eval_compare import compare_runs, describe
    from agent.eval_resume import EvalRunError

    parser = argparse.ArgumentParser(prog="python -m agent eval compare",
                                     description="Compare two evaluation runs of the same questions: which flipped, metric deltas (B - A).")
    parser.add_argument("run_a", help="the first run folder (an `eval --out` folder)")
    parser.add_argument("run_b", help="the second run folder")
    args = parser.parse_args(argv)
    try:
        comparison = compare_runs(args.run_a, args.run_b)
    except EvalRunError as e:
        raise UserError(str(e)) from None
    for line in describe(comparison):
        print(line, file=sys.stderr)
    print(json.dumps(comparison.to_dict(), ensure_ascii=False, indent=1))
    return 0


# --- trajectories ---------------------------------------------------------------------------------


def _store(args):
    from agent.trajectory import TrajectoryStore
    from agent.workspace import trajectories_dir

    return TrajectoryStore(Path(args.store) if args.store else trajectories_dir())


def cmd_trajectories_list(args) -> int:
    store = _store(args)
    good, bad = store.list()
    for t in good:
        name = (t.policy or {}).get("name", "?")
        question = " ".join(t.question.split())
        print(f"{t.id}  {t.outcome:<10} {len(t.turns):>2} turns  {name:<12} {question[:70]}")
    for tid, reason in bad:
        print(f"{tid or store.root}  unreadable: {reason}")
    if not good and not bad:
        print(f"no trajectories in {store.root}", file=sys.stderr)
    return 0


def cmd_trajectories_import(args) -> int:
    from agent import trajectory_io

    store = _store(args)
    source = Path(args.source).expanduser()
    if not source.exists():
        raise UserError(f"there is nothing at {source}: give a .zip or a folder of trajectory folders")
    try:
        if source.is_dir():
            report = trajectory_io.import_folder(source, store)
        else:
            report = trajectory_io.import_zip(source, store, name=source.name)
    except trajectory_io.TrajectoryImportError as e:
        print(f"refused: {source.name}: {e}", file=sys.stderr)
        return EXIT_FAILED
    for tid in report.imported:
        print(f"imported: {tid}")
    for tid in report.already_there:
        print(f"already in the store (left as it was): {tid}")
    for folder, reason in report.failed:
        print(f"refused: {folder}: {reason}", file=sys.stderr)
    print(f"{len(report.imported)} imported, {len(report.already_there)} already there, {len(report.failed)} refused, into {store.root}")
    return EXIT_FAILED if report.failed else 0


def _write_atomically(path: Path, data: bytes) -> None:
    """`data` written to `path` through a temporary file (agent.workspace.write_atomically), readable by this user
    only, as before; its folder is made if missing."""
    from agent.workspace import write_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, [data], mode=0o600)


def cmd_trajectories_export(args) -> int:
    from agent import report, trajectory_io
    from agent.trajectory import TrajectoryFormatError, check_id

    if not args.html and not args.zip:
        raise UserError("say what to write: --html FILE (a self-contained report) and/or --zip FILE (the folder, for import)")
    store = _store(args)
    try:
        folder = store.path(check_id(args.id))
    except ValueError as e:
        raise UserError(str(e)) from None
    if not folder.is_dir():
        raise UserError(f"no trajectory {args.id!r} in {store.root} (see `python -m agent trajectories list --store {store.root}`)")
    try:
        trajectory = store.load(args.id)
    except TrajectoryFormatError as e:
        print(f"error: trajectory {args.id} cannot be exported: {e}", file=sys.stderr)
        return EXIT_FAILED
    try:
        if args.html:
            _write_atomically(Path(args.html), report.trajectory_html(trajectory, folder).encode("utf-8"))
            print(f"wrote: {args.html}")
        if args.zip:
            _write_atomically(Path(args.zip), trajectory_io.export_zip(folder))
            print(f"wrote: {args.zip}")
    except OSError as e:
        print(f"error: cannot write the export ({e.strerror or e}: {e.filename or ''})", file=sys.stderr)
        return EXIT_FAILED
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agent", description="The VRAG agent: ask a question or evaluate a question set.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--index", help="a local index folder (python -m search_engine ingest ...)")
        p.add_argument("--search-url", help="our search server instead of a local index, e.g. http://127.0.0.1:8002")
        p.add_argument("--policy", choices=["offline", "vllm", "transformers"], default="offline")
        p.add_argument("--base-url", action="append", help="OpenAI-compatible endpoint for --policy vllm (default http://127.0.0.1:8001/v1); "
                       "eval: give it several times to spread episodes over several servers of the same model")
        p.add_argument("--model", help="served model name (vllm) or local model folder (transformers)")
        p.add_argument("--api-key", default=None)
        p.add_argument("--temperature", type=float, default=None, help="not sent unless given (the reference sends none)")
        p.add_argument("--max-tokens", type=int, default=None, help="not sent unless given")
        p.add_argument("--timeout", type=float, default=None, help="deadline in seconds on each whole model call, connect to last byte (vllm; default 300)")
        p.add_argument("--episode-timeout", type=float, default=None, help="deadline in seconds on each whole question (default: none)")
        p.add_argument("--max-turns", type=int, default=10, help="model calls per question (reference UI: 3..10)")
        p.add_argument("--top-k", type=int, default=10, help="hits per search (the reference uses 10)")
        p.add_argument("--protocol", choices=list(PROFILES), default=DEFAULT_PROFILE,
                       help="interaction format: training (default: what the released model was trained on), demo (the authors' "
                            "demo client's crop, our checks and messages) or explain (training, with specific messages for malformed replies)")
        p.add_argument("--out", required=True, help="folder of saved trajectories")
        p.add_argument("-v", "--verbose", action="store_true")

    ask = sub.add_parser("ask", help="answer one question, printing each turn")
    ask.add_argument("question")
    common(ask)
    ask.set_defaults(func=cmd_ask)

    ev = sub.add_parser("eval", help="evaluate a dataset in the reference format; prints a JSON summary",
                        epilog="python -m agent eval compare RUN_A RUN_B compares two run folders.")
    ev.add_argument("--dataset", required=True)
    ev.add_argument("--limit", type=int, default=None, help="only the first N questions")
    ev.add_argument("--judge-url", help="OpenAI-compatible endpoint of an LLM judge (optional)")
    ev.add_argument("--judge-model", help="the judge's served model name")
    ev.add_argument("--concurrency", type=int, default=1, help="episodes in flight at once (a vLLM server batches them)")
    ev.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                    help="skip the questions already done in --out (default); --no-resume runs every question again")
    common(ev)
    ev.set_defaults(func=cmd_eval)

    traj = sub.add_parser("trajectories", help="list, import and export saved trajectories (to share them without the app)")
    tsub = traj.add_subparsers(dest="action", required=True)

    def store_option(p):
        p.add_argument("--store", help="the folder of trajectory folders (default: the app's, under VRAG_STUDIO_DATA or ./data)")
        p.add_argument("-v", "--verbose", action="store_true")

    ls = tsub.add_parser("list", help="every trajectory in the store, and those that cannot be read, with why")
    store_option(ls)
    ls.set_defaults(func=cmd_trajectories_list)
    imp = tsub.add_parser("import", help="copy the valid trajectories of a .zip or a folder into the store; refuse the rest, saying why")
    imp.add_argument("source", metavar="ZIP_OR_FOLDER")
    store_option(imp)
    imp.set_defaults(func=cmd_trajectories_import)
    exp = tsub.add_parser("export", help="write one trajectory as a self-contained HTML report and/or a zip")
    exp.add_argument("id")
    exp.add_argument("--html", metavar="FILE", help="write the HTML report here")
    exp.add_argument("--zip", metavar="FILE", help="write the trajectory folder as a zip here (what `import` reads)")
    store_option(exp)
    exp.set_defaults(func=cmd_trajectories_export)

    # attention maps (issue 15): `serve-attention` and `attention`; the commands live in agent/attention_cli.py
    from agent.attention_cli import add_attention_commands

    add_attention_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["eval", "compare"]:
        try:
            return cmd_compare(argv[2:])
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USER_ERROR
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
        _print_failure(str(e), e.cli_hint)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
