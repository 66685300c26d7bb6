"""The Evaluate page under AppTest: the default question set is one the index can answer, a warning before
running one it cannot, charts that show 0 and all-equal values, links to the saved trajectories."""
from __future__ import annotations

import json

from agent.trajectory import TrajectoryStore
from app_support import app, clean_env, data_root, texts, unescape_md  # noqa: F401 (fixtures)
from fake_openai_server import FakeOpenAIServer

DATASET = {
    "examples": [
        {
            "uid": "hill", "query": "How much water was delivered to the Hillcrest district in 2025?", "reference_answer": "3,340 million litres",
            "meta_info": {"file_name": "aurora_water_report_2025.pdf", "reference_page": [2], "question_type": "table"},
        },
        {
            "uid": "plant", "query": "When did the Kestrel Ridge treatment plant open?", "reference_answer": "12 September 2025",
            "meta_info": {"file_name": "aurora_water_report_2025.pdf", "reference_page": [1], "question_type": "text"},
        },
        {
            "uid": "tariff", "query": "What water tariff did the board approve for 2026?", "reference_answer": "EUR 2.15 per cubic metre",
            "meta_info": {"file_name": "aurora_water_report_2025.pdf", "reference_page": [4], "question_type": "text"},
        },
    ]
}
REPLIES = [  # per question: one search, then an answer (right, right, wrong)
    "<think>s</think><search>Hillcrest water delivered</search>", "<think>a</think><answer>3,340 million litres</answer>",
    "<think>s</think><search>Kestrel Ridge plant opened</search>", "<think>a</think><answer>12 September 2025</answer>",
    "<think>s</think><search>tariff 2026 board</search>", "<think>a</think><answer>EUR 9.99</answer>",
]


def test_runs_a_question_set_and_charts_the_results(data_root, tmp_path, clean_env):
    dataset = tmp_path / "questions.json"
    dataset.write_text(json.dumps(DATASET))
    with FakeOpenAIServer(list(REPLIES)) as server:
        clean_env.setenv("VRAG_BASE_URL", server.base_url)
        clean_env.setenv("VRAG_POLICY", "vllm")
        at = app("pages/evaluate.py")
        at.selectbox(key="eval_set").set_value("a file on the server…").run()
        at.text_input(key="eval_path").input(str(dataset)).run()
        next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception and not at.error, texts(at.error)

    metrics = {m.label: m.value for m in at.metric}
    assert metrics["accuracy"] == "0.67" and metrics["mean turns"] == "2.00" and metrics["finish rate"] == "1.00"
    specs = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    assert set(specs) == {"Accuracy by question type", "NDCG of the pages shown", "Turns per question"}
    by_type = specs["Accuracy by question type"]["data"][0]
    assert dict(zip(by_type["x"], by_type["y"])) == {"table": 1.0, "text": 0.5}
    assert specs["Turns per question"]["data"][0]["x"] == [2]
    ndcg = specs["NDCG of the pages shown"]["data"][0]
    assert dict(zip(ndcg["x"], ndcg["y"]))["0.9–1.0"] == 3  # every gold page shown first: NDCG 1.0 is a bar, not an empty chart
    assert at.selectbox(key="eval_group").value == "question_type"
    # each row links to its saved trajectory
    rows = at.dataframe[0].value
    assert list(rows["correct"]) == [True, True, False]
    store = TrajectoryStore(data_root / "trajectories")
    assert sorted(store.ids()) == sorted(r.split("=", 1)[1] for r in rows["trajectory"])
    first = store.load(rows["trajectory"][0].split("=", 1)[1])
    assert first.gold["pages"] == ["aurora_water_report_2025_2"] and first.rewards["answer"] == 1.0
    at.switch_page("pages/trajectories.py")
    at.query_params["id"] = first.id
    at.run()
    assert at.session_state["traj_current"] == first.id


def run_button(at):
    return next(b for b in at.button if b.label == "Run")


def test_a_dataset_that_cannot_be_read_is_a_clear_error_before_running(data_root):
    at = app("pages/evaluate.py")
    at.selectbox(key="eval_set").set_value("a file on the server…").run()
    at.text_input(key="eval_path").input("/no/such/questions.json").run()
    assert not at.exception
    assert [unescape_md(e) for e in texts(at.error)] == ["no dataset file at /no/such/questions.json"]
    assert run_button(at).disabled

    at.selectbox(key="eval_set").set_value("an uploaded file…").run()
    at.file_uploader(key="eval_upload").set_value(("broken.json", b'{"examples": [{"uid": 1}]}', "application/json")).run()
    assert not at.exception
    assert any("example 0 is malformed" in unescape_md(e) for e in texts(at.error)) and run_button(at).disabled
    at.file_uploader(key="eval_upload").set_value(("notjson.json", b"\x00\x01 not json", "application/json")).run()
    assert any("is not a readable JSON dataset" in unescape_md(e) for e in texts(at.error)) and run_button(at).disabled
    assert TrajectoryStore(data_root / "trajectories").ids() == []


def test_the_default_set_is_the_sample_reports_and_another_corpus_set_is_warned_about(data_root):
    at = app("pages/evaluate.py")
    box = at.selectbox(key="eval_set")
    assert box.value == "sample_report"
    assert box.options[0] == "The sample report's questions (5 questions, all gold pages in this index)"
    assert any(o.startswith("vrag_demo_dev.json (31 questions, ") and o.endswith("gold pages missing)") for o in box.options)
    assert not at.warning  # every gold page is in the index
    box.set_value("vrag_demo_dev.json").run()
    [warning] = [unescape_md(w) for w in texts(at.warning)]
    assert warning.startswith("**22 of the 22 gold pages of these questions are not in the index sample**")
    assert "so 31 of the 31 questions cannot be answered from it" in warning
    at.number_input(key="eval_limit").set_value(2).run()  # the warning is about what would run
    assert "so 2 of the 2 questions" in unescape_md(texts(at.warning)[0])


def test_the_sample_reports_set_runs_by_default_and_a_type_with_no_right_answer_still_shows(data_root, clean_env):
    from search_engine.sample_questions import EXAMPLE_QUESTIONS

    replies = []
    for q in EXAMPLE_QUESTIONS:  # search with the question, then answer: right for the table question only
        replies += [f"<think>s</think><search>{q.question}</search>", f"<think>a</think><answer>{q.answer if q.kind == 'table' else 'no idea'}</answer>"]
    with FakeOpenAIServer(replies) as server:
        clean_env.setenv("VRAG_BASE_URL", server.base_url)
        clean_env.setenv("VRAG_POLICY", "vllm")
        at = app("pages/evaluate.py")
        run_button(at).click().run()
    assert not at.exception and not at.error, texts(at.error)
    specs = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    by_type = specs["Accuracy by question type"]["data"][0]
    assert dict(zip(by_type["x"], by_type["text"])) == {"chart": "0/1", "scanned text": "0/1", "table": "1/1", "text": "0/2"}
    assert dict(zip(by_type["x"], by_type["y"]))["text"] == 0  # a 0 is a labelled bar, not nothing
    assert by_type["textposition"] == "outside"
    assert len(TrajectoryStore(data_root / "trajectories").ids()) == 5
