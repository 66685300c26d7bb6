"""Ask (the landing page): a question, a policy, a turn budget; each turn drawn as it happens."""
from __future__ import annotations

import streamlit as st

from pages import common, status
from pages.ask_run import POLICY_HELP, POLICY_LABELS, AskRun, start_run
from pages.turn_view import TurnSource, header_row, question_header, render_turn

st.title("Ask")
if not common.ensure_some_index():
    st.stop()
index_name, index_folder = common.active_index()
s = common.settings()
run: AskRun | None = st.session_state.get("ask_run")

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

left, middle, right = st.columns([3, 4, 3])
with left:
    policy_name = st.segmented_control(
        "Policy",
        list(POLICY_LABELS),
        format_func=POLICY_LABELS.get,
        default=common.default_policy(),
        required=True,
        key="ask_policy",
        help=POLICY_HELP,
    )
with middle:
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
with right:
    budget = st.slider("Turn budget (model calls)", 3, 10, 10, key="ask_budget")

running = run is not None and run.stepper.running
ask_col, stop_col, _ = st.columns([1, 1, 6])
ask = ask_col.button("Ask", type="primary", disabled=running or not question.strip(), icon=":material/send:")
if stop_col.button("Stop", disabled=not running, icon=":material/stop:", help="Ends the run after the current model call"):
    run.stepper.stop()
if ask:
    gold = next((e.gold() for e in examples if e.question == question.strip()), {})  # rewards for example questions
    try:
        run = start_run(question.strip(), policy_name, budget, index_name, index_folder, s, gold)
    except common.UserFacingError as e:
        st.error(common.md_escape(str(e)))
        run = None
    st.session_state["ask_run"] = run

# --- the run ------------------------------------------------------------------------------------

if run is None:
    st.stop()
traj = run.trajectory
question_header(traj, f"{traj.policy.get('description', traj.policy.get('name', ''))} · saved as {traj.id}")
progress = st.empty()
header_row()
turns = st.container()
source = TurnSource(traj, folder=run.folder, index_folder=run.index_folder)


def draw_turns(start: int) -> int:
    """Draw the turns recorded since `start`; returns how many are drawn now."""
    with turns:
        for turn in traj.turns[start:]:
            render_turn(turn, source, key=f"{traj.id}-{turn.index}")
    return len(traj.turns)


drawn = draw_turns(0)
if run.stepper.running:
    while True:
        waiting = "stopping after this call" if run.stepper.stop_requested else f"waiting for {run.waiting_for}"
        progress.progress(len(traj.turns) / run.max_turns, text=f"Turn {len(traj.turns) + 1} of at most {run.max_turns}: {waiting} ({run.stepper.seconds:.0f} s)")
        if not run.stepper.step():
            break
        drawn = draw_turns(drawn)
    st.rerun()  # draw the finished state: the answer, the rewards, the Ask button enabled again

# --- the outcome -------------------------------------------------------------------------------

if run.stepper.error:
    st.error(f"The run stopped on an unexpected problem: {common.md_escape(run.stepper.error)}. The turns so far are saved.")
elif traj.error:
    st.error(f"{common.md_escape(traj.error)}. The turns so far are saved as {common.md_escape(traj.id)}.")
if traj.answer is not None:
    with st.container(border=True):
        st.caption("Final answer" if traj.finished else "No answer within the turn budget")
        st.markdown("### " + common.md_escape(traj.answer))
        if traj.gold.get("answer"):
            st.caption(common.md_escape(f"Reference answer: {traj.gold['answer']} (gold pages: {', '.join(traj.gold.get('pages', []))})"))
if traj.rewards:
    cols = st.columns(len(traj.rewards))
    for col, (name, value) in zip(cols, traj.rewards.items()):
        col.metric(name.replace("_", " "), f"{value:.2f}")
st.caption(common.md_escape(f"{len(traj.turns)} turns in {run.stepper.seconds:.1f} s; saved to {run.folder}"))
