"""The Settings page under AppTest: endpoints and their health, the settings file (kept across reloads,
checked when read), the local model folder check, the remote search server, paths, packages."""
from __future__ import annotations

import importlib.metadata
import json

from agent.trajectory import TrajectoryStore
from support.app_support import app, clean_env, data_root, search_server, texts, unescape_md  # noqa: F401 (fixtures)
from support.fake_openai_server import FakeOpenAIServer, closed_port_url

SERVE = (  # the reference command, bound to the GPU machine itself (issue 10: exposing it is a deliberate choice)
    "vllm serve autumncc/Qwen2.5-VL-7B-VRAG --port 8001 --host 127.0.0.1 --limit-mm-per-prompt image=10 "
    "--served-model-name Qwen/Qwen2.5-VL-7B-Instruct"
)


def test_shows_the_serve_command_paths_and_packages(data_root, clean_env):
    clean_env.setenv("VRAG_BASE_URL", closed_port_url())
    at = app("pages/settings.py")
    assert not at.exception and not at.error
    vllm, attention = texts(at.code)
    assert SERVE in vllm.splitlines()  # the exact reference command (../shared/notes/vrag-protocol.md)
    assert "python -m agent serve-attention --model" in attention and "VRAG_ATTENTION_TOKEN=" in attention
    assert any("cannot reach" in unescape_md(w) for w in texts(at.warning))  # the model server is down
    paths = at.dataframe[0].value
    assert dict(zip(paths["what"], paths["path"]))["data root"] == str(data_root)
    assert dict(zip(paths["what"], paths["exists"]))["indexes"]
    packages = at.dataframe[1].value
    versions = dict(zip(packages["package"], packages["version"]))
    assert versions["streamlit"] == importlib.metadata.version("streamlit")
    assert versions["vllm"] == "not installed"  # it belongs on the GPU server, not in the app's install


def test_model_server_up_and_settings_persist_across_pages(data_root, clean_env):
    with FakeOpenAIServer([], model="my-served-model") as server:
        at = app("pages/settings.py")
        at.text_input(key="settings_base_url").input(server.base_url).run()
        at.text_input(key="settings_model").input("my-served-model").run()
        assert any("is up, serving: my-served-model" in unescape_md(s) for s in texts(at.success))
        at.switch_page("pages/ask.py").run()
        at.switch_page("pages/settings.py").run()
        assert at.text_input(key="settings_base_url").value == server.base_url  # kept for the session
        assert at.session_state["settings"].model == "my-served-model"


def test_settings_survive_a_reload_in_the_settings_file(data_root, clean_env):
    at = app("pages/settings.py")
    assert not (data_root / "settings.json").exists()  # a visit alone writes nothing
    at.text_input(key="settings_base_url").input("http://gpu-box:8001/v1").run()
    at.text_input(key="settings_model").input("vrag-7b").run()
    at.text_input(key="settings_api_key").input("secret-key").run()
    at.text_input(key="settings_transformers_model").input("/models/none-here").run()
    assert any(t.value == "Settings saved" for t in at.toast)
    saved = json.loads((data_root / "settings.json").read_text())
    assert saved == {"base_url": "http://gpu-box:8001/v1", "model": "vrag-7b", "api_key": "secret-key", "transformers_model": "/models/none-here", "search_url": "",
                     "protocol": "training", "attention_url": "", "attention_token": ""}
    reloaded = app("pages/settings.py")  # a new browser session: what a reload is
    assert reloaded.text_input(key="settings_base_url").value == "http://gpu-box:8001/v1"
    assert reloaded.text_input(key="settings_model").value == "vrag-7b"
    assert reloaded.text_input(key="settings_transformers_model").value == "/models/none-here"
    assert reloaded.session_state["settings"].api_key == "secret-key"


def test_a_corrupt_settings_file_is_said_and_the_defaults_are_used(data_root, clean_env):
    (data_root / "settings.json").write_text('{"base_url": "http://half-writ')
    at = app("pages/settings.py")
    assert not at.exception
    [warning] = [unescape_md(w) for w in texts(at.warning) if "saved settings" in unescape_md(w)]
    assert "could not be read: it is not valid JSON" in warning and "using the defaults" in warning
    assert at.text_input(key="settings_base_url").value == "http://127.0.0.1:8001/v1"
    at.text_input(key="settings_model").input("fixed").run()
    assert json.loads((data_root / "settings.json").read_text())["model"] == "fixed"
    assert (data_root / "settings.json.unreadable").read_text() == '{"base_url": "http://half-writ'
    assert not any("saved settings" in unescape_md(w) for w in texts(at.warning))


def test_the_local_model_folder_is_checked_and_what_is_wrong_is_said(data_root, clean_env, tmp_path):
    from support.tiny_vlm import tiny_model_dir

    at = app("pages/settings.py")
    at.text_input(key="settings_transformers_model").input(str(tiny_model_dir())).run()
    assert any("holds a Qwen2.5-VL model" in unescape_md(s) for s in texts(at.success))
    broken = tmp_path / "half-download"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    at.text_input(key="settings_transformers_model").input(str(broken)).run()
    [warning] = [unescape_md(w) for w in texts(at.warning) if "Local model" in w]
    assert "cannot be used" in warning
    for says in ("no weight files", "no preprocessor_config.json", "no tokenizer files"):
        assert says in warning
    assert "`" not in warning and "--" not in warning  # words for a person, not a shell


def test_page_text_speaks_to_a_person_not_to_a_shell(data_root, clean_env):
    clean_env.setenv("VRAG_BASE_URL", closed_port_url())
    at = app("pages/settings.py")
    for kind in ("markdown", "caption", "warning", "success", "info", "subheader", "error"):
        for text in texts(getattr(at, kind)):
            assert "`" not in unescape_md(text), (kind, text)  # no raw backticks (commands are in code blocks only)
    assert all(not w.help or "`" not in w.help for w in at.text_input)


def test_remote_search_server_is_checked_and_used_by_the_agent(data_root, clean_env):
    at = app("pages/settings.py")
    at.radio(key="settings_search_mode").set_value("remote HTTP").run()
    at.text_input(key="settings_search_url").input("http://127.0.0.1:9").run()
    assert any("cannot reach http://127.0.0.1:9/health" in unescape_md(w) for w in texts(at.warning))
    at.text_input(key="settings_search_url").input("not a url at all").run()
    assert not at.exception

    with search_server(data_root / "indexes" / "sample") as url, FakeOpenAIServer([
        "<think>s</think><search>Hillcrest water delivered</search>", "<think>a</think><answer>3,340</answer>",
    ]) as model:
        at.text_input(key="settings_search_url").input(url).run()
        assert any(f"{url}/health" in unescape_md(s) for s in texts(at.success))
        at.text_input(key="settings_base_url").input(model.base_url).run()
        at.switch_page("pages/ask.py").run()
        assert any("the remote search server" in unescape_md(c) for c in texts(at.caption))
        at.button_group(key="ask_policy").set_value("vllm").run()
        at.text_area(key="ask_question").input("How much water went to Hillcrest?").run()
        next(b for b in at.button if b.label == "Ask").click().run()
        assert at.session_state["ask_run"].worker.join(120)  # the run steps in a background worker (agent/runs.py)
        at.run()
    assert not at.exception and not at.error, texts(at.error)
    [traj] = TrajectoryStore(data_root / "trajectories").list()[0]
    assert traj.config["search"] == {"kind": "http", "url": url}
    assert traj.turns[0].shown_page_id == "aurora_water_report_2025_2" and traj.answer == "3,340"


def test_the_protocol_is_chosen_saved_reloaded_and_used_by_ask(data_root, clean_env):
    from agent.protocol import DEFAULT_PROFILE, PROFILES

    at = app("pages/settings.py")
    radio = at.radio(key="settings_protocol")
    assert radio.options == list(PROFILES) and radio.value == DEFAULT_PROFILE == "training"
    assert list(radio.proto.captions) == [p.description for p in PROFILES.values()]  # each profile's meaning, from agent/protocol.py
    radio.set_value("demo").run()
    assert json.loads((data_root / "settings.json").read_text())["protocol"] == "demo"
    reloaded = app("pages/settings.py")  # a new browser session
    assert reloaded.radio(key="settings_protocol").value == "demo"
    reloaded.switch_page("pages/ask.py").run()  # the offline policy (the default) answers with the chosen protocol
    reloaded.text_area(key="ask_question").input("How much water went to Hillcrest?").run()
    next(b for b in reloaded.button if b.label == "Ask").click().run()
    assert reloaded.session_state["ask_run"].worker.join(240)
    reloaded.run()
    assert not reloaded.exception
    [traj] = TrajectoryStore(data_root / "trajectories").list()[0]
    assert traj.config["protocol"] == "demo"


def service_line(at, field: str | None = None, value: str | None = None, kind: str = "warning") -> str:
    """Type `value` into the Settings field `field` (if given), then the attention service's one check line."""
    if field is not None:
        at.text_input(key=field).input(value).run()
    [line] = [unescape_md(w) for w in texts(getattr(at, kind)) if "Attention service" in w]
    return line


def test_the_attention_service_is_checked_against_the_real_service(data_root, clean_env):
    from support.attention_process import attention_service

    at = app("pages/settings.py")
    assert any("No attention service set" in c for c in texts(at.caption))
    url_field, token_field = "settings_attention_url", "settings_attention_token"
    closed = closed_port_url().removesuffix("/v1")
    down = service_line(at, url_field, closed)
    assert f"the attention service at {closed} is not reachable" in down and "Is the service started on that machine and port" in down
    with FakeOpenAIServer([]) as other:  # another kind of server at that address
        elsewhere = other.base_url.removesuffix("/v1")
        assert f"{elsewhere} answered HTTP 404 to a health check, so it is probably not an attention service" in service_line(at, url_field, elsewhere)
    assert "must start with http:// or https://" in service_line(at, url_field, "gpu-box:8003")
    with attention_service(token="s3cret") as url:
        assert f"{url} answers but needs a token" in service_line(at, url_field, url)
        assert "refused the token given" in service_line(at, token_field, "wrong")
        up = service_line(at, token_field, "s3cret", kind="success")
        assert f"{url} is up:" in up and "on cpu (2 layers" in up and "0 job(s) waiting" in up
        for kind in ("caption", "warning", "success", "info", "error"):
            assert all("`" not in unescape_md(t) for t in texts(getattr(at, kind)))  # words for a person
    assert at.text_input(key=token_field).proto.type == 1  # a password field (TextInput.PASSWORD)
    saved = json.loads((data_root / "settings.json").read_text())
    assert (saved["attention_url"], saved["attention_token"]) == (url, "s3cret")
    reloaded = app("pages/settings.py")
    assert reloaded.text_input(key=url_field).value == url
    assert reloaded.session_state["settings"].attention_token == "s3cret"
    next(b for b in reloaded.button if b.label == "Check again").click().run()  # the service has stopped since
    assert "is not reachable" in service_line(reloaded)
