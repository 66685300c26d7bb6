"""VRAG Studio: the Streamlit entry point. Run with `streamlit run app.py` (or `make run`).

This file only lists the pages. Each page in pages/ is thin: it calls agent/ and search_engine/
and renders what they return. pages/common.py explains what is cached for everyone and what is
kept per browser session.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import streamlit as st
from streamlit import config as streamlit_config

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # `pages.common`, `agent`, `search_engine` import from the checkout
    sys.path.insert(0, str(ROOT))

from agent.protocol import reuse_page_memory  # noqa: E402
from pages.common import report_unexpected  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

reuse_page_memory()  # each search turn decodes a full-size page; reuse its memory (agent/protocol.py)
# Streamlit runs a full garbage collection after every script run, fragment reruns included. With
# torch, the embedder and plotly loaded that is 0.3-1 s of CPU holding the GIL each time: the Ask
# page's twice-a-second poll then spent ~80% of the process in gc.collect (py-spy), starving the
# run's worker thread (a torch import took 5 minutes) and every turn change. Python's own
# generational GC still runs as usual.
streamlit_config.set_option("runner.postScriptGC", False)

st.set_page_config(page_title="VRAG Studio", page_icon=":material/manage_search:", layout="wide")

PAGES = [
    st.Page("pages/ask.py", title="Ask", icon=":material/chat:", default=True),
    st.Page("pages/library.py", title="Library", icon=":material/folder_open:"),
    st.Page("pages/trajectories.py", title="Trajectories", icon=":material/timeline:"),
    st.Page("pages/present.py", title="Present", icon=":material/slideshow:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/monitoring:"),
    st.Page("pages/settings.py", title="Settings", icon=":material/settings:"),
]

page = st.navigation(PAGES, position="top")  # the top bar leaves the full width to the turn rows
try:
    page.run()
except Exception as e:  # the last guard: a bug shows a clear message, never a traceback
    report_unexpected(e)
