"""`python -m agent ask|eval`: turns printed as they happen, one-line errors, JSON summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.__main__ import main
from agent.trajectory import TrajectoryStore
from support.agent_index import tiny_index_folder
from support.fake_openai_server import FakeOpenAIServer, closed_port_url

ROOT = Path(__file__).resolve().parents[2]
MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
SCRIPT = [
    "<think>Find the revenue.</think><search>revenue 2023</search>",
    "<think>zoom</think><bbox>[60, 40, 480, 140]</bbox>",
    "<think>bad</think><bbox>[1, 2]</bbox>",
    "<think>It is 4.2 billion.</think><answer>4.2 billion dollars</answer>",
]


@pytest.fixture(scope="module")
def index_dir() -> str:
    return str(tiny_index_folder() / "index")


def test_ask_as_a_real_process(index_dir, tmp_path):
    """The real command in its own process: turns are printed in order, then the answer."""
    with FakeOpenAIServer(list(SCRIPT)) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "agent", "ask", "What was the revenue in 2023?", "--index", index_dir, "--policy", "vllm",
             "--base-url", server.base_url, "--model", MODEL, "--out", str(tmp_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    steps = [line for line in lines if line.startswith("[")]
    assert steps[0].startswith("[1] search 'revenue 2023' -> page report_1 (score ")
    assert steps[1].startswith("[2] bbox [60, 40, 480, 140] -> crop of page report_1 [")
    assert steps[2].startswith("[3] invalid: bad bbox: expected 4 numbers")
    assert steps[3] == "[4] answer: 4.2 billion dollars"
    assert "answer: 4.2 billion dollars" in lines and "Traceback" not in proc.stderr
    saved = TrajectoryStore(tmp_path).list()[0]
    assert len(saved) == 1 and saved[0].answer == "4.2 billion dollars" and len(saved[0].turns) == 4


def test_ask_with_the_server_down_saves_the_partial_run(index_dir, tmp_path, capsys):
    url = closed_port_url()
    code = main(["ask", "q?", "--index", index_dir, "--policy", "vllm", "--base-url", url, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: cannot reach the model server at " + url) and "Traceback" not in err
    saved, _ = TrajectoryStore(tmp_path).list()
    assert len(saved) == 1 and saved[0].error and saved[0].turns == []


@pytest.mark.parametrize("argv, message", [
    (["ask", "q?", "--index", "/nonexistent/index", "--out", "OUT"], "error: no index at /nonexistent/index"),
    (["ask", "q?", "--out", "OUT"], "error: give --index DIR"),
    (["ask", "   ", "--index", "X", "--out", "OUT"], "error: the question is empty"),
    (["ask", "q?", "--index", "INDEX", "--max-turns", "0", "--out", "OUT"], "error: max_turns must be a positive integer"),
    (["ask", "q?", "--index", "INDEX", "--policy", "transformers", "--out", "OUT"], "error: the transformers policy needs --model"),
    (["eval", "--dataset", "/nonexistent.json", "--index", "INDEX", "--out", "OUT"], "error: no dataset file at /nonexistent.json"),
])
def test_user_errors_are_one_line(argv, message, index_dir, tmp_path, capsys):
    argv = [index_dir if a == "INDEX" else str(tmp_path) if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_eval_prints_a_json_summary(index_dir, tmp_path, capsys):
    dataset = tmp_path / "set.json"
    dataset.write_text(json.dumps({"examples": [
        {"uid": "r", "query": "What was the revenue in 2023?", "reference_answer": "4.2 billion dollars",
         "meta_info": {"file_name": "report.pdf", "reference_page": [1]}},
    ]}), encoding="utf-8")
    out = tmp_path / "runs"
    with FakeOpenAIServer([SCRIPT[0], SCRIPT[3]]) as server:
        code = main(["eval", "--dataset", str(dataset), "--index", index_dir, "--policy", "vllm", "--base-url", server.base_url,
                     "--model", MODEL, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    summary = json.loads(captured.out)
    assert summary["examples"] == 1 and summary["accuracy"] == 1.0 and summary["recall@1"] == 1.0 and summary["mean_ndcg"] == 1.0
    assert summary["mean_turns"] == 2 and summary["finish_rate"] == 1.0 and summary["invalid_action_rate"] == 0.0
    assert summary["policy"]["name"] == "vllm" and "[1/1] r: ok" in captured.err
    assert len(TrajectoryStore(out).ids()) == 1
