"""The `vllm` policy over real HTTP: the exact request body, usage, every failure as a clear PolicyError."""
from __future__ import annotations

import time

import pytest

from agent.policies import make_policy
from agent.policies.base import PolicyError
from agent.policies.openai_chat import OpenAIChatPolicy, health, normalize_base_url
from agent.protocol import image_part, text_part
from support.fake_openai_server import CONTEXT_ERROR, FakeOpenAIServer, Fail, Slow, closed_port_url

MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
MESSAGES = [{"role": "user", "content": [text_part("hello")]}]


def test_default_request_is_exactly_the_reference_one():
    with FakeOpenAIServer(["<think>a</think><answer>b</answer>"]) as server:
        policy = make_policy("vllm", base_url=server.base_url, model=MODEL)
        completion = policy.complete(MESSAGES)
        assert completion.text == "<think>a</think><answer>b</answer>"
        assert completion.prompt_tokens > 0 and completion.completion_tokens > 0
        assert server.requests == [{"model": MODEL, "messages": MESSAGES, "stream": False}]
        assert server.paths == ["/v1/chat/completions"]


def test_temperature_and_max_tokens_only_when_set():
    with FakeOpenAIServer(["x"]) as server:
        OpenAIChatPolicy(base_url=server.base_url, model=MODEL, temperature=0.0, max_tokens=512).complete(MESSAGES)
        assert server.requests[0] == {"model": MODEL, "messages": MESSAGES, "stream": False, "temperature": 0.0, "max_tokens": 512}


def test_describe_names_endpoint_and_model():
    policy = OpenAIChatPolicy(base_url="http://gpu-box:8001/v1", model="m")
    d = policy.describe()
    assert d["name"] == "vllm" and d["model"] == "m" and "http://gpu-box:8001/v1" in d["description"]


@pytest.mark.parametrize("given, expected", [
    ("http://host:8001", "http://host:8001/v1"),
    ("http://host:8001/", "http://host:8001/v1"),
    ("host:8001", "http://host:8001/v1"),
    ("http://host:8001/v1/", "http://host:8001/v1"),
    ("https://api.example.com/compatible-mode/v1", "https://api.example.com/compatible-mode/v1"),
])
def test_normalize_base_url(given, expected):
    assert normalize_base_url(given) == expected


@pytest.mark.parametrize("bad", ["", "http://", "::::", "ftp://host/v1", "http://host:99999/v1", "http://256.1.1.1:8001/v1"])
def test_invalid_urls_are_clear_errors(bad):
    with pytest.raises(PolicyError, match="is not a valid endpoint URL"):
        OpenAIChatPolicy(base_url=bad)
    status = health(bad)
    assert status["ok"] is False and "is not a valid endpoint URL" in status["error"]


def test_connection_refused_names_the_endpoint():
    url = closed_port_url()
    policy = OpenAIChatPolicy(base_url=url, model=MODEL, timeout=5)
    started = time.perf_counter()
    with pytest.raises(PolicyError) as e:
        policy.complete(MESSAGES)
    assert time.perf_counter() - started < 5  # no hidden retries
    assert f"{url}/chat/completions" in str(e.value) and "cannot reach" in str(e.value)
    assert "vllm serve" not in str(e.value) and "`" not in str(e.value)  # words for a person; commands go in the hint
    assert "vllm serve" in e.value.cli_hint and "--host 127.0.0.1" in e.value.cli_hint and "--base-url" in e.value.cli_hint
    assert "Settings page" in e.value.app_hint


def test_timeout():
    with FakeOpenAIServer([Slow(2.0, "late")]) as server:
        policy = OpenAIChatPolicy(base_url=server.base_url, model=MODEL, timeout=0.3)
        with pytest.raises(PolicyError, match=r"did not answer within 0.3 s") as e:
            policy.complete(MESSAGES)
        assert server.base_url in str(e.value)


def test_the_deadline_is_on_the_whole_call_and_the_abandoned_read_stops():
    """Headers at once, then a byte every 0.2 s: each read is quick, the call is not."""
    import json

    from support.fake_openai_server import Trickle, completion_json

    body = json.dumps(completion_json("<answer>x</answer>")).encode()  # ~250 bytes: 50 s if read to the end
    with FakeOpenAIServer([Trickle(body, interval=0.2)]) as server:
        policy = OpenAIChatPolicy(base_url=server.base_url, model=MODEL, timeout=1.0)
        started = time.perf_counter()
        with pytest.raises(PolicyError, match=r"did not answer within 1 s") as e:
            policy.complete(MESSAGES)
        assert time.perf_counter() - started < 1.2
        assert e.value.cli_hint == "raise --timeout, or check the server's load"
        deadline = time.monotonic() + 3
        while not server.hung_up and time.monotonic() < deadline:  # the worker stops reading at its next byte
            time.sleep(0.05)
        assert server.hung_up and server.hung_up[0] - server.arrivals[0] < 1.0 + 1.0


@pytest.mark.parametrize("failure, words, cli, app", [
    (Fail(500, "CUDA out of memory"), ["HTTP 500", "CUDA out of memory"], ["server's log"], ["log"]),
    (Fail(400, CONTEXT_ERROR), ["HTTP 400", "longer than the model's context", "32768"], ["--max-model-len", "--max-turns"], ["turn budget"]),
    (Fail(400, "At most 1 image(s) may be provided in one request."), ["too many images"], ["--limit-mm-per-prompt image=10"], ["10 images"]),
    (Fail(401, "bad key"), ["HTTP 401", "not authorised", "bad key"], ["--api-key"], ["API key on the Settings page"]),
    (Fail(422, "strange"), ["HTTP 422", "strange"], [], []),
])
def test_http_errors_become_policy_errors(failure, words, cli, app):
    with FakeOpenAIServer([failure]) as server:
        policy = OpenAIChatPolicy(base_url=server.base_url, model=MODEL)
        with pytest.raises(PolicyError) as e:
            policy.complete(MESSAGES)
        message = str(e.value)
        assert f"{server.base_url}/chat/completions" in message
        assert "--" not in message.replace(server.base_url, "")  # no flags in the words for a person
        for word in words:
            assert word in message
        for word in cli:
            assert word in e.value.cli_hint
        for word in app:
            assert word in e.value.app_hint and "--" not in e.value.app_hint


def test_unknown_model_name():
    with FakeOpenAIServer(["x"]) as server:
        with pytest.raises(PolicyError, match=r"model 'wrong' not found") as e:
            OpenAIChatPolicy(base_url=server.base_url, model="wrong").complete(MESSAGES)
        assert "--model" in e.value.cli_hint and "Settings page" in e.value.app_hint


def test_server_side_image_limit_is_reported():
    tiny = b"\xff\xd8\xff\xe0\x00\x10JFIF"  # not decodable: the server rejects the request
    with FakeOpenAIServer(["x"]) as server:
        with pytest.raises(PolicyError, match="HTTP 400"):
            OpenAIChatPolicy(base_url=server.base_url, model=MODEL).complete([{"role": "user", "content": [image_part(tiny)]}])


def test_health():
    with FakeOpenAIServer([]) as server:
        status = health(server.base_url)
        assert status == {"ok": True, "url": f"{server.base_url}/models", "models": [MODEL], "error": None}
        assert server.paths == ["/v1/models"]
    down = health(closed_port_url(), timeout=2)
    assert down["ok"] is False and down["models"] == [] and "cannot reach" in down["error"]


def test_unknown_policy_name():
    with pytest.raises(PolicyError, match="unknown policy 'gpt'; choose one of: vllm, transformers, offline"):
        make_policy("gpt")


def test_factory_reports_a_missing_policy_module(monkeypatch):
    from agent import policies

    monkeypatch.setitem(policies.POLICIES, "later", ("agent.policies.not_written_yet", "Later"))
    with pytest.raises(PolicyError, match=r"the 'later' policy is not available in this build \(agent.policies.not_written_yet is missing\)"):
        make_policy("later")
    monkeypatch.setitem(policies.POLICIES, "nameless", ("agent.policies.openai_chat", "NoSuchClass"))
    with pytest.raises(PolicyError, match="defines no NoSuchClass"):
        make_policy("nameless")


def test_factory_drops_none_options():
    policy = make_policy("vllm", base_url="http://gpu:8001", model=None, temperature=None)
    assert policy.model == "Qwen/Qwen2.5-VL-7B-Instruct" and policy.base_url == "http://gpu:8001/v1" and policy.temperature is None


def test_health_is_bounded_and_never_raises():
    """A server that accepts the connection and never answers its models list: the check gives up at its timeout."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # the kernel accepts the connection; nobody ever answers
        started = time.perf_counter()
        status = health(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", timeout=1.0)
        assert time.perf_counter() - started < 1.5
    assert status["ok"] is False and status["models"] == [] and "did not answer within 1 s" in status["error"]
