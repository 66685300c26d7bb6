"""Evaluate: run the agent over a question set on the active index, then chart the results."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from agent.question_sets import default_set
from pages import common, eval_view, status
from pages.ask_run import POLICY_LABELS

st.title("Evaluate")
active = common.active_index()
if active is None:
    st.info("There is no index yet: open the Ask page once (it builds the sample index) or add documents on the Library page.")
    st.stop()
index_name, index_folder = active
s = common.settings()
run: eval_view.EvalRun | None = st.session_state.get("eval_run")
running = run is not None and run.stepper.running

# --- what to run ---------------------------------------------------------------------------------

st.caption(f"Questions run against the active index **{common.md_escape(index_name)}** (Library page); every question's trajectory is saved.")
page_ids = common.index_page_ids(index_folder)
sets = {qs.name: qs for qs in common.evaluation_sets()}
FROM_PATH, FROM_UPLOAD = "a file on the server…", "an uploaded file…"
if st.session_state.get("eval_set_for") != index_name or st.session_state.get("eval_set") not in [*sets, FROM_PATH, FROM_UPLOAD]:
    best = default_set(list(sets.values()), page_ids)  # a set whose gold pages this index holds
    st.session_state["eval_set"] = best.name if best else FROM_PATH
    st.session_state["eval_set_for"] = index_name


def _label(key: str) -> str:
    if key not in sets:
        return key
    return f"{sets[key].title} ({sets[key].coverage(page_ids).describe()})"


choice = st.selectbox("Question set (reference format: {\"examples\": [...]})", [*sets, FROM_PATH, FROM_UPLOAD], key="eval_set", format_func=_label)
examples, dataset_name = None, None
try:
    if choice == FROM_PATH:
        path_text = st.text_input("Path of the dataset JSON on the server", key="eval_path").strip()
        if path_text:
            dataset_name, examples = Path(path_text).name, eval_view.load_examples(path_text, None)
    elif choice == FROM_UPLOAD:
        upload = st.file_uploader("Dataset JSON", type=["json"], key="eval_upload")
        if upload is not None:
            dataset_name, examples = upload.name, eval_view.load_examples(upload.name, upload.getvalue())
    else:
        dataset_name, examples = sets[choice].title, list(sets[choice].examples)
except common.UserFacingError as e:
    st.error(common.md_escape(str(e)))

left, middle, right = st.columns([3, 2, 2])
policy_name = left.segmented_control("Policy", list(POLICY_LABELS), format_func=POLICY_LABELS.get, default=common.default_policy(), required=True, key="eval_policy")
budget = middle.slider("Turn budget", 3, 10, 10, key="eval_budget")
limit = right.number_input("At most this many questions (0 = all)", 0, 10_000, 0, key="eval_limit")
if examples and limit:
    examples = examples[: int(limit)]
if policy_name == "vllm":
    status.show_check(status.model_server(s.base_url, s.api_key, s.model))
elif policy_name == "offline":
    st.info("Offline policy: no model is reasoning; this measures the rule-based stand-in, not a VLM.", icon=":material/info:")
if examples and s.search_url:
    st.caption("The agent searches a remote search server (Settings page), so whether it holds the gold pages is not checked here.")
elif examples:
    note = eval_view.coverage_note(examples, index_name, page_ids)
    if note:
        (st.warning if note[0] == "warning" else st.info)(note[1], icon=":material/warning:" if note[0] == "warning" else ":material/info:")

go_col, stop_col, _ = st.columns([1, 1, 6])
start = go_col.button("Run", type="primary", disabled=running or not examples, icon=":material/play_arrow:")
if stop_col.button("Stop", disabled=not running, icon=":material/stop:", help="Stops after the current question"):
    run.stepper.stop()
if start and examples:
    try:
        run = eval_view.start_eval(examples, dataset_name, policy_name, budget, index_name, index_folder, s)
        st.session_state["eval_run"] = run
    except common.UserFacingError as e:
        st.error(common.md_escape(str(e)))

if run is None:
    st.stop()

# --- progress, then results ------------------------------------------------------------------------

st.divider()
st.subheader(f"{common.md_escape(run.dataset)} · {POLICY_LABELS[run.policy_name]} · {len(run.examples)} questions")
if run.stepper.running:
    bar = st.progress(0.0)
    live = st.empty()
    while True:
        done = len(run.results)
        bar.progress(done / len(run.examples), text=f"{done} of {len(run.examples)} questions ({run.stepper.seconds:.0f} s)")
        if done:
            live.caption(common.md_escape(f"last: {run.results[-1].question} → {run.results[-1].answer}"))
        if not run.stepper.step():
            break
    st.rerun()

if run.stepper.status == "stopped":
    st.warning(f"Stopped after {len(run.results)} of {len(run.examples)} questions.")
if run.stepper.error:
    st.error(f"The evaluation stopped on an unexpected problem: {common.md_escape(run.stepper.error)}")
eval_view.show_results(run)
