"""The Evaluate page's run (kept per browser session), the question set it runs, its charts and the comparison view.

The evaluation is agent/eval_session.py's `EvalSession`, the same wiring as `python -m agent eval`,
stepped by agent/runs.py's `Worker` in a background thread: the page's script run ends at once, a
fragment polls the session's progress (the same callback that drives the CLI's bar), and Stop ends
the run with the episodes in flight finishing their current model call. Each run lives in a folder
under <data>/evals/<run name>/, so starting the same run name again continues it. Charts are plotly
figures of the per-question results read back from that folder.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from agent import eval_session, eval_table, runs
from agent.eval_resume import MANIFEST, EvalRunError
from agent.eval_session import EvalRequest, EvalSession
from agent.policies import PolicyError
from agent.search import SearchError
from agent.trajectory import TrajectoryStore
from pages import common

EXPECTED = (PolicyError, SearchError, runs.RunSetupError, EvalRunError, common.UserFacingError)  # problems a person can fix
TABLE_COLUMNS = ("question", "answer_text", "reference_answer", "outcome", "correct", "ndcg", "grounding_iou", "turns", "seconds", "error", "trajectory_id")


@dataclass
class EvalPageRun:
    session: EvalSession
    worker: runs.Worker
    dataset: str
    policy_name: str
    name: str  # the run's name: its folder under <data>/evals
    _results: list | None = field(default=None, repr=False)

    @property
    def examples(self) -> list:
        return self.session.request.examples

    @property
    def running(self) -> bool:
        return self.worker.running

    @property
    def stop_requested(self) -> bool:
        return self.session.stop_requested or self.worker.stop_requested

    @property
    def stopped(self) -> bool:
        return not self.running and (self.worker.status == "stopped" or self.session.stop_requested)

    def stop(self) -> None:
        """Stop at once: no new question starts; the episodes in flight finish their current model call."""
        self.session.stop()
        self.worker.stop()

    def results(self) -> list:
        """The results on disk (read once, after the run ended)."""
        if self._results is None:
            self._results = self.session.saved_results() if self.session.run is not None else []
        return self._results

    def problem(self) -> str | None:
        e = self.worker.exception
        if e is None:
            return None
        if isinstance(e, EvalRunError):
            return f"{e}. On this page: choose another run name, or turn off Resume to run every question again with these settings."
        if isinstance(e, EXPECTED):
            hint = getattr(e, "app_hint", None)
            return f"{e} {hint}" if hint else str(e)
        return f"The evaluation stopped on an unexpected problem ({e.__class__.__name__}: {e}). What was done is saved; the details are in the server log."


def load_examples(name: str, data: bytes | None):
    """Parse a dataset from an upload (`data`) or a server path (`name`); UserFacingError if it cannot be read."""
    from agent.evaluate import DatasetError, load_dataset, parse_examples

    try:
        if data is not None:
            try:
                parsed = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise DatasetError(f"{name} is not a readable JSON dataset: {e}") from e
            examples = parse_examples(parsed, name)
        else:
            examples = load_dataset(Path(name).expanduser())
    except DatasetError as e:
        raise common.UserFacingError(str(e)) from e
    if not examples:
        raise common.UserFacingError(f"{name} holds no examples")
    return examples


def coverage_note(examples, index_name: str, page_ids: list[str]) -> tuple[str, str] | None:
    """("warning" | "info", text) about how much of `examples` the index can answer, said before a run."""
    from agent.question_sets import QuestionSet

    coverage = QuestionSet("chosen", "chosen", tuple(examples)).coverage(page_ids)
    index = common.md_escape(index_name)
    if not coverage.gold_pages:
        return "info", "These questions name no gold pages, so retrieval scores (recall, NDCG) will be 0; answers are still scored."
    if not coverage.missing_pages:
        return None
    missing = coverage.missing_pages
    shown = ", ".join(common.md_escape(p) for p in missing[:5]) + (", …" if len(missing) > 5 else "")
    unanswerable = coverage.questions - coverage.answerable
    return "warning", (
        f"**{len(missing)} of the {coverage.gold_pages} gold pages of these questions are not in the index {index}** ({shown}), "
        f"so {unanswerable} of the {coverage.questions} questions cannot be answered from it and will score 0. "
        "Choose a question set about this index's documents, or add the missing documents on the Library page."
    )


def _transformers(folder: str, **options):
    return common.transformers_policy(folder)  # loaded once per folder and shared (weights, no user state)


def prepare(examples, dataset: str, policy_name: str, max_turns: int, concurrency: int, name: str, resume: bool,
            index_folder: Path, settings: common.Settings) -> EvalPageRun:
    """An evaluation and its background worker, not started yet (the page starts it once Stop is drawn).
    The worker loads the index and the policies itself, so Stop works while they load."""
    request = EvalRequest(list(examples), out=eval_session.eval_runs_dir() / name, dataset=dataset, policy=policy_name,
                          max_turns=max_turns, protocol=settings.protocol, concurrency=concurrency, resume=resume)
    session = EvalSession(request, settings, open_index=lambda: common.open_index(index_folder), transformers=_transformers)
    worker = runs.Worker(session.results(), expected=EXPECTED, name=f"eval:{name}")
    return EvalPageRun(session, worker, dataset, policy_name, name)


def progress_text(run: EvalPageRun) -> tuple[float, str]:
    """The progress bar's value and its line: questions done, skipped, rate, time to go, and what it does now."""
    p = run.session.progress
    doing = run.session.phase
    if run.stop_requested and run.running:
        doing = "stopping: the questions in flight finish their current model call"
    if p is None:
        return 0.0, f"{doing} · {run.worker.seconds:.0f} s"
    parts = [f"{p.done} of {p.total} questions"]
    if p.skipped:
        parts.append(f"{p.skipped} done before (resumed)")
    if p.errors:
        parts.append(f"{p.errors} errors")
    if p.rate:
        parts.append(f"{p.rate * 60:.1f} per minute")
    if p.eta is not None:
        parts.append(f"about {p.eta:.0f} s to go")
    parts += [doing, f"{run.worker.seconds:.0f} s"]
    return (p.done / p.total if p.total else 1.0), " · ".join(parts)


def _group_keys(examples) -> list[str]:
    """meta_info keys with short text values: candidates for 'accuracy by question type'."""
    keys = set()
    for example in examples:
        for key, value in (example.meta_info or {}).items():
            if isinstance(value, str) and len(value) <= 40 and key not in ("file_name",):
                keys.add(key)
    preferred = [k for k in ("query_type", "question_type", "type", "source_type") if k in keys]
    return preferred + sorted(keys - set(preferred))


CHART_HEIGHT = 340
CHART_MARGIN = dict(l=10, r=10, t=40, b=10)


def histogram_bins(values: list[float], bins: int = 10, lo: float = 0.0, hi: float = 1.0) -> list[int]:
    """Counts of `values` in `bins` equal bins over [lo, hi], the last bin closed (1.0 counts in it)."""
    counts = [0] * bins
    width = (hi - lo) / bins
    for value in values:
        i = int((min(max(value, lo), hi) - lo) / width)
        counts[min(i, bins - 1)] += 1
    return counts


def accuracy_figure(groups: dict[str, list[float]]):
    """Accuracy per question type; every bar is labelled 'right/asked', so a type with none right still shows."""
    import plotly.graph_objects as go

    names = sorted(groups)
    figure = go.Figure(go.Bar(
        x=names, y=[sum(groups[n]) / len(groups[n]) for n in names],
        text=[f"{sum(groups[n]):.0f}/{len(groups[n])}" for n in names], textposition="outside", cliponaxis=False,
        hovertemplate="%{x}: accuracy %{y:.2f}<extra></extra>",
    ))
    figure.update_layout(title="Accuracy by question type", yaxis=dict(range=[0, 1.15], title="accuracy", tickvals=[0, 0.25, 0.5, 0.75, 1]),
                         height=CHART_HEIGHT, margin=CHART_MARGIN)
    return figure


def histogram_figure(values: list[float], title: str, metric: str, bins: int = 10):
    """How many questions had each value of `metric` in [0, 1], in bins of 0.1 (1.0 in the last one);
    each bin labelled with its count, so all-equal values are one labelled bar, not an empty chart."""
    import plotly.graph_objects as go

    counts = histogram_bins(values, bins)
    labels = [f"{i / bins:.1f}–{(i + 1) / bins:.1f}" for i in range(bins)]
    figure = go.Figure(go.Bar(x=labels, y=counts, text=[str(c) if c else "" for c in counts], textposition="outside", cliponaxis=False,
                              hovertemplate=f"{metric} %{{x}}: %{{y}} questions<extra></extra>"))
    figure.update_layout(title=title, xaxis=dict(title=metric, type="category"),
                         yaxis=dict(title="questions", range=[0, max(counts) * 1.2 + 0.5], dtick=max(1, round(max(counts) / 5))),
                         height=CHART_HEIGHT, margin=CHART_MARGIN)
    return figure


def ndcg_figure(values: list[float], bins: int = 10):
    return histogram_figure(values, "NDCG of the pages shown", "NDCG", bins)


def iou_figure(values: list[float], bins: int = 10):
    return histogram_figure(values, "Grounding: best IoU of the crops with the gold box", "IoU", bins)


def turns_figure(turns: list[int]):
    """How many questions took each number of turns (model calls)."""
    import plotly.graph_objects as go

    counts: dict[int, int] = defaultdict(int)
    for n in turns:
        counts[n] += 1
    keys = sorted(counts)
    figure = go.Figure(go.Bar(x=keys, y=[counts[k] for k in keys], text=[str(counts[k]) for k in keys], textposition="outside", cliponaxis=False,
                              hovertemplate="%{x} turns: %{y} questions<extra></extra>"))
    top = max(counts.values(), default=0)
    figure.update_layout(title="Turns per question", xaxis=dict(title="turns", dtick=1),
                         yaxis=dict(title="questions", range=[0, top * 1.2 + 0.5], dtick=max(1, round(top / 5))),
                         height=CHART_HEIGHT, margin=CHART_MARGIN)
    return figure


SHOWN_METRICS = ("accuracy", "recall@1", "recall@5", "mean_ndcg", "grounding_iou", "mean_reward", "mean_turns", "finish_rate", "p50_seconds")


def show_summary(summary: dict) -> None:
    """The summary's main metrics; grounding IoU over the questions with gold boxes (or why there is none)."""
    for column, key in zip(st.columns(len(SHOWN_METRICS)), SHOWN_METRICS):
        if key == "grounding_iou":
            boxed = summary.get("grounding_questions", 0)
            column.metric("grounding IoU", f"{summary[key]:.2f}" if boxed else "–",
                          help=f"Mean best IoU of the crops with the gold evidence box, over the {boxed} questions with gold boxes"
                          if boxed else "No question of this set has gold evidence boxes")
        else:
            column.metric(key.replace("_", " "), f"{summary[key]:.2f}")


def show_results(run: EvalPageRun) -> None:
    results = run.results()
    if not results:
        st.info("No question has finished yet.")
        return
    summary = run.session.summary or {}
    if summary:
        show_summary(summary)
    meta = {e.uid: e.meta_info or {} for e in run.examples}
    keys = _group_keys(run.examples)
    key = st.selectbox("Accuracy by", keys, key="eval_group", width=320) if keys else None
    boxed = [r.grounding["grounding_iou"] for r in results if "grounding_iou" in r.grounding]
    charts = st.columns(4 if boxed else 3)
    with charts[0]:
        groups: dict[str, list[float]] = defaultdict(list)
        for r in results:
            groups[str(meta.get(r.uid, {}).get(key, "unspecified")) if key else "all questions"].append(r.correct)
        st.plotly_chart(accuracy_figure(groups), key="eval_chart_accuracy")
    with charts[1]:
        st.plotly_chart(ndcg_figure([r.scores.get("ndcg", 0.0) for r in results]), key="eval_chart_ndcg")
    with charts[2]:
        st.plotly_chart(turns_figure([r.turns for r in results]), key="eval_chart_turns")
    if boxed:
        with charts[3]:
            st.plotly_chart(iou_figure(boxed), key="eval_chart_iou")

    rows = [{**row, "error": row["error"] or ""} for row in eval_table.rows(results)]  # no "None" for a question without an error
    columns = [c for c in TABLE_COLUMNS if c != "grounding_iou" or boxed]  # IoU only where the set gives gold boxes
    st.dataframe(
        rows, hide_index=True, key="eval_table", column_order=columns,
        column_config={
            "question": st.column_config.TextColumn(width="large"),
            "answer_text": st.column_config.TextColumn("answer", width="medium"),
            "reference_answer": st.column_config.TextColumn("reference", width="medium"),
            "error": st.column_config.TextColumn(width="medium"),
            "grounding_iou": st.column_config.NumberColumn("IoU", format="%.2f", width="small"),
            "ndcg": st.column_config.NumberColumn(format="%.2f", width="small"),
            **{name: st.column_config.Column(width="small") for name in ("outcome", "correct", "turns", "seconds")},
            "trajectory_id": st.column_config.TextColumn("trajectory", width="medium"),
        },
    )
    pick_col, open_col = st.columns([5, 2], vertical_alignment="bottom")
    picked = pick_col.selectbox("A question's trajectory", range(len(results)), key="eval_pick",
                                format_func=lambda i: f"{results[i].uid}: {results[i].question[:100]}")
    if open_col.button("Open in Trajectories", icon=":material/timeline:", key="eval_open", width="stretch"):
        try:  # the Trajectories page lists its own store: the run's trajectory is copied there (a newer copy replaces it)
            tid = eval_session.copy_to_store(run.session.run.folder, results[picked].trajectory_id, TrajectoryStore(common.trajectories_dir()))
        except ValueError as e:
            st.error(common.md_escape(str(e)))
        else:
            st.switch_page("pages/trajectories.py", query_params={"id": tid})
    tables = run.session.tables
    if tables:
        csv_col, json_col, _ = st.columns([1, 1, 3])
        csv_col.download_button("Download results.csv", data=tables[0].read_bytes(), file_name=f"{run.name}-results.csv", mime="text/csv",
                                key="eval_download_csv", on_click="ignore")
        json_col.download_button("Download results.json", data=tables[1].read_bytes(), file_name=f"{run.name}-results.json", mime="application/json",
                                 key="eval_download", on_click="ignore")
        st.caption(common.md_escape(f"Saved in {run.session.run.folder} (results.csv, results.json, summary.json and one trajectory folder per question)."))


@st.cache_data(show_spinner="Reading both runs…", max_entries=8)
def _comparison(folder_a: str, folder_b: str, stamp: tuple):
    return eval_session.compare_saved(Path(folder_a), Path(folder_b))


def _stamp(folder: Path) -> tuple:
    """Changes when a run is opened again (its manifest) or finishes (its summary)."""
    return tuple(p.stat().st_mtime_ns if p.is_file() else 0 for p in (folder / MANIFEST, folder / "summary.json"))


def comparison(folder_a: Path, folder_b: Path):
    """Two saved runs compared, read once per change of either run (it loads every trajectory of both)."""
    return _comparison(str(folder_a), str(folder_b), (_stamp(folder_a), _stamp(folder_b)))


DELTA_METRICS = ("accuracy", "mean_ndcg", "mean_reward", "grounding_iou", "grounding_cover", "recall@1", "mean_turns", "invalid_action_rate", "errors")


def show_comparison(comparison) -> None:
    """Which questions flipped between two saved runs, and the metric deltas (B − A)."""
    c = comparison
    st.caption(common.md_escape(f"A = {c.a}, B = {c.b}: {c.questions} questions in both runs"
                                + (f"; {len(c.only_a)} only in A" if c.only_a else "") + (f"; {len(c.only_b)} only in B" if c.only_b else "")
                                + (f"; {len(c.different_text)} with the same uid but another question (not compared)" if c.different_text else "")))
    deltas = [{"metric": k, "A": round(c.summary_a[k], 3), "B": round(c.summary_b[k], 3), "B − A": round(c.deltas[k], 3)}
              for k in DELTA_METRICS if k in c.deltas]
    st.dataframe(deltas, hide_index=True, key="eval_compare_deltas", width="content")
    questions = {q["uid"]: q for q in c.per_question}
    fixed_col, broken_col = st.columns(2)
    for column, title, uids in ((fixed_col, "Fixed by B (wrong in A, right in B)", c.fixed), (broken_col, "Broken by B (right in A, wrong in B)", c.broken)):
        column.markdown(f"**{title}: {len(uids)}**")
        for uid in uids:
            q = questions[uid]
            column.caption(common.md_escape(f"{uid}: {q['question'][:90]} — A: {q['answer_a']} · B: {q['answer_b']}"))
    st.dataframe([{k: q[k] for k in ("uid", "question", "change", "answer_a", "answer_b", "correct_a", "correct_b", "grounding_iou_a", "grounding_iou_b")}
                  for q in c.per_question], hide_index=True, key="eval_compare_table")
