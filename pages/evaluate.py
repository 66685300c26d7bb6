"""Evaluate: run the agent over a question set on the active index, chart the results, compare two runs.

The evaluation is agent/eval_session.py, the same code as `python -m agent eval`, stepped in a
background worker (pages/eval_view.py): Start is disabled while it runs, Stop is enabled at once,
and a small fragment polls its progress. Each run is a folder under <data>/evals/<run name>;
starting the same run name again continues it (the questions already done are skipped).
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from agent import eval_session
from agent.question_sets import default_set
from pages import common, eval_view, status
from pages.ask_run import POLICY_LABELS

POLL_SECONDS = 0.5
LINES_SHOWN = 8

st.title("Evaluate")
active = common.active_index()
if active is None:
    st.info("There is no index yet: open the Ask page once (it builds the sample index) or add documents on the Library page.")
    st.stop()
index_name, index_folder = active
s = common.settings()
run: eval_view.EvalPageRun | None = st.session_state.get("eval_run")
running = run is not None and run.running

# --- what to run ---------------------------------------------------------------------------------

st.caption(f"Questions run against the active index **{common.md_escape(index_name)}** (Library page); each run is saved in its own folder, "
           "one trajectory per question, and can be continued.")
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


# --- the run: its name (its folder), concurrency, resume; Start and Stop ------------------------------

run_stem = choice if choice in sets else (dataset_name or "questions")
suggested = eval_session.suggested_run_name(run_stem, policy_name)
if st.session_state.get("eval_name_for") != suggested:  # a new set or policy suggests a new name (an edit is kept otherwise)
    st.session_state["eval_name"] = suggested
    st.session_state["eval_name_for"] = suggested
name_col, concurrency_col, resume_col = st.columns([3, 2, 2], vertical_alignment="bottom")
run_name = name_col.text_input("Run name (its folder under the data folder)", key="eval_name").strip()
concurrency = concurrency_col.number_input("Questions in flight at once", 1, 64, 1, key="eval_concurrency",
                                           help="A vLLM server batches the requests it gets at once; the offline and in-process policies answer one call at a time")
resume = resume_col.toggle("Resume (skip questions already done)", value=True, key="eval_resume")
name_problem = eval_session.check_run_name(run_name)
if name_problem:
    st.error(common.md_escape(name_problem))
elif run_name in eval_session.saved_runs():
    st.caption(common.md_escape(f"A run named {run_name} exists: Start " + (
        "continues it (the questions already done are skipped)." if resume else "runs every question again in it.")))

# Start prepares the run before the buttons are drawn (the click is already in the session state), so this
# script run draws Start disabled and Stop enabled.
if st.session_state.get("eval_go") and not running and examples and not name_problem:
    run = st.session_state["eval_run"] = eval_view.prepare(examples, dataset_name, policy_name, budget, int(concurrency), run_name,
                                                           resume, index_folder, s)
    running = True
go_col, live_col = st.columns([1, 7], vertical_alignment="top")
go_col.button("Start", type="primary", disabled=running or not examples or bool(name_problem), icon=":material/play_arrow:",
              key="eval_go", width="stretch")


def _live(ev: eval_view.EvalPageRun, drawn: str) -> None:
    """Polled every POLL_SECONDS while the run is in flight: Stop, the progress bar and the last questions."""
    try:
        if ev.worker.status != drawn:
            st.rerun()  # the run ended: draw the page again, with its results
        stop_col, bar_col = st.columns([1, 6], vertical_alignment="center")
        if stop_col.button("Stop", icon=":material/stop:", key="eval_stop", disabled=ev.stop_requested, width="stretch",
                           help="No new question starts; the questions in flight finish their current model call (it cannot be interrupted)"):
            ev.stop()
        value, text = eval_view.progress_text(ev)
        bar_col.progress(value, text=common.md_escape(text))
        if ev.session.lines:
            st.code("\n".join(ev.session.lines[-LINES_SHOWN:]), language=None, wrap_lines=True)
    except Exception as e:  # a fragment rerun bypasses app.py's guard
        common.report_unexpected(e)


with live_col:
    if running:
        st.fragment(_live, run_every=POLL_SECONDS)(run, run.worker.status)
    else:
        st.button("Stop", icon=":material/stop:", key="eval_stop_idle", disabled=True, help="Stops an evaluation in flight")
if run is not None:
    run.worker.start()  # once, now that Stop is on the page

# --- the results ---------------------------------------------------------------------------------------


def _compare_view() -> None:
    saved = eval_session.saved_runs()
    st.subheader("Compare two saved runs")
    if len(saved) < 2:
        st.caption("Two saved runs of the same questions (two policies, models or protocols) can be compared here; there are fewer than two yet.")
        return
    names = list(saved)
    a_col, b_col = st.columns(2)
    a = a_col.selectbox("Run A", names, index=1, key="eval_compare_a")
    b = b_col.selectbox("Run B", names, index=0, key="eval_compare_b")
    if a == b:
        st.caption("Choose two different runs.")
        return
    try:
        eval_view.show_comparison(eval_view.comparison(saved[a], saved[b]))
    except ValueError as e:  # EvalRunError: a folder that holds no readable run
        st.error(common.md_escape(str(e)))


if run is not None and not running:
    st.divider()
    st.subheader(f"{common.md_escape(run.name)} · {common.md_escape(run.dataset)} · {POLICY_LABELS[run.policy_name]} · {len(run.examples)} questions")
    problem = run.problem()
    if problem:
        st.error(common.md_escape(problem))
    elif run.stopped:
        done = sum(r.outcome != "stopped" for r in run.results())
        st.warning(f"Stopped by you after {done} of {len(run.examples)} questions. Start the run **{common.md_escape(run.name)}** again to continue it "
                   "(the questions stopped in flight run again).", icon=":material/stop_circle:")
    if run.session.run is not None:
        eval_view.show_results(run)
st.divider()
_compare_view()
