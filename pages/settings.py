"""Settings and status: where the model and the search engine are, where data lives, what is installed.

What is set here is saved in the data folder's settings file as soon as it changes, so it survives a
reload and a restart of the server (agent/workspace.py).
"""
from __future__ import annotations

import streamlit as st

from pages import common, status

st.title("Settings and status")
s = common.settings()
problem = common.settings_problem()
notice = st.empty()  # the settings file's problem, until a save replaces the file
if problem:
    notice.warning(common.md_escape(problem), icon=":material/warning:")

st.subheader("Model server (the vLLM server policy)")
st.caption("Any OpenAI-compatible chat endpoint that accepts images. The released VRAG model is trained on one exact protocol; other models work, less well.")
left, right = st.columns(2)
s.base_url = left.text_input("Endpoint URL", value=s.base_url, key="settings_base_url", help="For example http://gpu-box:8001/v1").strip()
s.model = right.text_input("Model name (as served)", value=s.model, key="settings_model", help="The name the server gives the model (vLLM's served model name).").strip()
s.api_key = left.text_input("API key", value=s.api_key, key="settings_api_key", type="password", help="EMPTY for a vLLM server started without a key.")
status.show_check(status.model_server(s.base_url, s.api_key, s.model))
with st.expander("Starting the released model on a GPU server"):
    st.markdown("vLLM runs on the GPU machine, not here. Install it there with the project's serving requirements, then start the model:")
    st.code(f"pip install -r requirements-serve.txt\n{status.vllm_serve_command()}", language="bash", wrap_lines=True)

st.subheader("Local model (the transformers policy)")
s.transformers_model = st.text_input(
    "Local Qwen2.5-VL folder",
    value=s.transformers_model,
    key="settings_transformers_model",
    placeholder="/models/Qwen2.5-VL-7B-VRAG",
    help="The folder of a downloaded Qwen2.5-VL model (the same files you would give vLLM), for example autumncc/Qwen2.5-VL-7B-VRAG. "
         "It is checked here without loading it; nothing is downloaded.",
).strip()
if s.transformers_model:
    status.show_check(status.transformers_model(s.transformers_model))
else:
    st.caption("No folder set: the transformers policy is not available. Weights cannot be downloaded on this server.")

st.subheader("Search engine")
mode = st.radio(
    "Where the agent searches",
    ["in-process", "remote HTTP"],
    index=1 if s.search_url else 0,
    horizontal=True,
    key="settings_search_mode",
    help="In-process searches the active index of the Library page; remote uses a VRAG Studio search server started elsewhere.",
)
if mode == "remote HTTP":
    s.search_url = st.text_input("Search server URL", value=s.search_url or "http://127.0.0.1:8002", key="settings_search_url").strip()
    status.show_check(status.search_server(s.search_url))
else:
    s.search_url = ""
    active = common.active_index()
    st.caption(f"Searching the active index: {common.md_escape(active[0]) if active else 'none yet'} (choose it on the Library page).")

try:
    if common.save_settings(s):
        st.toast("Settings saved", icon=":material/check:")
        kept = common.unreadable_settings_copy()
        if problem:
            notice.info(f"Settings saved{'; the file that could not be read is kept as ' + common.md_escape(kept) if kept.exists() else ''}.", icon=":material/info:")
except common.UserFacingError as e:
    st.error(common.md_escape(str(e)))

st.subheader("Paths")
st.dataframe(status.paths_table(), hide_index=True)

st.subheader("Installed")
packages = status.packages_table()
st.dataframe(packages, hide_index=True, height=38 + 35 * len(packages))  # every row, no inner scrolling
