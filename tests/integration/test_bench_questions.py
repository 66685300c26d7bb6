"""The hand-made question sets point at real pages and boxes inside them."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ROOT / "bench" / "questions"


def _validate_module():
    spec = importlib.util.spec_from_file_location("bench_questions_validate", QUESTIONS / "validate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _examples(split: str) -> list[dict]:
    return json.loads((QUESTIONS / f"vrag_demo_{split}.json").read_text(encoding="utf-8"))["examples"]


def test_question_sets_validate_against_the_corpus(demo_corpus, capsys):
    assert _validate_module().main(["--corpus", str(demo_corpus)]) == 0, capsys.readouterr().out


def test_every_corpus_page_is_gold_for_some_question(demo_corpus):
    gold = {pid for split in ("dev", "test") for ex in _examples(split) for pid in ex["meta_info"]["page_ids"]}
    assert {p.stem for p in demo_corpus.glob("*.jpg")} <= gold


def test_both_splits_cover_both_languages_and_all_types():
    for split in ("dev", "test"):
        metas = [ex["meta_info"] for ex in _examples(split)]
        assert {m["language"] for m in metas} == {"en", "zh"}
        assert {m["question_type"] for m in metas} == {"table", "chart", "text", "diagram", "map"}
        assert all("evidence_row_box" in m for m in metas if m["question_type"] == "table")


def test_validator_rejects_a_box_outside_the_image_and_a_missing_page(demo_corpus, tmp_path, capsys):
    ex = _examples("dev")[0]
    bad_box = json.loads(json.dumps(ex))
    bad_box["uid"] = "bad-box"
    bad_box["meta_info"]["evidence_box"] = [1000, 700, 1100, 800]  # slide pages are 1024x768
    bad_page = json.loads(json.dumps(ex))
    bad_page["uid"], bad_page["query"] = "bad-page", "another question"
    bad_page["meta_info"].update(file_name="slide_99_1024.jpg", reference_images=["slide_99_1024.jpg"],
                                 page_ids=["slide_99_1024"], reference_page=[99])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"examples": [bad_box, bad_page]}), encoding="utf-8")

    assert _validate_module().main([str(path), "--corpus", str(demo_corpus)]) == 1
    out = capsys.readouterr().out
    assert "bad-box: evidence_box [1000, 700, 1100, 800] leaves the 1024x768 image" in out
    assert "bad-page: slide_99_1024.jpg is not in the corpus" in out
