"""Retrieval quality on the demo corpus: is the gold page ranked first / in the top 5?

Ingests ../shared/corpus/vrag-demo into an index folder (reused: a second run only reopens it), then
asks every question of bench/questions/vrag_demo_{split}.json and scores the dense, lexical and fused
rankings, per split and per language. Tune on dev only; test is the held-out figure.

    .venv/bin/python bench/retrieval_quality.py                      # dev and test, all modes
    .venv/bin/python bench/retrieval_quality.py --splits dev bench/retrieval_own_questions.json --misses
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search_engine import DocumentIndex  # noqa: E402

MODES = ("dense", "lexical", "fused")


def load_questions(split: str) -> list[dict]:
    """A split name (dev, test) of bench/questions/vrag_demo_*.json, or the path of a question file."""
    path = Path(split) if split.endswith(".json") else ROOT / "bench" / "questions" / f"vrag_demo_{split}.json"
    if not path.exists():
        print(f"(no {path} yet)")
        return []
    return json.loads(path.read_text())["examples"]


def gold_pages(example: dict) -> set[str]:
    meta = example["meta_info"]
    if meta.get("page_ids"):
        return set(meta["page_ids"])
    return {Path(name).stem for name in meta.get("reference_images", [])}


def evaluate(index: DocumentIndex, examples: list[dict], show_misses: bool) -> dict:
    """{language: {mode: [rank of the first gold page or None, ...]}}"""
    ranks: dict[str, dict[str, list]] = {}
    for ex in examples:
        language = ex["meta_info"].get("language", "?")
        gold = gold_pages(ex)
        for mode in MODES:
            ids = [h.page_id for h in index.search(ex["query"], top_k=10, mode=mode)]
            rank = next((i for i, pid in enumerate(ids, start=1) if pid in gold), None)
            ranks.setdefault(language, {}).setdefault(mode, []).append(rank)
            if show_misses and mode == "fused" and rank != 1:
                print(f"  miss {ex['uid']} gold={sorted(gold)} rank={rank} top3={ids[:3]} q={ex['query']}")
    return ranks


def summary(ranks: list) -> str:
    n = len(ranks)
    top1 = sum(r == 1 for r in ranks) / n
    top5 = sum(r is not None and r <= 5 for r in ranks) / n
    return f"{top1:6.1%} {top5:6.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default=str(ROOT / "tests" / "artifacts" / "demo-index"))
    parser.add_argument("--corpus", default=str(ROOT / ".." / "shared" / "corpus" / "vrag-demo"))
    parser.add_argument("--splits", nargs="+", default=["dev", "test"],
                        help="split names or question files, e.g. bench/retrieval_own_questions.json")
    parser.add_argument("--fusion", choices=["rrf", "score"], help="override the index's fusion method")
    parser.add_argument("--misses", action="store_true", help="print the questions fused search misses at rank 1")
    args = parser.parse_args()

    index = DocumentIndex.open(args.index)
    report = index.ingest([args.corpus])
    print(f"index {args.index}: {len(index)} pages ({len(report.added)} newly ingested)")
    if args.fusion:
        index.config.fusion.method = args.fusion
    print(f"fusion: {index.config.fusion}")
    print(f"{'split':6} {'lang':5} {'n':>3}  " + "  ".join(f"{m + ' top1/top5':>21}" for m in MODES))
    for split in args.splits:
        examples = load_questions(split)
        if not examples:
            continue
        ranks = evaluate(index, examples, args.misses)
        ranks["all"] = {m: [r for lang in list(ranks) for r in ranks[lang][m]] for m in MODES}
        for language, by_mode in ranks.items():
            n = len(by_mode["fused"])
            print(f"{Path(split).stem[:6]:6} {language:5} {n:>3}  " + "  ".join(f"{summary(by_mode[m]):>21}" for m in MODES))


if __name__ == "__main__":
    main()
