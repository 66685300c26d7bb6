"""Example questions and question sets for evaluation, and how much of a set an index can answer.

Shipped as data beside the code, never read from bench/:
- the sample report's questions (search_engine/sample_questions.py), over the index `make run` builds;
- agent/questions/*.json, sets in the reference dataset format (agent/evaluate.py), such as ten
  questions over the demo corpus with their evidence boxes.
The app offers these as example questions. For evaluation, callers may add folders of further sets
(the app adds bench/questions: the demo corpus's full dev split and its held-out test split).

A question is answerable from an index when all its gold pages are in it; `Coverage` counts that,
so the Evaluate page can pick a set the index can answer and warn, before a run, about one it cannot.
No Streamlit here.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from agent.evaluate import DatasetError, Example, load_dataset

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).resolve().parent / "questions"
SAMPLE_SET = "sample_report"  # the name of the sample report's set
EXAMPLES_SHOWN = 8  # the Ask page offers at most this many


@dataclass(frozen=True)
class ExampleQuestion:
    """A question offered on the Ask page, with the gold record a run of it is scored against."""

    question: str
    answer: str
    pages: tuple[str, ...]  # gold page ids
    boxes: tuple[tuple[str, tuple[float, ...]], ...] = ()  # (page id, evidence box in page pixels) where the set gives one

    def gold(self) -> dict:
        """The trajectory's `gold` record (agent/rewards.py; boxes feed agent/attention.py's gold share)."""
        gold = {"answer": self.answer, "pages": list(self.pages)}
        if self.boxes:
            gold["boxes"] = {page: list(box) for page, box in self.boxes}
        return gold


@dataclass(frozen=True)
class Coverage:
    """How much of a question set one index can answer."""

    questions: int
    answerable: int  # questions whose gold pages are all in the index
    gold_pages: int  # distinct gold pages the set names
    missing_pages: tuple[str, ...]  # gold pages that are not in the index, sorted

    @property
    def complete(self) -> bool:
        return self.questions > 0 and self.answerable == self.questions

    def describe(self) -> str:
        """For a person: '5 questions, all gold pages in this index' / '31 questions, 25 of 25 gold pages missing'."""
        head = f"{self.questions} question{'s' if self.questions != 1 else ''}"
        if not self.missing_pages:
            return f"{head}, all gold pages in this index"
        return f"{head}, {len(self.missing_pages)} of {self.gold_pages} gold pages missing"


@dataclass(frozen=True)
class QuestionSet:
    name: str  # unique: the file name, or SAMPLE_SET
    title: str  # for people
    examples: tuple[Example, ...]
    path: Path | None = None  # the file it was read from (None for the sample report's set)

    def coverage(self, page_ids: Iterable[str]) -> Coverage:
        present = set(page_ids)
        gold = {page for example in self.examples for page in example.gold_pages}
        answerable = sum(1 for e in self.examples if e.gold_pages and all(p in present for p in e.gold_pages))
        return Coverage(len(self.examples), answerable, len(gold), tuple(sorted(gold - present)))


def sample_report_set() -> QuestionSet:
    """The sample report's questions as an evaluation set (one gold page each, typed by what holds the answer)."""
    from search_engine.sample_questions import EXAMPLE_QUESTIONS, REPORT_STEM

    examples = tuple(
        Example(
            uid=f"sample-{i + 1}", query=q.question, reference_answer=q.answer, gold_pages=[q.page_id],
            file_name=f"{REPORT_STEM}.pdf", meta_info={"page_ids": [q.page_id], "question_type": q.kind},
        )
        for i, q in enumerate(EXAMPLE_QUESTIONS)
    )
    return QuestionSet(SAMPLE_SET, "The sample report's questions", examples)


def load_set(path: Path) -> QuestionSet:
    """A set from a dataset file ({"title"?, "examples": [...]}). Raises DatasetError naming the file and the problem."""
    path = Path(path)
    examples = load_dataset(path)
    data = json.loads(path.read_text(encoding="utf-8"))  # readable: load_dataset just read it
    title = data.get("title") if isinstance(data.get("title"), str) else path.name
    return QuestionSet(path.name, title, tuple(examples), path)


def shipped_sets(folder: Path = SHIPPED) -> list[QuestionSet]:
    """The sets shipped with the app: the sample report's, then agent/questions/*.json."""
    return [sample_report_set(), *_sets_in(folder)]


def question_sets(extra_folders: Iterable[Path] = (), shipped: Path = SHIPPED) -> list[QuestionSet]:
    """Every set for evaluation: the shipped ones, then each extra folder's *.json, by unique name."""
    found: dict[str, QuestionSet] = {}
    for qs in [*shipped_sets(shipped), *(qs for folder in extra_folders for qs in _sets_in(Path(folder)))]:
        found.setdefault(qs.name, qs)
    return list(found.values())


def _sets_in(folder: Path) -> list[QuestionSet]:
    sets = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            sets.append(load_set(path))
        except DatasetError as e:
            log.warning("skipping question set %s: %s", path, e)
    return sets


def default_set(sets: list[QuestionSet], page_ids: Iterable[str]) -> QuestionSet | None:
    """The first set the index answers completely; else the one whose questions it can answer most
    often (by share, then by count), so a small set about this index beats a big one about another."""
    page_ids = set(page_ids)
    coverages = [(qs, qs.coverage(page_ids)) for qs in sets]
    complete = [qs for qs, c in coverages if c.complete]
    if complete:
        return complete[0]
    ranked = sorted(coverages, key=lambda pair: (-pair[1].answerable / max(1, pair[1].questions), -pair[1].answerable))  # stable
    return ranked[0][0] if ranked else None


def example_question(example: Example) -> ExampleQuestion:
    return ExampleQuestion(example.query, example.reference_answer, tuple(example.gold_pages), _evidence(example))


def example_questions(sets: Iterable[QuestionSet], page_ids: Iterable[str], limit: int = EXAMPLES_SHOWN) -> list[ExampleQuestion]:
    """The first `limit` questions of `sets` whose gold pages are all in the index, each question once."""
    present = set(page_ids)
    found: dict[str, ExampleQuestion] = {}
    for qs in sets:
        for example in qs.examples:
            if example.gold_pages and all(p in present for p in example.gold_pages):
                found.setdefault(example.query, example_question(example))
    return list(found.values())[:limit]


def _evidence(example: Example) -> tuple:
    """The evidence box of a one-page example (the sets give `evidence_box` in page pixels)."""
    box = example.evidence_box
    if len(example.gold_pages) == 1 and isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
        return ((example.gold_pages[0], tuple(float(v) for v in box)),)
    return ()
