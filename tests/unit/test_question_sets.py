"""agent/question_sets.py: the shipped example questions and sets, and their gold-page coverage of an index."""
from __future__ import annotations

import json

import pytest

from agent import question_sets as qs
from agent.evaluate import DatasetError
from conftest import DEMO_CORPUS, ROOT
from search_engine.sample_questions import EXAMPLE_QUESTIONS, REPORT_STEM

SAMPLE_PAGES = [f"{REPORT_STEM}_{i}" for i in range(1, 5)]
DEMO_PAGES = sorted(p.stem for p in DEMO_CORPUS.glob("*.jpg"))
CHINA = "How many outbound trips, in millions, is China expected to make in 2020?"


def test_the_shipped_sets_are_the_sample_reports_then_the_demo_examples_and_name_real_pages():
    sample, demo = qs.shipped_sets()
    assert sample.name == qs.SAMPLE_SET and [e.query for e in sample.examples] == [e.question for e in EXAMPLE_QUESTIONS]
    assert [e.meta_info["question_type"] for e in sample.examples] == [e.kind for e in EXAMPLE_QUESTIONS]
    assert sample.coverage(SAMPLE_PAGES).complete
    assert demo.name == "vrag_demo_examples.json" and len(demo.examples) >= 8
    assert demo.coverage(DEMO_PAGES).complete  # every gold page exists in ../shared/corpus/vrag-demo
    assert all(e.evidence_box for e in demo.examples)


def test_demo_examples_come_from_the_tuning_split_never_the_held_out_one():
    from agent.evaluate import load_dataset

    test_split = {e.query for e in load_dataset(ROOT / "bench" / "questions" / "vrag_demo_test.json")}
    dev_split = {e.query for e in load_dataset(ROOT / "bench" / "questions" / "vrag_demo_dev.json")}
    demo = {e.query for e in qs.shipped_sets()[1].examples}
    assert demo <= dev_split and not demo & test_split


def test_examples_on_an_index_are_those_whose_gold_pages_it_holds():
    shipped = qs.shipped_sets()
    on_sample = qs.example_questions(shipped, SAMPLE_PAGES)
    assert [e.question for e in on_sample] == [e.question for e in EXAMPLE_QUESTIONS]
    on_demo = qs.example_questions(shipped, DEMO_PAGES)
    assert len(on_demo) == qs.EXAMPLES_SHOWN and on_demo[0].question == CHINA
    assert on_demo[0].gold() == {"answer": "134", "pages": ["slide_3_1024"], "boxes": {"slide_3_1024": [724.0, 197.0, 804.0, 236.0]}}
    assert qs.example_questions(shipped, ["slide_3_1024"]) == [on_demo[0]]
    assert qs.example_questions(shipped, []) == []


def test_coverage_counts_answerable_questions_and_missing_gold_pages():
    sample = qs.sample_report_set()
    coverage = sample.coverage(SAMPLE_PAGES[:2])
    assert (coverage.questions, coverage.answerable, coverage.gold_pages) == (5, 3, 4)
    assert coverage.missing_pages == tuple(SAMPLE_PAGES[2:]) and not coverage.complete
    assert coverage.describe() == "5 questions, 2 of 4 gold pages missing"
    assert sample.coverage(SAMPLE_PAGES).describe() == "5 questions, all gold pages in this index"


def test_the_default_set_is_one_the_index_can_answer(tmp_path):
    sets = qs.question_sets()
    assert qs.default_set(sets, SAMPLE_PAGES).name == qs.SAMPLE_SET
    assert qs.default_set(sets, DEMO_PAGES).name == "vrag_demo_examples.json"
    assert qs.default_set(sets, ["slide_3_1024"]).name == "vrag_demo_examples.json"  # 1 of 10 beats 2 of 31 and 3 of 45
    with_bench = qs.question_sets([ROOT / "bench" / "questions"])
    three = ["slide_3_1024", "slide_16_1024", "aliyun4_4"]
    assert [(s.name, s.coverage(three).answerable) for s in with_bench[1:]] == [("vrag_demo_examples.json", 4), ("vrag_demo_dev.json", 7), ("vrag_demo_test.json", 15)]
    assert qs.default_set(with_bench, three).name == "vrag_demo_examples.json"  # 4 of 10, not 15 of 45 (the held-out set)
    assert qs.default_set(with_bench, DEMO_PAGES).name == "vrag_demo_examples.json"  # complete, and listed first
    assert qs.default_set([], SAMPLE_PAGES) is None


def test_extra_folders_add_sets_and_a_broken_file_is_skipped(tmp_path, caplog):
    (tmp_path / "mine.json").write_text(json.dumps({"title": "Mine", "examples": [{"query": "q?", "meta_info": {"page_ids": ["x_1"]}}]}))
    (tmp_path / "broken.json").write_text("{ nope")
    sets = qs.question_sets([tmp_path])
    names = [s.name for s in sets]
    assert names[:2] == [qs.SAMPLE_SET, "vrag_demo_examples.json"] and "mine.json" in names and "broken.json" not in names
    assert next(s for s in sets if s.name == "mine.json").title == "Mine"
    assert "broken.json" in caplog.text
    with pytest.raises(DatasetError, match="no dataset file"):
        qs.load_set(tmp_path / "absent.json")
