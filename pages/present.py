"""Present: a run for an audience, one turn at a time, full width, large type.

Any saved trajectory (?id=<id>, or the Present link on the Trajectories page) or the run going on
the Ask page in this session. Step with the buttons or play at a chosen pace; the question and
the final answer stay at the top, and an offline run keeps its label (no model was reasoning).
"""
from __future__ import annotations

import time

import streamlit as st

from agent.trajectory import TrajectoryFormatError, TrajectoryStore
from pages import common
from pages.ui import records, run_info, turn_view
from pages.ui.pictures import TurnSource

LIVE = "live"  # the choice meaning "the run on the Ask page"
PACES = [2, 4, 6, 10]  # seconds per turn when playing
STYLE = """
<style>
.st-key-present-head [data-testid="stText"], .st-key-present-head p { font-size: 1.7rem; line-height: 1.3; }
.st-key-present-head h3 { font-size: 2.1rem; }
[class*="st-key-turn-text-large"] [data-testid="stText"] { font-size: 1.35rem; line-height: 1.4; }
[class*="st-key-turn-text-large"] [class*="st-key-verbatim-"] [data-testid="stText"] { font-size: 1.15rem; }
[class*="st-key-turn-text-large"] h3 { font-size: 1.9rem; }
</style>
"""
store = TrajectoryStore(common.trajectories_dir())
turn_view.style()
st.html(STYLE)
ask = st.session_state.get("ask_run")
rows, _ = records.listing(store)  # the loadable trajectories, newest first
labels = {r["id"]: f"{r['question'][:70]} · {r['outcome']} · {r['id']}" for r in rows}
choices = ([LIVE] if ask is not None and ask.trajectory is not None else []) + list(labels)
if not choices:
    st.title("Present")
    st.info("Nothing to present yet: ask a question on the Ask page, or import a trajectory on the Trajectories page.")
    st.stop()
wanted = st.query_params.get("id")
if wanted in choices and st.session_state.get("present_id") != wanted and "present_pick" not in st.session_state:
    st.session_state["present_pick"] = wanted

top = st.columns([6, 1, 1], vertical_alignment="bottom")
chosen = top[0].selectbox(
    "Run", choices, key="present_pick",
    format_func=lambda i: f"The run on the Ask page: {ask.question[:70]}" if i == LIVE else labels.get(i, i),
)
playing = top[1].toggle("Play", key="present_play", help="Step through the turns by themselves")
pace = top[2].selectbox("Seconds per turn", PACES, index=1, key="present_pace", disabled=not playing)
turn_view.layer_pills()
st.session_state["present_id"] = chosen
if chosen != LIVE:
    st.query_params["id"] = chosen

if chosen == LIVE:
    source = TurnSource(ask.trajectory, folder=ask.run.folder, index_folder=ask.index_folder)
    live = ask.running
else:
    try:
        traj = records.load(store, chosen)
    except TrajectoryFormatError as e:
        st.error(f"This trajectory cannot be opened: {common.md_escape(str(e))}")
        st.stop()
    folders = common.index_folders()
    active = common.active_index()
    index_folder = folders.get(traj.config.get("index")) or (active[1] if active else None)
    source = TurnSource(traj, folder=store.path(chosen), index_folder=index_folder)
    live = False

key = f"present-{source.trajectory.id}"


def _go(index: int) -> None:
    st.session_state[f"{key}-turn"] = index
    st.session_state[f"{key}-at"] = time.monotonic()


def _slide(source: TurnSource, playing: bool, pace: float, live: bool) -> None:
    try:
        _draw(source, playing, pace, live)
    except Exception as e:  # a fragment rerun bypasses app.py's guard
        common.report_unexpected(e)


def _draw(source: TurnSource, playing: bool, pace: float, live: bool) -> None:
    traj = source.trajectory
    turns = list(traj.turns)
    with st.container(key="present-head", border=True):
        st.caption("Question")
        st.text(traj.question)
        if traj.finished:
            st.caption("Final answer")
            st.markdown("### " + common.md_escape(traj.answer))
        elif live:
            st.caption("Final answer: the run is still going")
        else:
            st.caption(f"No final answer ({traj.outcome})")
        run_info.honesty_label(traj)
    if not turns:
        st.info("This run has no turns yet.")
        return
    last = len(turns) - 1
    index = min(int(st.session_state.get(f"{key}-turn", 0)), last)
    shown_since = st.session_state.setdefault(f"{key}-at", time.monotonic())  # when this turn came on screen
    if playing and index < last and time.monotonic() - shown_since >= pace * 0.9:
        index += 1  # a tick of the player
        st.session_state[f"{key}-at"] = time.monotonic()
    st.session_state[f"{key}-turn"] = index
    bar = st.columns([1, 1, 4], vertical_alignment="center")
    bar[0].button("Previous", icon=":material/chevron_left:", key=f"{key}-prev", disabled=index == 0, width="stretch",
                  on_click=_go, args=(index - 1,))
    bar[1].button("Next", icon=":material/chevron_right:", key=f"{key}-next", disabled=index == last, width="stretch",
                  on_click=_go, args=(index + 1,))
    state = "playing" if playing else "paused"
    bar[2].markdown(f"**Turn {index + 1} of {len(turns)}**" + (f" · {state}, {pace:g} s per turn" if playing else "")
                    + (" · the run is still going" if live else ""))
    turn = turns[index]
    turn_view.picture(source, turn, key, share=1.0)
    turn_view.turn_text(turn, large=True)
    turn_view.zoomed_crop(source, turn)


tick = pace if playing else (1.0 if live else None)
st.fragment(_slide, run_every=tick)(source, playing, float(pace), live)
