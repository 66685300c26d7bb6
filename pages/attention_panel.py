"""The Trajectories page's "where did the model look" panel: estimate, then compute attention maps.

The maps come from agent/attention.py: the finished trajectory is re-run through the same
Qwen2.5-VL weights in this process as one forward pass, and the maps are stored in the trajectory
folder, after which the turn view offers them as its "attention" layer. The re-forward runs as a
background job keyed by the trajectory folder (it writes there, so it is shared work), with the
estimate shown before it starts and the elapsed time while it runs. Stored maps are listed by turn
and image ("turn 3 · crop of page X (shown in turn 2)") and drawn here one at a time with their
colour scale.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from agent.figures import MODEBAR_CONFIG, HeatLayer, figure_height, layered_figure
from agent.trajectory import Trajectory
from pages import common, jobs, status
from pages.ui import pictures, scene


def show(trajectory: Trajectory, folder: Path, source: pictures.TurnSource | None = None) -> None:
    s = common.settings()
    has_maps = any(k.startswith("attention:") for t in trajectory.turns for k in t.maps)
    with st.expander("Model attention maps" + (" (stored)" if has_maps else ""), key="attn_open", on_change="rerun") as box:
        if not box.open:  # drawn only while open (the estimate reads the model's config)
            return
        if has_maps and source is not None:
            stored_maps(source)
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


def map_name(trajectory: Trajectory, turn: int, view) -> str:
    """A stored map named by the turn whose reply attended and the image it covers."""
    return f"turn {turn + 1} · {scene.image_name(view, trajectory)}"


def stored_maps(source: pictures.TurnSource) -> None:
    """Every stored map by turn and image; the chosen one drawn over its image with its colour scale."""
    found = [(t.index, m) for t in source.trajectory.turns for m in pictures.attention_maps(source, t.index)]
    if not found:
        return
    names = [map_name(source.trajectory, turn, m.view) for turn, m in found]
    name = st.selectbox("Stored attention map", names, key="attn_stored",
                        help="Each turn's reply attends over every image in its context; pick one. In the turn view, "
                             "switch on the 'attention' layer to see it over the turn's own picture.")
    chosen = names.index(name) if name in names else 0
    turn, chosen_map = found[chosen]
    drawn = pictures.picture(source, chosen_map.view, whole_page=False, max_side=900)
    if drawn is None:
        st.caption(f"The image of {names[chosen]} is missing.")
        return
    encoded, region, _ = drawn
    peak = float(chosen_map.values.max()) if chosen_map.values.size else 0.0
    values = chosen_map.values / peak if peak > 0 else chosen_map.values
    figure = layered_figure(encoded, region=region, heatmaps=[HeatLayer(values, chosen_map.extent, "model attention (share of peak)", "attention")],
                            height=figure_height(region, 640, 1), uirevision=f"attn-{names[chosen]}")
    left, _ = st.columns([2, 1])
    with left:
        st.plotly_chart(figure, key="attn_stored_figure", config=MODEBAR_CONFIG)
    st.caption(common.md_escape(f"{names[chosen]}: the reply's attention mass on this image is {float(chosen_map.values.sum()):.3f}; colours are shares of the map's peak"))
