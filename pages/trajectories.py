"""Trajectories: every saved run; filter, open, step through, compare two, export, import."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from agent import report, trajectory_io
from agent.trajectory import Trajectory, TrajectoryFormatError, TrajectoryStore
from pages import attention_panel, common
from pages.turn_view import TurnSource, header_row, question_header, render_turn, render_turn_compact

st.title("Trajectories")
store = TrajectoryStore(common.trajectories_dir())

# --- import -------------------------------------------------------------------------------------

with st.expander("Import trajectories (a zip or a folder on the server)"):
    zip_tab, path_tab = st.tabs(["Upload a zip", "A folder on the server"])
    imported = None
    with zip_tab:
        upload = st.file_uploader("A .zip of one or more trajectory folders", type=["zip"], key="traj_import_zip")
        if st.button("Import the zip", disabled=upload is None, key="traj_import_zip_go"):
            try:
                imported = trajectory_io.import_zip(upload.getvalue(), store)
            except trajectory_io.TrajectoryImportError as e:
                st.error(f"Nothing imported: {common.md_escape(str(e))}")
    with path_tab:
        folder_text = st.text_input("Folder holding trajectory folders (or one trajectory folder)", key="traj_import_path")
        if st.button("Import the folder", disabled=not folder_text.strip(), key="traj_import_path_go"):
            try:
                imported = trajectory_io.import_folder(Path(folder_text.strip()), store)
            except trajectory_io.TrajectoryImportError as e:
                st.error(f"Nothing imported: {common.md_escape(str(e))}")
    if imported is not None:
        if imported.imported:
            st.success(f"Imported {len(imported.imported)} trajectories: {common.md_escape(', '.join(imported.imported))}")
        if imported.already_there:
            st.info(f"Already in the store (left as they were): {common.md_escape(', '.join(imported.already_there))}")
        if imported.failed:
            st.error(f"{len(imported.failed)} folders could not be imported:")
            st.dataframe([{"folder": f, "why": why} for f, why in imported.failed], hide_index=True)

# --- the list ----------------------------------------------------------------------------------

trajectories, broken = store.list()
if broken:
    st.warning(f"{len(broken)} folders in the trajectory store could not be read; they are left out of the list below.")
    with st.expander("Which, and why"):
        st.dataframe([{"folder": tid, "why": why} for tid, why in broken], hide_index=True)
if not trajectories:
    st.info("No trajectories yet: ask a question on the Ask page, or run an evaluation.")
    st.stop()

by_id = {t.id: t for t in trajectories}
left, middle, right = st.columns([3, 2, 2])
text = left.text_input("Filter by question or answer", key="traj_filter").strip().lower()
policies = sorted({t.policy.get("name", "?") for t in trajectories})
chosen_policies = middle.multiselect("Policy", policies, default=policies, key="traj_policies")
outcome = right.selectbox("Outcome", ["all", "answered", "no answer", "error"], key="traj_outcome")


def _keep(t: Trajectory) -> bool:
    if text and text not in t.question.lower() and text not in (t.answer or "").lower():
        return False
    if t.policy.get("name", "?") not in chosen_policies:
        return False
    return {"all": True, "answered": t.finished, "no answer": not t.finished and not t.error, "error": bool(t.error)}[outcome]


shown = [t for t in trajectories if _keep(t)]
rows = [
    {
        "id": t.id,
        "created": t.created_at,
        "question": t.question,
        "policy": t.policy.get("name", "?"),
        "turns": len(t.turns),
        "answer": t.answer if t.finished else ("(error)" if t.error else "(none)"),
        "reward": t.rewards.get("reward"),
    }
    for t in shown
]
selection = st.dataframe(rows, hide_index=True, on_select="rerun", selection_mode="single-row", key="traj_table")
selected_rows = selection.selection.rows if selection else []
shown_ids = [t.id for t in shown]
remembered = [st.query_params.get("id"), st.session_state.get("traj_current")]  # a link's ?id=, then the last one opened
if selected_rows and selected_rows[0] < len(shown):
    current = shown[selected_rows[0]].id
else:
    current = next((i for i in remembered if i in shown_ids), shown_ids[0] if shown_ids else None)
if current is None:
    st.info("No trajectory matches the filter.")
    st.stop()
st.session_state["traj_current"] = current

# --- one trajectory ------------------------------------------------------------------------------

folder = store.path(current)
try:
    traj = store.load(current)
except TrajectoryFormatError as e:
    st.error(f"This trajectory cannot be opened: {common.md_escape(str(e))}")
    st.stop()


def _index_folder(t: Trajectory) -> Path | None:
    """The index the run searched, if this machine has it; else the active one (maps need its pages)."""
    folders = common.index_folders()
    name = t.config.get("index")
    if name in folders:
        return folders[name]
    active = common.active_index()
    return active[1] if active else None


question_header(traj, f"{traj.id} · {traj.created_at} · {traj.policy.get('description', traj.policy.get('name', ''))}")
if traj.error:
    st.error(common.md_escape(traj.error))
if traj.answer is not None:
    with st.container(border=True):
        st.caption("Final answer" if traj.finished else "No answer within the turn budget")
        st.markdown("### " + common.md_escape(traj.answer))
if traj.rewards:
    for column, (name, value) in zip(st.columns(len(traj.rewards)), traj.rewards.items()):
        column.metric(name.replace("_", " "), f"{value:.2f}")
export_html, export_zip, _ = st.columns([1, 1, 4])
export_html.download_button(
    "Export HTML report", data=lambda: report.trajectory_html(traj, folder), file_name=f"vrag-{traj.id}.html",
    mime="text/html", icon=":material/download:", key="traj_export_html", on_click="ignore",
)
export_zip.download_button(
    "Export folder (zip)", data=lambda: trajectory_io.export_zip(folder), file_name=f"vrag-{traj.id}.zip",
    mime="application/zip", icon=":material/folder_zip:", key="traj_export_zip", on_click="ignore",
)

attention_panel.show(traj, folder)
source = TurnSource(traj, folder=folder, index_folder=_index_folder(traj))
if not traj.turns:
    st.info("This run has no turns.")
    st.stop()
view_all = st.toggle("Show all turns", key="traj_all")
if view_all:
    header_row()
    for turn in traj.turns:
        render_turn(turn, source, key=f"traj-{traj.id}-{turn.index}")
else:
    step = st.slider("Turn", 1, len(traj.turns), 1, key=f"traj_step_{traj.id}") if len(traj.turns) > 1 else 1
    header_row()
    render_turn(traj.turns[step - 1], source, key=f"traj-{traj.id}-{step - 1}")

# --- compare with another run of the same question ----------------------------------------------------

others = [t for t in trajectories if t.question.strip() == traj.question.strip() and t.id != traj.id]
st.divider()
st.subheader("Compare")
if not others:
    st.caption("No other trajectory asks the same question. Ask it again with another policy or budget to compare.")
    st.stop()
other_id = st.selectbox(
    "Compare with", [t.id for t in others], key="traj_compare",
    format_func=lambda i: f"{i} · {by_id[i].policy.get('name', '?')} · {len(by_id[i].turns)} turns · {by_id[i].answer if by_id[i].finished else 'no answer'}",
)
try:
    other = store.load(other_id)
except TrajectoryFormatError as e:
    st.error(f"That trajectory cannot be opened: {common.md_escape(str(e))}")
    st.stop()
other_source = TurnSource(other, folder=store.path(other_id), index_folder=_index_folder(other))
for column, t, src in zip(st.columns(2, border=True), (traj, other), (source, other_source)):
    with column:
        st.markdown(f"**{common.md_escape(t.policy.get('name', '?'))}** · {len(t.turns)} turns · {common.md_escape(t.id)}")
        st.caption("Answer" if t.finished else "No answer")
        st.text(t.answer or "")
        if t.rewards:
            st.caption(" · ".join(f"{k} {v:.2f}" for k, v in t.rewards.items()))
        for turn in t.turns:
            render_turn_compact(turn, src, key=f"cmp-{t.id}-{turn.index}")
