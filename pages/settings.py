"""Settings and status: where the model and the search engine are, where data lives, what is installed."""
from __future__ import annotations

import streamlit as st

from pages import common, status

st.title("Settings and status")
s = common.settings()

st.subheader("Model server (the `vllm` policy)")
st.caption("Any OpenAI-compatible chat endpoint that accepts images. The released VRAG model is trained on one exact protocol; other models work, less well.")
left, right = st.columns(2)
s.base_url = left.text_input("Endpoint URL", value=s.base_url, key="settings_base_url", help="e.g. http://gpu-box:8001/v1")
s.model = right.text_input("Model name (as served)", value=s.model, key="settings_model", help="vLLM's --served-model-name")
s.api_key = left.text_input("API key", value=s.api_key, key="settings_api_key", type="password")
s.transformers_model = right.text_input(
    "Local Qwen2.5-VL folder (the in-process `transformers` policy)",
    value=s.transformers_model,
    key="settings_transformers_model",
    help="The same model files you would give vLLM, e.g. a download of autumncc/Qwen2.5-VL-7B-VRAG.",
)
model_health = status.model_server(s.base_url, s.api_key)
status.show_check(model_health)

st.markdown("To start the released model on a GPU server (vLLM is installed separately: `pip install -r requirements-serve.txt`):")
st.code(status.vllm_serve_command(), language="bash", wrap_lines=True)

st.subheader("Search engine")
mode = st.radio(
    "Where the agent searches",
    ["in-process", "remote HTTP"],
    index=1 if s.search_url else 0,
    horizontal=True,
    key="settings_search_mode",
    help="In-process searches the active index of the Library page; remote uses a `python -m search_engine serve` server.",
)
if mode == "remote HTTP":
    s.search_url = st.text_input("Search server URL", value=s.search_url or "http://127.0.0.1:8002", key="settings_search_url").strip()
    status.show_check(status.search_server(s.search_url))
else:
    s.search_url = ""
    active = common.active_index()
    st.caption(f"Searching the active index: {common.md_escape(active[0]) if active else 'none yet'} (choose it on the Library page).")

st.subheader("Paths")
st.dataframe(status.paths_table(), hide_index=True)

st.subheader("Installed")
st.dataframe(status.packages_table(), hide_index=True)
