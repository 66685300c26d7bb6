"""Command line: ingest folders into an index, search it, serve it over HTTP, build the sample index.

    python -m search_engine ingest PATH... --index DIR [--dpi 144] [--json] [--workers N]
                                   [--backend local|milvus --milvus-uri http://host:19530|FILE.db]
                                   [--embedder minilm|colqwen2|colqwen2.5|vlm-embed --model-path DIR|HUB_ID
                                    --pool-factor N --vlm-pooling last|mean --device auto|cpu|cuda
                                    --dtype auto|float32|bfloat16|float16]
    python -m search_engine search --index DIR [--top-k 10] [--mode fused|dense|lexical] [--json] QUERY
    python -m search_engine serve --index DIR [--host 127.0.0.1] [--port 8002]
    python -m search_engine sample [--data data]

User mistakes (a missing index, an empty or over-long query, a bad --top-k) print one line starting
with `error:` and exit with status 2; every path that cannot be ingested (a file, a folder that cannot
be listed, a link) is listed with its reason and the rest is indexed; a run that indexed nothing
because everything failed exits with status 1. Heavy libraries (torch, faiss) are imported only by the command that
needs them, so `--help` is instant.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_NOTHING_INDEXED = 1


class UserError(Exception):
    """A mistake in the command line; printed as one line, never as a traceback."""


def _progress_bar(desc: str):
    """A tqdm bar driven by the index's progress(done, total, message) callback."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="page", dynamic_ncols=True)

    def progress(done: int, total: int, message: str = "") -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        if message:
            bar.set_postfix_str(message[-60:], refresh=False)
        bar.refresh()

    return bar, progress


def _one_search_thread() -> None:
    """FAISS and torch parallelise one query over all cores with OpenMP. On a busy 2-core machine
    that was 5-30x slower than one thread (bench/RESULTS.md), and we search one query at a time."""
    import faiss
    import torch

    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)


def _open_existing(folder: str):
    """Open an index that must already hold pages (search and serve never create one)."""
    from .store import IndexStore

    path = Path(folder)
    if not path.is_dir() or IndexStore(path).read_config() is None:
        raise UserError(f"no index at {folder}: build one with `python -m search_engine ingest PATH... --index {folder}`")
    from .index import DocumentIndex

    index = DocumentIndex.open(path)  # keeps the settings it was built with
    if len(index) == 0:
        raise UserError(f"the index at {folder} has no pages: ingest files with `python -m search_engine ingest PATH... --index {folder}`")
    return index


def _print_report(report, index) -> None:
    for skipped in report.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}")
    print(
        f"added {len(report.added)} pages, removed {len(report.removed)}, {report.unchanged_files} files unchanged, "
        f"{len(report.skipped)} files skipped, in {report.seconds:.1f} s; the index at {index.folder} has {len(index)} pages"
    )


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cost_per_page(report, index) -> dict:
    """Indexing time and stored vector bytes per page for the index's embedder (what the CLI prints).
    Time per page is the whole ingest's (reading, OCR and embedding) over the pages it added."""
    added = len(report.added)
    described = index.backend.describe() if hasattr(index.backend, "describe") else {}
    multi = float(described.get("multivector_bytes_per_page", 0.0))
    page_vector = 4 * index.embedder.dim if added else 0  # the float32 page vector every index keeps
    return {"embedder": index.config.embedder, "pages_added": added,
            "seconds_per_page": round(report.seconds / added, 3) if added else None,
            "vector_bytes_per_page": round(page_vector + multi, 1), "multivector_bytes_per_page": round(multi, 1),
            "peak_rss_mib": round(_peak_rss_mib(), 1)}


def _embedder_settings(args) -> dict:
    """The embedder options given on the command line, as IndexConfig fields."""
    given = {"embedder": args.embedder, "model_path": args.model_path, "pool_factor": args.pool_factor,
             "device": args.device, "dtype": args.dtype, "vlm_pooling": args.vlm_pooling}
    return {k: v for k, v in given.items() if v is not None}


def _visual_embedder(config):
    """A visual embedder loaded before the index is opened, so that missing weights fail before any
    index folder is made or rebuilt; None for the default text embedder (it loads on first use)."""
    if config.embedder == "minilm":
        return None
    from .embedders import load_embedder

    return load_embedder(config.embedder, config.model_path or None, device=config.device, dtype=config.dtype,
                         pool_factor=config.pool_factor, pooling=config.vlm_pooling)


def cmd_ingest(args) -> int:
    from dataclasses import replace

    from .index import DocumentIndex, IndexConfig
    from .store import IndexStore

    if args.pool_factor is not None and args.pool_factor < 1:
        raise UserError(f"--pool-factor must be 1 (no pooling) or more, got {args.pool_factor}")
    embedder_settings = _embedder_settings(args)

    if Path(args.index).exists() and not Path(args.index).is_dir():
        raise UserError(f"--index {args.index} is a file, not a folder")
    if args.dpi is not None and not 36 <= args.dpi <= 600:
        raise UserError(f"--dpi must be between 36 and 600, got {args.dpi}")
    if args.backend == "milvus" and not args.milvus_uri:
        raise UserError("--backend milvus needs --milvus-uri (http://host:19530, or a local Milvus Lite path ending in .db)")
    if args.milvus_uri and args.backend != "milvus":
        raise UserError("--milvus-uri is for --backend milvus")
    # An existing index keeps the settings that decide its content (embedder, DPI, OCR, backend): opening
    # it with fresh defaults could rebuild it. Only an explicit --dpi or --backend that differs rebuilds it.
    if IndexStore(Path(args.index)).read_config() is None:
        config = IndexConfig(dpi=args.dpi or IndexConfig.dpi, backend=args.backend or "local",
                             milvus_uri=args.milvus_uri or "", workers=args.workers, **embedder_settings)
        index = DocumentIndex.open(args.index, config=config, embedder=_visual_embedder(config))
    else:
        index = DocumentIndex.open(args.index)
        changes = {}
        if args.dpi is not None and args.dpi != index.config.dpi:
            print(f"--dpi {args.dpi} differs from the index's {index.config.dpi}: every page will be rendered again")
            changes["dpi"] = args.dpi
        if args.backend and (args.backend, args.milvus_uri or "") != (index.config.backend, index.config.milvus_uri):
            print(f"--backend {args.backend} differs from the index's {index.config.backend}: every page will be ingested again")
            changes.update(backend=args.backend, milvus_uri=args.milvus_uri or "")
        for key, value in embedder_settings.items():
            if value != getattr(index.config, key):
                if key in ("embedder", "model_path", "pool_factor", "vlm_pooling"):
                    print(f"--{key.replace('_', '-')} {value} differs from the index's {getattr(index.config, key)!r}: "
                          f"every page will be embedded again")
                changes[key] = value
        if changes or args.workers is not None:
            config = replace(index.config, workers=args.workers, **changes)
            index = DocumentIndex.open(args.index, config=config, embedder=_visual_embedder(config))
    bar, progress = _progress_bar("ingest")
    try:
        report = index.ingest([Path(p) for p in args.paths], progress=progress)
    finally:
        bar.close()
    cost = _cost_per_page(report, index)
    if args.json:
        print(json.dumps(report.to_dict() | {"index_pages": len(index), "cost": cost}, ensure_ascii=False, indent=1))
    else:
        if cost["pages_added"]:  # before the report, whose summary stays the last line
            multi = (f" ({cost['multivector_bytes_per_page'] / 1024:.1f} KiB of them multi-vectors)"
                     if cost["multivector_bytes_per_page"] else "")
            print(f"embedder {cost['embedder']}: {cost['seconds_per_page']:.2f} s per page (reading, OCR and embedding), "
                  f"{cost['vector_bytes_per_page'] / 1024:.1f} KiB of vectors per page{multi}, "
                  f"peak memory {cost['peak_rss_mib']:.0f} MiB")
        _print_report(report, index)
    nothing_indexed = report.skipped and not report.added and not report.unchanged_files
    return EXIT_NOTHING_INDEXED if nothing_indexed else 0


def cmd_search(args) -> int:
    from .query import validate_query

    query = " ".join(args.query)
    validate_query(query, args.top_k)  # fail on a bad query before paying for loading the index
    _one_search_thread()
    hits = _open_existing(args.index).search(query, top_k=args.top_k, mode=args.mode)
    if args.json:
        keys = ("rank", "score", "page_id", "image_file", "source", "page", "scores")
        print(json.dumps([{k: hit.to_dict()[k] for k in keys} for hit in hits], ensure_ascii=False, indent=2))
        return 0
    if not hits:
        print("no hits")
        return 0
    width = max(len(hit.page_id) for hit in hits)
    print(f"{'rank':>4}  {'score':>8}  {'page_id':<{width}}  page  source")
    for hit in hits:
        print(f"{hit.rank:>4}  {hit.score:>8.4f}  {hit.page_id:<{width}}  {hit.page:>4}  {hit.source}")
    return 0


def cmd_serve(args) -> int:
    import uvicorn

    from .server import create_app, uvicorn_config

    _one_search_thread()
    index = _open_existing(args.index)
    print(f"serving {len(index)} pages from {index.folder} on http://{args.host}:{args.port} (API docs at /docs)")
    uvicorn.Server(uvicorn_config(create_app(index), host=args.host, port=args.port)).run()
    return 0


def cmd_sample(args) -> int:
    from .sample_corpus import build_sample_index

    bar, progress = _progress_bar("sample index")
    try:
        index = build_sample_index(args.data, progress=progress)
    finally:
        bar.close()
    print(f"the sample index at {index.folder} has {len(index)} pages")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search_engine", description="Index and search page images.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="add PDFs, images and folders (recursively) to an index")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    p.add_argument("--index", required=True, metavar="DIR", help="index folder (created if missing)")
    p.add_argument("--dpi", type=int, default=None, help="PDF render resolution (new index: 144; default: keep the index's)")
    p.add_argument("--json", action="store_true", help="print the ingest report as JSON (added, removed, skipped with reasons)")
    p.add_argument("--backend", choices=("local", "milvus"), default=None,
                   help="where pages are stored and searched (new index: local; default: keep the index's)")
    p.add_argument("--milvus-uri", default=None, metavar="URI",
                   help="with --backend milvus: http://host:19530 (a Milvus server or cluster) or a local Milvus Lite file ending in .db")
    p.add_argument("--workers", type=int, default=None, help="processes rendering and OCRing pages (default: one per core; 0: none)")
    from .embedders import EMBEDDERS  # light: the embedder modules import their models lazily

    p.add_argument("--embedder", choices=EMBEDDERS, default=None,
                   help="page embedder (new index: minilm, over the page text; colqwen2/colqwen2.5: late interaction "
                        "over the page image; vlm-embed: one vector per page image); default: keep the index's")
    p.add_argument("--model-path", default=None, metavar="DIR|HUB_ID",
                   help="visual embedders: a local model folder or a hub name (default: the embedder's hub id, from the cache)")
    p.add_argument("--pool-factor", type=int, default=None, dest="pool_factor",
                   help="colqwen2: store ~1/N of each page's vectors (hierarchical token pooling; default 1: all)")
    p.add_argument("--vlm-pooling", default=None, choices=("last", "mean"), dest="vlm_pooling",
                   help="vlm-embed: the page vector is the last token's hidden state (default) or the mean over tokens")
    p.add_argument("--device", default=None, help="visual embedders: auto (CUDA if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", default=None, choices=("auto", "float32", "bfloat16", "float16"),
                   help="visual embedders' precision (auto: bfloat16 on CUDA, float32 on CPU)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="search an index")
    p.add_argument("query", nargs="+", help="the query (several words are joined with spaces)")
    p.add_argument("--index", required=True, metavar="DIR")
    p.add_argument("--top-k", type=int, default=10, dest="top_k")
    p.add_argument("--mode", choices=("fused", "dense", "lexical"), default="fused")
    p.add_argument("--json", action="store_true", help="print a JSON list of hits")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("serve", help="serve an index over the VRAG search HTTP API")
    p.add_argument("--index", required=True, metavar="DIR")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, default=8002)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("sample", help="write the sample report and build its index if missing")
    p.add_argument("--data", default="data", metavar="DIR", help="data folder (default: data)")
    p.set_defaults(func=cmd_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # transformers draws a "Loading weights" bar each time the embedder loads; ours is the one that counts.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from .embedders import EmbedderError
    from .query import QueryError

    try:
        return args.func(args)
    except (UserError, QueryError, EmbedderError, ConnectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
