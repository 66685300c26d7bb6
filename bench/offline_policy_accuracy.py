"""Answer accuracy of the offline policy (OCR + rules, no model) through the real loop and index.

    .venv/bin/python bench/offline_policy_accuracy.py --split dev     # tune on this one only
    .venv/bin/python bench/offline_policy_accuracy.py --split test    # held out: run only to report
    .venv/bin/python bench/offline_policy_accuracy.py --questions bench/questions/offline_policy/fresh.json  # see its README

Runs every question of bench/questions/vrag_demo_{split}.json through `agent.loop.run_episode` with
the offline policy over a DocumentIndex of the demo pages (../shared/corpus/vrag-demo; built once
under data/indexes/ if --index is not given) and prints, per question and as a JSON summary:

- `accuracy` (the primary measure): the answer counts as right when, after normalisation
  (agent.rewards.normalize_answer), it equals the reference, or it states the same numbers as the
  reference (values compared as numbers: "13.0%" = "13%", "+891%" = "891%"), or the normalised
  reference appears in it as whole words and it is at most twice as long (for text answers such as
  "Paris" in "Paris-France"; never for numbers);
- `exact_match` and `anls` from agent/rewards.py, for comparison with the paper's metrics;
- the same per language and per question type, mean turns and seconds per question,
  and how often the first search put the gold page first.

Seconds depend on the machine's load (OCR dominates); the policy caches OCR by image bytes, so a page
shown in several episodes is read once within a run.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.evaluate import evaluate, load_dataset  # noqa: E402
from agent.loop import AgentConfig  # noqa: E402
from agent.rewards import anls, exact_match, normalize_answer  # noqa: E402

CORPUS = (ROOT / ".." / "shared" / "corpus" / "vrag-demo").resolve()
DEFAULT_INDEX = ROOT / "data" / "indexes" / "vrag-demo"
_NUM = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")


def numbers_in(text: str) -> list[float]:
    return [float(m.replace(",", "")) for m in _NUM.findall(text or "")]


def answer_correct(prediction: str | None, reference: str) -> bool:
    """The primary measure (see the module docstring)."""
    if not prediction:
        return False
    if exact_match(prediction, reference):
        return True
    ref_numbers = numbers_in(reference)
    if ref_numbers:
        return sorted(numbers_in(prediction)) == sorted(ref_numbers)
    pred, ref = normalize_answer(prediction), normalize_answer(reference)
    if not ref:
        return False
    if re.search(r"[\u4e00-\u9fff]", ref):  # Chinese has no word boundaries: containment of characters
        return ref in pred and len(pred) <= 2 * len(ref)
    return re.search(rf"(?<!\w){re.escape(ref)}(?!\w)", pred) is not None and len(pred) <= 2 * len(ref)


def open_index(folder: Path):
    from search_engine import DocumentIndex

    index = DocumentIndex.open(folder)
    if len(index) == 0:
        logging.info("building the demo index in %s (OCR of %s, a few minutes)", folder, CORPUS)
        index.ingest([CORPUS])
    return index


def run(split: str, index_folder: Path, max_turns: int, out: Path | None, questions: Path | None = None) -> dict:
    from agent.policies.offline import OfflinePolicy
    from agent.search import LocalSearcher
    from agent.trajectory import TrajectoryStore

    examples = load_dataset(questions or ROOT / "bench" / "questions" / f"vrag_demo_{split}.json")
    index = open_index(index_folder)
    policy = OfflinePolicy(index=index)
    searcher = LocalSearcher(index)
    config = AgentConfig(max_turns=max_turns)
    store = TrajectoryStore(out) if out else None
    rows = []
    for ex, result in zip(examples, evaluate(examples, policy, searcher, config, store)):
        prediction = result.answer if result.finished else None
        row = {
            "uid": ex.uid,
            "language": ex.meta_info.get("language", "?"),
            "type": ex.meta_info.get("question_type", "?"),
            "question": ex.query,
            "reference": ex.reference_answer,
            "answer": prediction,
            "correct": answer_correct(prediction, ex.reference_answer),
            "exact_match": exact_match(prediction or "", ex.reference_answer),
            "anls": anls(prediction or "", ex.reference_answer),
            "gold_page_first": result.first_search_recall_at_1 > 0,  # the first hit is a gold page
            "pages_shown": result.pages_shown,
            "turns": result.turns,
            "seconds": round(result.seconds, 2),
        }
        rows.append(row)
        print(f"{'OK ' if row['correct'] else 'BAD'} {row['uid']} [{row['language']}/{row['type']}] {row['question']}\n"
              f"    answer={row['answer']!r} reference={row['reference']!r} pages={row['pages_shown']} "
              f"turns={row['turns']} {row['seconds']} s", flush=True)
    return summarize(split, rows)


def _group(rows: list[dict], key: str) -> dict:
    groups = defaultdict(list)
    for r in rows:
        groups[r[key]].append(r)
    return {k: {"n": len(v), "accuracy": round(sum(r["correct"] for r in v) / len(v), 3)} for k, v in sorted(groups.items())}


def summarize(split: str, rows: list[dict]) -> dict:
    n = len(rows)
    mean = lambda key: round(sum(float(r[key]) for r in rows) / n, 3) if n else 0.0  # noqa: E731
    return {
        "split": split,
        "questions": n,
        "accuracy": mean("correct"),
        "measure": "normalised exact match, or same numbers, or the reference as whole words in a short answer",
        "exact_match": mean("exact_match"),
        "anls": mean("anls"),
        "by_language": _group(rows, "language"),
        "by_type": _group(rows, "type"),
        "gold_page_first_search_top1": mean("gold_page_first"),
        "mean_turns": mean("turns"),
        "mean_seconds": mean("seconds"),
        "median_seconds": round(statistics.median(r["seconds"] for r in rows), 2) if rows else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", choices=["dev", "test"], default="dev")
    p.add_argument("--questions", type=Path, default=None, help="another question file in the same format (overrides --split)")
    p.add_argument("--index", type=Path, default=DEFAULT_INDEX, help="index folder (built from the demo corpus if empty)")
    p.add_argument("--max-turns", type=int, default=10)
    p.add_argument("--out", type=Path, default=None, help="save each trajectory under this folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    summary = run(args.questions.stem if args.questions else args.split, args.index, args.max_turns, args.out, args.questions)
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
