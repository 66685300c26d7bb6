"""Trajectories: every saved run; filter, open, step through, compare two, export, import, delete.

Replay is fast: the list and each trajectory are read once per change of their files (cached by
folder and mtime), the turn view redraws alone when the turn changes (a fragment), and the heavy
parts (the index's embedder for relevance maps) load only when a layer needs them. A link keeps
what is open: ?id=<trajectory>&turn=<n>.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from agent import report, trajectory_io
from agent.trajectory import Trajectory, TrajectoryFormatError, TrajectoryStore
from pages import attention_panel, common
from pages.ui import records, run_info, turn_view
from pages.ui.pictures import TurnSource
from pages.ui.scene import action_text

OUTCOMES = ["answered", "stopped", "error", "no answer", "unfinished"]

st.title("Trajectories")
store = TrajectoryStore(common.trajectories_dir())


# --- import -------------------------------------------------------------------------------------

# drawn only while open: its widgets (an uploader among them) cost the browser time on every first draw
with st.expander("Import trajectories (a zip or a folder on the server)", key="traj_import_open", on_change="rerun") as import_box:
    if import_box.open:
        zip_tab, path_tab = st.tabs(["Upload a zip", "A folder on the server"])
        imported = None
        with zip_tab:
            upload = st.file_uploader("A .zip of one or more trajectory folders", type=["zip"], key="traj_import_zip")
            if st.button("Import the zip", disabled=upload is None, key="traj_import_zip_go"):
                try:
                    imported = trajectory_io.import_zip(upload.getvalue(), store, name=upload.name)
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

rows, broken = records.listing(store)
if broken:
    st.warning(f"{len(broken)} folders in the trajectory store could not be read; they are left out of the list below.")
    with st.expander("Which, and why"):
        st.dataframe([{"folder": tid, "why": why} for tid, why in broken], hide_index=True)
if not rows:
    st.info("No trajectories yet: ask a question on the Ask page, or run an evaluation.")
    st.stop()

by_id = {r["id"]: r for r in rows}
left, middle, right = st.columns([3, 2, 2])
text = left.text_input("Filter by question or answer", key="traj_filter").strip().lower()
policies = sorted({r["policy"] for r in rows})
chosen_policies = middle.multiselect("Policy", policies, default=policies, key="traj_policies")
outcome = right.selectbox("Outcome", ["all", *OUTCOMES], key="traj_outcome",
                          help="answered: gave an answer; stopped: stopped by the user; error: the model or search server failed; "
                               "no answer: the turn budget ran out; unfinished: still running, or its process ended mid-run")


def _keep(r: dict) -> bool:
    if text and text not in r["question"].lower() and text not in (r["answer"] or "").lower():
        return False
    return r["policy"] in chosen_policies and outcome in ("all", r["outcome"])


shown = [r for r in rows if _keep(r)]
selection = st.dataframe(
    shown, hide_index=True, on_select="rerun", selection_mode="single-row", key="traj_table",
    column_config={"reward": st.column_config.TextColumn("reward", help="Blank: the question had no reference to score against")},
)
selected_rows = selection.selection.rows if selection else []
shown_ids = [r["id"] for r in shown]
remembered = [st.query_params.get("id"), st.session_state.get("traj_current")]  # a link's ?id=, then the last one opened
if selected_rows and selected_rows[0] < len(shown):
    current = shown[selected_rows[0]]["id"]
else:
    current = next((i for i in remembered if i in shown_ids), shown_ids[0] if shown_ids else None)
if current is None:
    st.info("No trajectory matches the filter.")
    st.stop()
if st.session_state.get("traj_current") not in (None, current):
    st.query_params.pop("turn", None)  # a turn number belongs to the trajectory it was set for
st.session_state["traj_current"] = current
st.query_params["id"] = current

# --- one trajectory ------------------------------------------------------------------------------

folder = store.path(current)
try:
    traj = records.load(store, current)
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


st.divider()
run_info.question_header(traj.question, f"{traj.id} · {traj.created_at} · {traj.policy.get('description', traj.policy.get('name', ''))} · {traj.outcome}", traj)
run_info.outcome(traj)
with st.container(horizontal=True, gap="small", vertical_alignment="center"):
    st.download_button(
        "Export HTML report", data=lambda: report.trajectory_html(traj, folder), file_name=f"vrag-{traj.id}.html",
        mime="text/html", icon=":material/download:", key="traj_export_html", on_click="ignore",
    )
    st.download_button(
        "Export folder (zip)", data=lambda: trajectory_io.export_zip(folder), file_name=f"vrag-{traj.id}.zip",
        mime="application/zip", icon=":material/folder_zip:", key="traj_export_zip", on_click="ignore",
    )
    st.page_link("pages/present.py", label="Present", icon=":material/slideshow:", query_params={"id": traj.id},
                 help="Show this run one turn at a time, full width, for an audience")
    with st.popover("Delete", icon=":material/delete:"):
        st.markdown(f"Delete **{common.md_escape(traj.id)}** and its images for good?")
        if st.button("Delete this trajectory", type="primary", key="traj_delete_go"):
            try:
                store.delete(traj.id)
            except KeyError:
                pass  # deleted meanwhile (another tab)
            st.session_state.pop("traj_current", None)
            st.query_params.pop("id", None)
            st.query_params.pop("turn", None)
            st.rerun()

source = TurnSource(traj, folder=folder, index_folder=_index_folder(traj))
attention_panel.show(traj, folder, source)
turn_view.style()
try:
    linked_turn = int(st.query_params.get("turn", "")) - 1
except ValueError:
    linked_turn = None
turn_view.show(source, key=f"traj-{traj.id}", initial_turn=linked_turn if linked_turn is not None and linked_turn >= 0 else None,
               link_turn=True)

# --- compare with another run of the same question ----------------------------------------------------

others = [r for r in rows if r["question"].strip() == traj.question.strip() and r["id"] != traj.id]
st.divider()
st.subheader("Compare")
if not others:
    st.caption("No other trajectory asks the same question. Ask it again with another policy or budget to compare.")
    st.stop()
other_id = st.selectbox(
    "Compare with", [r["id"] for r in others], key="traj_compare", index=None, placeholder="another run of this question",
    format_func=lambda i: f"{i} · {by_id[i]['policy']} · {by_id[i]['turns']} turns · {by_id[i]['answer'] or by_id[i]['outcome']}",
)
if other_id is None:
    st.stop()
try:
    other = records.load(store, other_id)
except TrajectoryFormatError as e:
    st.error(f"That trajectory cannot be opened: {common.md_escape(str(e))}")
    st.stop()
other_source = TurnSource(other, folder=store.path(other_id), index_folder=_index_folder(other))
for column, t, src in zip(st.columns(2, border=True), (traj, other), (source, other_source)):
    with column:
        st.markdown(f"**{common.md_escape(t.policy.get('name', '?'))}** · {len(t.turns)} turns · {common.md_escape(t.id)}")
        st.caption("Answer" if t.finished else t.outcome)
        st.text(t.answer or "")
        if t.rewards:
            st.caption(" · ".join(f"{k} {v:.2f}" for k, v in t.rewards.items()))
        for turn in t.turns:
            st.markdown(f"**Turn {turn.index + 1}** · {turn.action}")
            if turn.thought:
                st.text(turn.thought)
            turn_view.verbatim(action_text(turn), f"cmp-{t.id}-{turn.index}")
            thumb = turn_view.turn_thumbnail(src, turn, 360)
            if thumb is not None:
                st.image(thumb, width=360)
