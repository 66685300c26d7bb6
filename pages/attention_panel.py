"""The Trajectories page's "where did the model look" panel: estimate, then compute attention maps.

The maps come from agent/attention.py: the finished trajectory is re-run through the same
Qwen2.5-VL weights in this process as one forward pass, and the maps are stored in the trajectory
folder, after which every turn row offers them beside the retrieval relevance map. The re-forward
runs as a background job keyed by the trajectory folder (it writes there, so it is shared work),
with the estimate shown before it starts and the elapsed time while it runs.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from agent.trajectory import Trajectory
from pages import common, jobs, status


def show(trajectory: Trajectory, folder: Path) -> None:
    s = common.settings()
    has_maps = any(k.startswith("attention:") for t in trajectory.turns for k in t.maps)
    with st.expander("Model attention maps" + (" (stored)" if has_maps else ""), expanded=False):
        check = status.transformers_model(s.transformers_model)
        if not check["ok"]:
            st.caption(
                "To see where the model looked, give the same Qwen2.5-VL weights that produced this trajectory "
                "on the Settings page; the trajectory is re-run through them once, in this process. "
                + common.md_escape(check["detail"])
            )
            return
        job = jobs.get_job(f"attention:{folder}")
        if job is not None and not job.finished:
            jobs.wait(job)
            st.rerun()
        if job is not None and job.error:
            st.error(f"The attention maps could not be computed: {common.md_escape(job.error)}")
        left, middle, right = st.columns(3)
        select = left.selectbox("Attention from", ["action", "bbox", "answer", "search", "reply"], key="attn_select",
                                help="which generated tokens of each reply: the action's argument, only bbox or answer turns, or the whole reply")
        reduce = middle.selectbox("Combine heads and layers by", ["mean", "max"], key="attn_reduce")
        model_folder = s.transformers_model.strip()
        estimate = _estimate(trajectory, model_folder)
        right.caption(f"Estimated time: {common.md_escape(estimate)}")
        if st.button("Compute attention maps" if not has_maps else "Recompute attention maps", key="attn_go"):
            try:
                with st.spinner("Loading the model…"):
                    loaded = common.transformers_policy(model_folder).loaded
            except common.UserFacingError as e:
                st.error(common.md_escape(str(e)))
                return

            def work(progress):
                from agent.attention import compute_attention_maps

                progress(0, 0, f"re-running the trajectory through the model ({estimate})")
                return compute_attention_maps(folder, loaded, select=select, reduce=reduce)

            from agent.attention import AttentionError
            from agent.policies.base import PolicyError

            jobs.start_job(f"attention:{folder}", "Computing attention maps", work, expected=(AttentionError, PolicyError))
            st.rerun()


def _estimate(trajectory: Trajectory, model_folder: str) -> str:
    try:
        from agent.attention import estimate_reforward

        return estimate_reforward(trajectory, model_folder).summary()
    except Exception as e:  # an estimate is advice: never let it break the page
        return f"unknown ({e.__class__.__name__}: {e})"
