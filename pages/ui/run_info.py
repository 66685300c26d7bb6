"""A run's question, outcome and answer, drawn the same way on Ask, Trajectories and Presentation."""
from __future__ import annotations

import streamlit as st

from agent.trajectory import Trajectory
from pages import common

OUTCOME_ICONS = {"answered": ":material/check_circle:", "stopped": ":material/stop_circle:", "error": ":material/error:",
                 "no answer": ":material/help:", "unfinished": ":material/hourglass_top:"}


def is_offline(traj: Trajectory) -> bool:
    return traj.policy.get("name") == "offline"


def honesty_label(traj: Trajectory) -> None:
    """The offline policy says what it is wherever its turns are shown."""
    if is_offline(traj):
        st.warning("Offline policy: no model was reasoning; the thoughts are written by rules, not by a model.", icon=":material/smart_toy:")


def question_header(question: str, caption: str, traj: Trajectory | None = None) -> None:
    st.subheader("Question")
    st.text(question)
    st.caption(common.md_escape(caption))
    if traj is not None:
        honesty_label(traj)


def outcome(traj: Trajectory, *, running: bool = False, hint: str | None = None) -> None:
    """How the run ended: a stop (not an error), an error (with what to do, `hint`, when known), the
    answer, the reference, the rewards."""
    if running:
        return
    turns = len(traj.turns)
    if traj.stopped:
        st.info(f"Stopped by you after {turns} turn{'s' if turns != 1 else ''}. The turns so far are saved.", icon=":material/stop_circle:")
    elif traj.error:
        advice = f" {hint}" if hint else ""
        st.error(common.md_escape(f"{traj.error.rstrip('.')}.{advice} The turns so far are saved as {traj.id}."))
    if traj.answer is not None and traj.outcome in ("answered", "no answer"):
        with st.container(border=True):
            st.caption("Final answer" if traj.finished else "No answer within the turn budget")
            st.markdown("### " + common.md_escape(traj.answer))
            if traj.gold.get("answer"):
                pages = ", ".join(traj.gold.get("pages", []))
                st.caption(common.md_escape(f"Reference answer: {traj.gold['answer']}" + (f" (gold pages: {pages})" if pages else "")))
    if traj.rewards:
        for column, (name, value) in zip(st.columns(len(traj.rewards)), traj.rewards.items()):
            column.metric(name.replace("_", " "), f"{value:.2f}")
