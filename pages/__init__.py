"""The app's pages (listed in app.py) and their drawing helpers (pages/ui/).

A guard for deep links: Streamlit treats a `pages/` folder beside the main script as an old-style
multipage app until the main script has called `st.navigation` once in the process. So the very
first request a fresh server gets, if it is a link to a page (`/trajectories?id=...`), would run
that page file alone, without app.py (no page config, no navigation bar, every module of this
folder listed as a page). Importing this package in that state switches the old mode off and
reruns, so app.py runs and opens the linked page. Afterwards (every later run) this is a no-op.
"""
from __future__ import annotations

try:
    from streamlit.runtime.pages_manager import PagesManager
except ImportError:  # another Streamlit layout: nothing to guard
    PagesManager = None

if PagesManager is not None and getattr(PagesManager, "uses_pages_directory", None):
    import streamlit as st

    PagesManager.uses_pages_directory = False
    st.rerun()  # the rerun runs app.py, whose st.navigation opens the page the link names
