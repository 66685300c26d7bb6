"""Ask (the landing page): a question, a policy, a turn budget; each turn drawn as it happens.

The run steps in a background worker (pages/ask_run.py over agent/runs.py), so this page's script
run ends at once: a small fragment polls the run twice a second (its progress line and Stop), and
reruns the page when a turn arrives or the run ends. Ask is disabled while a run is in flight.
"""
from __future__ import annotations

import streamlit as st

from pages import ask_run, common, status
from pages.ask_run import POLICY_HELP, POLICY_LABELS, AskRun
from pages.ui import run_info, turn_view
from pages.ui.pictures import TurnSource

POLL_SECONDS = 0.5

st.title("Ask")
if not common.ensure_some_index():
    st.stop()
index_name, index_folder = common.active_index()
s = common.settings()
run: AskRun | None = st.session_state.get("ask_run")
running = run is not None and run.running

# --- the question --------------------------------------------------------------------------------

examples = common.example_questions(index_folder)


def _use_example() -> None:  # copy the chosen example into the question box (before it is drawn)
    if st.session_state.get("ask_example"):
        st.session_state["ask_question"] = st.session_state["ask_example"]


where = f"the remote search server {s.search_url}" if s.search_url else f"the index **{common.md_escape(index_name)}**"
st.caption(f"Searching {where}. Change it on the Library or Settings page.")
if examples:
    st.pills("Example questions for this corpus", [e.question for e in examples], key="ask_example", on_change=_use_example)
question = st.text_area("Question", key="ask_question", height=80, placeholder="Ask something the documents answer")

policy_col, budget_col = st.columns([3, 1], vertical_alignment="bottom")
with policy_col:
    policy_name = st.segmented_control(
        "Policy", list(POLICY_LABELS), format_func=POLICY_LABELS.get, default=common.default_policy(), required=True,
        key="ask_policy", help=POLICY_HELP, width="content",
    )
with budget_col:
    budget = st.slider("Turn budget (model calls)", 3, 10, 10, key="ask_budget")
if policy_name == "vllm":
    status.show_check(status.model_server(s.base_url, s.api_key))
elif policy_name == "transformers":
    status.show_check(status.transformers_model(s.transformers_model))
else:
    st.info(
        "**Offline policy: no model is reasoning.** A rule-based stand-in searches, picks the region whose "
        "OCR text best matches the question, crops it and answers with the best-supported span.",
        icon=":material/info:",
    )

# Ask starts the run before the Ask and Stop buttons are drawn (the click is already in the session
# state), so this one script run draws Ask disabled and Stop enabled, and nothing of the previous run.
if st.session_state.get("ask_go") and not running and question.strip():
    gold = next((e.gold() for e in examples if e.question == question.strip()), {})  # rewards for example questions
    run = st.session_state["ask_run"] = ask_run.prepare(question.strip(), policy_name, budget, index_name, index_folder, s, gold)
    running = True
ask_col, live_col = st.columns([1, 7], vertical_alignment="center")
ask_col.button("Ask", type="primary", disabled=running or not question.strip(), icon=":material/send:", key="ask_go", width="stretch")


def _signature(ask: AskRun) -> tuple:
    """What the page last drew of the run: a change means the page must be drawn again."""
    return len(ask.trajectory.turns) if ask.trajectory is not None else -1, ask.worker.status


def _live(ask: AskRun, drawn: tuple) -> None:
    """Polled every POLL_SECONDS while the run is in flight: Stop, and the progress line."""
    try:
        if _signature(ask) != drawn:
            st.rerun()  # a new turn, or the end: redraw the page from the record
        stop_col, text_col = st.columns([1, 6], vertical_alignment="center")
        if stop_col.button("Stop", icon=":material/stop:", key="ask_stop", disabled=ask.worker.stop_requested, width="stretch",
                           help="Ends the run after the model call in flight (it cannot be interrupted)"):
            ask.worker.stop()
        done = len(ask.trajectory.turns) if ask.trajectory is not None else 0
        doing = ask.run.phase
        if ask.worker.stop_requested:
            doing = f"stopping after the model call in flight ({doing})"
        text_col.progress(done / ask.run.config.max_turns,
                          text=common.md_escape(f"{done} of at most {ask.run.config.max_turns} turns · {doing} · {ask.worker.seconds:.0f} s"))
    except Exception as e:  # a fragment rerun bypasses app.py's guard
        common.report_unexpected(e)


with live_col:
    if running:
        st.fragment(_live, run_every=POLL_SECONDS)(run, _signature(run))
    else:
        st.button("Stop", icon=":material/stop:", key="ask_stop_idle", disabled=True, help="Stops a run in flight")
if run is not None:
    run.worker.start()  # once, now that Stop is on the page (pages/ask_run.py)

# --- the run ------------------------------------------------------------------------------------

if run is None:
    st.stop()
st.divider()
traj = run.trajectory
caption = f"{traj.policy.get('description', traj.policy.get('name', ''))} · saved as {traj.id}" if traj is not None else run.run.phase
run_info.question_header(run.question, caption, traj)
problem = run.problem()
if problem:
    st.error(common.md_escape(problem))
if traj is None:
    st.stop()
run_info.outcome(traj, running=running, hint=traj.error_hints.get("app"))
turn_view.style()
source = TurnSource(traj, folder=run.run.folder, index_folder=run.index_folder)
live = turn_view.Live(running=running, waiting=run.run.phase)
turn_view.show(source, key=f"ask-{traj.id}", live=live)  # relevance maps when switched on: they take seconds per new page
if not running:
    st.caption(common.md_escape(f"{len(traj.turns)} turns in {run.worker.seconds:.1f} s; saved to {run.run.folder}"))
