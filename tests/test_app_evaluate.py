"""The Evaluate page under AppTest: a question set over the active (sample) index, charts, links to trajectories."""
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


def test_a_dataset_that_cannot_be_read_is_a_clear_error(data_root):
    at = app("pages/evaluate.py")
    at.selectbox(key="eval_set").set_value("a file on the server…").run()
    at.text_input(key="eval_path").input("/no/such/questions.json").run()
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception
    assert [unescape_md(e) for e in texts(at.error)] == ["no dataset file at /no/such/questions.json"]

    at.selectbox(key="eval_set").set_value("an uploaded file…").run()
    at.file_uploader(key="eval_upload").set_value(("broken.json", b'{"examples": [{"uid": 1}]}', "application/json")).run()
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception
    assert any("example 0 is malformed" in unescape_md(e) for e in texts(at.error))
    at.file_uploader(key="eval_upload").set_value(("notjson.json", b"\x00\x01 not json", "application/json")).run()
    next(b for b in at.button if b.label == "Run").click().run()
    assert any("is not a readable JSON dataset" in unescape_md(e) for e in texts(at.error))
    assert TrajectoryStore(data_root / "trajectories").ids() == []


def test_offers_the_shipped_question_sets(data_root):
    at = app("pages/evaluate.py")
    options = at.selectbox(key="eval_set").options
    assert "vrag_demo_dev.json" in options  # bench/questions/
