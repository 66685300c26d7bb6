"""The Settings page under AppTest: endpoints and their health, the remote search server, paths, packages."""
from __future__ import annotations

import importlib.metadata

from agent.trajectory import TrajectoryStore
from app_support import app, clean_env, data_root, search_server, texts, unescape_md  # noqa: F401 (fixtures)
from fake_openai_server import FakeOpenAIServer, closed_port_url

SERVE = (
    "vllm serve autumncc/Qwen2.5-VL-7B-VRAG --port 8001 --host 0.0.0.0 --limit-mm-per-prompt image=10 "
    "--served-model-name Qwen/Qwen2.5-VL-7B-Instruct"
)


def test_shows_the_serve_command_paths_and_packages(data_root, clean_env):
    clean_env.setenv("VRAG_BASE_URL", closed_port_url())
    at = app("pages/settings.py")
    assert not at.exception and not at.error
    assert SERVE in texts(at.code)  # the exact reference command (../shared/notes/vrag-protocol.md)
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
