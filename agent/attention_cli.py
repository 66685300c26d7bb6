"""Command line for attention maps (registered by agent/__main__.py; heavy imports stay inside commands).

    python -m agent serve-attention --model DIR_OR_NAME [--host 127.0.0.1 --port 8003] [--device cuda --dtype bfloat16]
                                    [--token TOKEN] [--max-tokens N] [--max-memory-gb G] [--max-queued N]
    python -m agent attention TRAJ_FOLDER (--model DIR | --service URL [--token TOKEN])
                              [--select action|bbox|answer|search|reply|token] [--turn N] [--token-index K]
                              [--layers all|N|A-B] [--head H | --per-head] [--reduce mean|max] [--sink none|drop|baseline]
                              [--estimate-only]

`serve-attention` loads the weights once (failing at once, naming the model and how to get it, when
they are absent) and serves agent/attention_service.py until stopped; the token may also come from
$VRAG_ATTENTION_TOKEN (kept out of `ps`). `attention` prints where and how long, progress, then the
stored choice and its region scores per turn; the maps land in the trajectory folder either way.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys

from agent.attention_request import TOKEN
from agent.attention_maps import REDUCTIONS, SELECTIONS, SINK_MODES

TOKEN_ENV = "VRAG_ATTENTION_TOKEN"
EXIT_FAILED, EXIT_USER_ERROR = 1, 2
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_attention_commands(sub) -> None:
    """Add `serve-attention` and `attention` to the `python -m agent` subparsers."""
    serve = sub.add_parser("serve-attention", help="serve attention maps of trajectories sent over HTTP (run it beside vLLM, on the GPU)")
    serve.add_argument("--model", required=True, help="the same Qwen2.5-VL folder (or cached hub id) vLLM serves")
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1; anything else should have --token")
    serve.add_argument("--port", type=int, default=8003, help="0 picks a free port (printed)")
    serve.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    serve.add_argument("--dtype", default="auto", help="auto (the checkpoint's), bfloat16, float16, float32")
    serve.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="attention of the forward (captured rows are always eager's formula)")
    serve.add_argument("--token", default=os.environ.get(TOKEN_ENV) or None, help=f"bearer token clients must send (or ${TOKEN_ENV})")
    serve.add_argument("--max-tokens", type=int, default=None, help="refuse longer re-forwards than this (default: the model's context)")
    serve.add_argument("--max-memory-gb", type=float, default=None, help="memory one pass may use beyond the weights (default: 80%% of what is free at start)")
    serve.add_argument("--max-queued", type=int, default=4, help="jobs that may wait behind the running one")
    serve.add_argument("-v", "--verbose", action="store_true")
    serve.set_defaults(func=cmd_serve_attention)

    run = sub.add_parser("attention", help="compute attention maps of a saved trajectory, here or on an attention service")
    run.add_argument("trajectory", help="a trajectory folder (holding trajectory.json)")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="compute here with this Qwen2.5-VL folder (the weights that produced the trajectory)")
    where.add_argument("--service", help="compute on the attention service at this URL, e.g. http://gpu-box:8003")
    run.add_argument("--token", default=os.environ.get(TOKEN_ENV) or None, help=f"the service's bearer token (or ${TOKEN_ENV})")
    run.add_argument("--device", default="cpu", help="with --model")
    run.add_argument("--dtype", default="auto", help="with --model")
    run.add_argument("--select", default="action", choices=SELECTIONS + (TOKEN,), help="which generated tokens of each reply")
    run.add_argument("--turn", type=int, default=None, help="only this turn (1-based, as printed by `ask`)")
    run.add_argument("--token-index", type=int, default=None, help="with --select token: the K-th token (0-based) of the turn's reply")
    run.add_argument("--layers", default="all", help="all, one layer N, or a range A-B (0-based, inclusive)")
    heads = run.add_mutually_exclusive_group()
    heads.add_argument("--head", type=int, default=None, help="one attention head (0-based)")
    heads.add_argument("--per-head", action="store_true", help="keep every head apart (a per-head grid)")
    run.add_argument("--reduce", default="mean", choices=REDUCTIONS, help="over heads and layers")
    run.add_argument("--sink", default="none", choices=SINK_MODES, help="attention-sink correction (off by default)")
    run.add_argument("--estimate-only", action="store_true", help="print where it would run and how long, and stop")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=cmd_attention)


def _fail(message: str, code: int, hint: str | None = None) -> int:
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    return code


def parse_layers(text: str) -> tuple[int, int] | None:
    text = text.strip().lower()
    if text == "all":
        return None
    first, _, last = text.partition("-")
    try:
        a, b = int(first), int(last or first)
    except ValueError:
        raise ValueError(f"--layers must be all, N or A-B, got {text!r}") from None
    return a, b


def cmd_serve_attention(args) -> int:
    from agent.policies.base import PolicyError
    from agent.qwen_model import check_qwen25_vl, resolve_model_dir

    try:  # the cheap checks first: a missing model fails before torch is even imported
        check_qwen25_vl(resolve_model_dir(args.model))
    except PolicyError as e:
        return _fail(str(e), EXIT_FAILED, e.cli_hint)
    if args.host not in LOOPBACK and not args.token:
        print(f"warning: serving on {args.host} without --token: anyone who can reach this port can use the GPU", file=sys.stderr)

    import uvicorn

    from agent.attention_service import ServiceLimits, create_app
    from agent.qwen_model import load_qwen_vl

    try:
        loaded = load_qwen_vl(args.model, device=args.device, dtype=args.dtype, attn_implementation=args.attn)
    except PolicyError as e:
        return _fail(str(e), EXIT_FAILED, e.cli_hint)
    limits = ServiceLimits(max_tokens=args.max_tokens, max_queued=args.max_queued,
                           memory_bytes=int(args.max_memory_gb * 2**30) if args.max_memory_gb is not None else None)
    app = create_app(loaded, token=args.token, limits=limits, attn_implementation=args.attn)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        return _fail(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}", EXIT_USER_ERROR, "pick another --port")
    sock.listen(128)  # connections queue from now on, so a client that read the line below is never refused
    port = sock.getsockname()[1]
    worker = app.state.worker
    print(f"attention service for {loaded.name} on {loaded.device} ({worker.shape.layers} layers, up to {worker.max_tokens:,} tokens, "
          f"{worker.memory_budget / 2**30:.1f} GB per pass) at http://{args.host}:{port}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=port, log_level="info" if args.verbose else "warning"))
    server.run(sockets=[sock])
    return 0


def cmd_attention(args) -> int:
    from agent.attention import AttentionError, compute_attention_maps
    from agent.attention_client import attention_backend
    from agent.attention_request import MapRequest
    from agent.policies.base import PolicyError
    from agent.trajectory import Trajectory, TrajectoryFormatError

    if args.select == TOKEN and (args.turn is None or args.token_index is None):
        return _fail("--select token needs --turn N and --token-index K (which token of which turn)", EXIT_USER_ERROR)
    if args.turn is not None and args.turn < 1:
        return _fail(f"--turn counts from 1 (as `ask` prints turns), got {args.turn}", EXIT_USER_ERROR)
    try:
        request = MapRequest(select=args.select, turn=args.turn - 1 if args.turn is not None else None, token=args.token_index,
                             layers=parse_layers(args.layers), head=args.head, per_head=args.per_head, reduce=args.reduce, sink=args.sink)
        trajectory = Trajectory.load(args.trajectory)
    except (ValueError, TrajectoryFormatError) as e:
        return _fail(str(e), EXIT_USER_ERROR)
    try:
        backend = attention_backend(args.model, args.service or "", args.token, **({"device": args.device, "dtype": args.dtype} if args.model else {}))
        print(f"estimate: {backend.estimate(trajectory, request).summary()}", flush=True)
        if args.estimate_only:
            return 0
        shown = {"stage": None}

        def progress(stage: str, fraction: float) -> None:
            if stage != shown["stage"]:
                shown["stage"] = stage
                print(f"  {fraction:4.0%}  {stage}", file=sys.stderr, flush=True)

        run = compute_attention_maps(args.trajectory, backend, request, progress=progress)
    except (AttentionError, ValueError) as e:
        return _fail(str(e), EXIT_USER_ERROR)
    except PolicyError as e:
        return _fail(str(e), EXIT_FAILED, e.cli_hint)
    print(f"computed {request.describe()} in {run.seconds:.1f} s over {run.tokens:,} tokens ({backend.describe()})")
    for turn in sorted(run.scores):
        maps = [m for m in run.maps if m.turn == turn]
        shapes = ", ".join(f"{m.view.file} {'x'.join(map(str, m.values.shape))}" for m in maps)
        scores = ", ".join(f"{k.removeprefix('attention_')} {_number(v)}" for k, v in run.scores[turn].items())
        print(f"turn {turn + 1}: {shapes}" + (f"; {scores}" if scores else ""))
    for turn, why in sorted(run.skipped.items()):
        print(f"turn {turn + 1}: no maps ({why})")
    print(f"saved: {args.trajectory} (choice {run.key})")
    return 0


def _number(value) -> str:
    return "[" + ", ".join(f"{v:.3f}" if v is not None else "-" for v in value) + "]" if isinstance(value, list) else f"{value:.3f}"
