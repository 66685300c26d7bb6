"""The Evaluate page under AppTest: it runs agent/eval_session.py (the CLI's wiring) in a background
worker, with progress, Stop, resume into a named run folder, results, charts that show 0 and
all-equal values, and the comparison of two saved runs; the default question set is one the index
can answer, and a set it cannot is warned about before running."""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from agent.eval_resume import EvalRun
from agent.trajectory import TrajectoryStore
from support.app_support import app, clean_env, data_root, texts, unescape_md  # noqa: F401 (fixtures)
from support.fake_openai_server import FakeOpenAIServer, Slow
from support.by_question import ByQuestion

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
QUESTIONS = {e["uid"]: e["query"] for e in DATASET["examples"]}
SEARCHES = {"hill": "Hillcrest water delivered", "plant": "Kestrel Ridge plant opened", "tariff": "tariff 2026 board"}
RIGHT = {"hill": "3,340 million litres", "plant": "12 September 2025", "tariff": "EUR 9.99"}  # right, right, wrong


def episodes(answers: dict[str, str], slow: dict[str, float] | None = None) -> dict[str, list]:
    """Per question text: a search, then the given answer (the search answered after `slow[uid]` seconds)."""
    slow = slow or {}
    out = {}
    for uid, answer in answers.items():
        search = f"<think>s</think><search>{SEARCHES[uid]}</search>"
        out[QUESTIONS[uid]] = [Slow(slow[uid], search) if uid in slow else search, f"<think>a</think><answer>{answer}</answer>"]
    return out


def start_button(at):
    return next(b for b in at.button if b.label == "Start")


def finish(at, timeout: float = 240):
    """Wait for the session's evaluation to end in its worker, then draw the page as the poll would."""
    run = at.session_state["eval_run"]
    assert run.worker.join(timeout), "the evaluation did not finish"
    return at.run()


def choose_file(at, path) -> None:
    at.selectbox(key="eval_set").set_value("a file on the server…").run()
    at.text_input(key="eval_path").input(str(path)).run()


@contextlib.contextmanager
def page_on_model_server(clean_env, replies: ByQuestion, dataset: Path | None = None):
    """The Evaluate page with the vllm policy against the local test server answering `replies`, the
    question set read from `dataset` when given."""
    with FakeOpenAIServer([replies] * 100) as server:
        clean_env.setenv("VRAG_BASE_URL", server.base_url)
        clean_env.setenv("VRAG_POLICY", "vllm")
        at = app("pages/evaluate.py")
        if dataset is not None:
            choose_file(at, dataset)
        yield at


def write_dataset(folder: Path, dataset: dict = DATASET) -> Path:
    path = folder / "questions.json"
    path.write_text(json.dumps(dataset))
    return path


def charts(at) -> dict:
    return {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec) for c in at.get("plotly_chart")}


def test_runs_a_question_set_in_the_background_and_charts_the_results(data_root, tmp_path, clean_env):
    replies = ByQuestion(episodes(RIGHT, slow={"hill": 1.0}))
    with page_on_model_server(clean_env, replies, write_dataset(tmp_path)) as at:
        assert at.text_input(key="eval_name").value == "questions-vllm"  # suggested from the set and the policy
        start_button(at).click().run()
        # the script run ends at once: Start is disabled and Stop enabled while the worker runs
        assert start_button(at).disabled and not at.button(key="eval_stop").disabled
        assert at.get("progress")
        finish(at)
    assert not at.exception and not at.error, texts(at.error)

    metrics = {m.label: m.value for m in at.metric}
    assert metrics["accuracy"] == "0.67" and metrics["mean turns"] == "2.00" and metrics["finish rate"] == "1.00"
    assert metrics["grounding IoU"] == "–"  # these questions give no gold boxes: not a 0
    specs = charts(at)
    assert set(specs) == {"Accuracy by question type", "NDCG of the pages shown", "Turns per question"}
    by_type = specs["Accuracy by question type"]["data"][0]
    assert dict(zip(by_type["x"], by_type["y"])) == {"table": 1.0, "text": 0.5}
    assert specs["Turns per question"]["data"][0]["x"] == [2]
    ndcg = specs["NDCG of the pages shown"]["data"][0]
    assert dict(zip(ndcg["x"], ndcg["y"]))["0.9–1.0"] == 3  # every gold page shown first: NDCG 1.0 is a bar, not an empty chart
    assert at.selectbox(key="eval_group").value == "question_type"

    # the table is agent/eval_table.py's rows, read back from the run folder the CLI would write
    rows = at.dataframe[0].value
    assert list(rows["uid"]) == ["hill", "plant", "tariff"] and list(rows["correct"]) == [1.0, 1.0, 0.0]
    folder = data_root / "evals" / "questions-vllm"
    run = EvalRun.load(folder)
    assert sorted(run.store.ids()) == sorted(rows["trajectory_id"])
    assert (folder / "results.csv").read_text().count("\n") == 4 and json.loads((folder / "summary.json").read_text())["accuracy"] == 2 / 3
    first = run.store.load(rows["trajectory_id"][0])
    assert first.gold["pages"] == ["aurora_water_report_2025_2"] and first.rewards["answer"] == 1.0
    assert first.config["protocol"] == "training"  # the Settings' protocol (default training)

    # a question's trajectory opens on the Trajectories page (copied into its store)
    at.selectbox(key="eval_pick").set_value(1).run()
    at.button(key="eval_open").click().run()
    assert not at.exception
    opened = run.trajectory_id("plant")
    assert TrajectoryStore(data_root / "trajectories").ids() == [opened] and at.session_state["traj_current"] == opened


def test_stop_ends_the_run_after_the_call_in_flight_and_start_resumes_it(data_root, tmp_path, clean_env):
    replies = ByQuestion(episodes(RIGHT, slow={"plant": 3.0}))
    with page_on_model_server(clean_env, replies, write_dataset(tmp_path)) as at:
        start_button(at).click().run()
        run = at.session_state["eval_run"]
        deadline = time.monotonic() + 120
        while replies.asked.get(QUESTIONS["plant"], 0) < 1:  # question 2's slow first call is in flight
            assert time.monotonic() < deadline and run.running, "the second question never started"
            time.sleep(0.05)
        at.run()
        at.button(key="eval_stop").click().run()
        assert run.stop_requested
        if run.running:  # the question in flight finishes its model call; the page says so
            at.run()
            assert at.button(key="eval_stop").disabled and "stopping" in at.get("progress")[0].proto.text
        finish(at)
        assert not at.exception and not at.error, texts(at.error)
        [warning] = [unescape_md(w) for w in texts(at.warning)]
        assert warning.startswith("Stopped by you after 1 of 3 questions.")
        assert replies.asked.get(QUESTIONS["plant"]) == 1 and QUESTIONS["tariff"] not in replies.asked  # nothing after the call in flight
        folder = data_root / "evals" / "questions-vllm"
        store = EvalRun.load(folder).store
        outcomes = {t.gold["uid"]: t.outcome for t in store.list()[0]}
        assert outcomes == {"hill": "answered", "plant": "stopped"}
        assert list(at.dataframe[0].value["outcome"]) == ["answered", "stopped"]

        # Start again with the same run name: the answered question is skipped, the stopped one runs again
        start_button(at).click().run()
        rerun = at.session_state["eval_run"]
        assert rerun is not run
        finish(at)
    assert not at.exception and not at.error, texts(at.error)
    assert rerun.session.progress.skipped == 1 and rerun.session.progress.done == 3
    assert replies.asked[QUESTIONS["hill"]] == 2  # its two calls in the first run only
    trajectories, bad = EvalRun.load(folder).store.list()
    assert not bad and sorted(t.gold["uid"] for t in trajectories) == ["hill", "plant", "tariff"]  # each question once
    assert all(t.outcome == "answered" for t in trajectories)
    assert {m.label: m.value for m in at.metric}["accuracy"] == "0.67"


def test_compares_two_saved_runs(data_root, tmp_path, clean_env):
    replies = ByQuestion()
    with page_on_model_server(clean_env, replies, write_dataset(tmp_path)) as at:
        for name, answers in (("run-a", RIGHT), ("run-b", {**RIGHT, "hill": "no idea", "tariff": "EUR 2.15 per cubic metre"})):
            replies.scripts = episodes(answers)
            at.text_input(key="eval_name").input(name).run()
            start_button(at).click().run()
            finish(at)
            assert not at.error, texts(at.error)
    at.selectbox(key="eval_compare_a").set_value("run-a").run()
    at.selectbox(key="eval_compare_b").set_value("run-b").run()
    assert not at.exception and not at.error
    shown = unescape_md(" ".join(texts(at.markdown) + texts(at.caption)))
    assert "Fixed by B (wrong in A, right in B): 1" in shown and "Broken by B (right in A, wrong in B): 1" in shown
    assert "tariff: What water tariff" in shown and "hill: How much water" in shown
    deltas = at.dataframe[1].value
    accuracy = deltas[deltas["metric"] == "accuracy"].iloc[0]
    assert accuracy["A"] == round(2 / 3, 3) and accuracy["B"] == round(2 / 3, 3) and accuracy["B − A"] == 0
    per_question = at.dataframe[2].value
    assert dict(zip(per_question["uid"], per_question["change"])) == {"hill": "broken", "plant": "same", "tariff": "fixed"}


def test_a_run_name_holding_other_settings_is_a_clear_message(data_root, tmp_path, clean_env):
    with page_on_model_server(clean_env, ByQuestion(episodes(RIGHT)), write_dataset(tmp_path)) as at:
        at.number_input(key="eval_limit").set_value(1).run()
        start_button(at).click().run()
        finish(at)
        at.slider(key="eval_budget").set_value(5).run()
        assert "A run named questions-vllm exists: Start continues it" in unescape_md(" ".join(texts(at.caption)))
        start_button(at).click().run()
        finish(at)
    assert not at.exception
    [error] = [unescape_md(e) for e in texts(at.error)]
    assert "max_turns=10" in error and "max_turns=5" in error and "choose another run name, or turn off Resume" in error


def test_a_dataset_that_cannot_be_read_is_a_clear_error_before_running(data_root):
    at = app("pages/evaluate.py")
    choose_file(at, "/no/such/questions.json")
    assert not at.exception
    assert [unescape_md(e) for e in texts(at.error)] == ["no dataset file at /no/such/questions.json"]
    assert start_button(at).disabled

    at.selectbox(key="eval_set").set_value("an uploaded file…").run()
    at.file_uploader(key="eval_upload").set_value(("broken.json", b'{"examples": [{"uid": 1}]}', "application/json")).run()
    assert not at.exception
    assert any("example 0 is malformed" in unescape_md(e) for e in texts(at.error)) and start_button(at).disabled
    at.file_uploader(key="eval_upload").set_value(("notjson.json", b"\x00\x01 not json", "application/json")).run()
    assert any("is not a readable JSON dataset" in unescape_md(e) for e in texts(at.error)) and start_button(at).disabled
    assert not (data_root / "evals").exists()


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


def test_the_offline_policy_runs_the_sample_reports_set_by_default(data_root):
    at = app("pages/evaluate.py")
    assert at.selectbox(key="eval_set").value == "sample_report" and at.text_input(key="eval_name").value == "sample_report-offline"
    at.number_input(key="eval_concurrency").set_value(2).run()
    start_button(at).click().run()
    run = at.session_state["eval_run"]
    assert start_button(at).disabled and not at.button(key="eval_stop").disabled
    finish(at)
    assert not at.exception and not at.error, texts(at.error)
    assert run.worker.status == "done" and run.session.progress.done == 5 and len(run.session.lines) == 5
    assert all(line.startswith(f"[{i}/5] sample-") for i, line in enumerate(run.session.lines, 1))
    rows = at.dataframe[0].value
    assert len(rows) == 5 and set(rows["outcome"]) <= {"answered", "no answer"}
    assert {m.label for m in at.metric} >= {"accuracy", "recall@1", "mean ndcg", "grounding IoU", "finish rate"}
    folder = data_root / "evals" / "sample_report-offline"
    assert len(EvalRun.load(folder).store.ids()) == 5
    assert json.loads((folder / "summary.json").read_text())["examples"] == 5
    assert TrajectoryStore(data_root / "trajectories").ids() == []  # a run's trajectories stay in its folder


def test_grounding_iou_is_in_the_summary_the_chart_and_the_table_where_the_set_gives_gold_boxes(data_root, tmp_path, clean_env):
    boxed = {"examples": [
        {**DATASET["examples"][0], "meta_info": {**DATASET["examples"][0]["meta_info"], "evidence_box": [0, 0, 5000, 5000]}},
        {**DATASET["examples"][1], "meta_info": {**DATASET["examples"][1]["meta_info"], "evidence_box": [100, 100, 400, 300]}},
    ]}
    replies = ByQuestion({  # the first question crops its page, the second answers without a crop (IoU 0, a bar)
        QUESTIONS["hill"]: [f"<think>s</think><search>{SEARCHES['hill']}</search>", "<think>z</think><bbox>[40, 90, 480, 330]</bbox>",
                            f"<think>a</think><answer>{RIGHT['hill']}</answer>"],
        **episodes({"plant": RIGHT["plant"]}),
    })
    with page_on_model_server(clean_env, replies, write_dataset(tmp_path, boxed)) as at:
        start_button(at).click().run()
        finish(at)
    assert not at.exception and not at.error, texts(at.error)
    summary = json.loads((data_root / "evals" / "questions-vllm" / "summary.json").read_text())
    assert summary["grounding_questions"] == 2 and 0 < summary["grounding_iou"] < 0.5
    assert {m.label: m.value for m in at.metric}["grounding IoU"] == f"{summary['grounding_iou']:.2f}"
    iou = charts(at)["Grounding: best IoU of the crops with the gold box"]["data"][0]
    assert sum(iou["y"]) == 2 and iou["y"][0] >= 1 and iou["text"][0] == str(iou["y"][0])  # the 0 of the uncropped question is a labelled bar
    rows = at.dataframe[0].value
    ious = dict(zip(rows["uid"], rows["grounding_iou"]))
    assert ious["plant"] == 0.0 and ious["hill"] > 0
