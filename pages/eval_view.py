"""The Evaluate page's run (kept per session), the question set it runs, and its charts.

The evaluation itself is agent/evaluate.py's generator; it is stepped one question at a time
(pages/stepper.py) so the page can draw progress and survive reruns. Charts are plotly figures of
the per-question results; each row links to its saved trajectory on the Trajectories page.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from pages import common
from pages.stepper import Stepper


@dataclass
class EvalRun:
    examples: list  # agent.evaluate.Example
    dataset: str
    policy_name: str
    stepper: Stepper
    results: list = field(default_factory=list)  # agent.evaluate.ExampleResult, in order


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


def start_eval(examples, dataset: str, policy_name: str, max_turns: int, index_name: str, index_folder: Path, settings: common.Settings) -> EvalRun:
    from agent.evaluate import evaluate
    from agent.loop import AgentConfig
    from agent.trajectory import TrajectoryStore

    with st.spinner("Loading the search index and the policy (slow only the first time)…"):
        searcher = common.searcher(index_folder)
        common.warm_up(searcher)
        policy = common.build_policy(policy_name, settings, index_folder)
    store = TrajectoryStore(common.trajectories_dir())
    results: list = []
    steps = evaluate(examples, policy, searcher, AgentConfig(max_turns=max_turns), store=store)
    return EvalRun(examples, dataset, policy_name, Stepper(steps, on_step=results.append), results)


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


def ndcg_figure(values: list[float], bins: int = 10):
    """How many questions had each NDCG, in bins of 0.1 (1.0 in the last one); each bin labelled with its count."""
    import plotly.graph_objects as go

    counts = histogram_bins(values, bins)
    labels = [f"{i / bins:.1f}–{(i + 1) / bins:.1f}" for i in range(bins)]
    figure = go.Figure(go.Bar(x=labels, y=counts, text=[str(c) if c else "" for c in counts], textposition="outside", cliponaxis=False,
                              hovertemplate="NDCG %{x}: %{y} questions<extra></extra>"))
    figure.update_layout(title="NDCG of the pages shown", xaxis=dict(title="NDCG", type="category"),
                         yaxis=dict(title="questions", range=[0, max(counts) * 1.2 + 0.5], dtick=max(1, round(max(counts) / 5))),
                         height=CHART_HEIGHT, margin=CHART_MARGIN)
    return figure


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


def show_results(run: EvalRun) -> None:
    from agent.evaluate import summarize

    results = run.results
    if not results:
        st.info("No question has finished yet.")
        return
    summary = summarize(results)
    shown = ["accuracy", "recall@1", "recall@5", "mean_ndcg", "mean_reward", "mean_turns", "finish_rate", "p50_seconds"]
    for column, key in zip(st.columns(len(shown)), shown):
        column.metric(key.replace("_", " "), f"{summary[key]:.2f}")

    meta = {e.uid: e.meta_info or {} for e in run.examples}
    keys = _group_keys(run.examples)
    key = st.selectbox("Accuracy by", keys, key="eval_group", width=320) if keys else None
    charts = st.columns(3)
    with charts[0]:
        groups: dict[str, list[float]] = defaultdict(list)
        for r in results:
            groups[str(meta.get(r.uid, {}).get(key, "unspecified")) if key else "all questions"].append(r.correct)
        st.plotly_chart(accuracy_figure(groups), key="eval_chart_accuracy")
    with charts[1]:
        st.plotly_chart(ndcg_figure([r.scores.get("ndcg", 0.0) for r in results]), key="eval_chart_ndcg")
    with charts[2]:
        st.plotly_chart(turns_figure([r.turns for r in results]), key="eval_chart_turns")

    rows = [
        {
            "question": r.question,
            "answer": r.answer,
            "reference": r.reference_answer,
            "correct": bool(r.correct),
            "ndcg": round(r.scores.get("ndcg", 0.0), 3),
            "turns": r.turns,
            "seconds": round(r.seconds, 1),
            "error": r.error or "",
            "trajectory": f"trajectories?id={r.trajectory_id}",
        }
        for r in results
    ]
    selection = st.dataframe(
        rows, hide_index=True, on_select="rerun", selection_mode="single-row", key="eval_table",
        column_config={
            "question": st.column_config.TextColumn(width="large"),
            **{name: st.column_config.TextColumn(width="medium") for name in ("answer", "reference", "error")},
            **{name: st.column_config.Column(width="small") for name in ("correct", "ndcg", "turns", "seconds")},
            "trajectory": st.column_config.LinkColumn("trajectory", display_text=r"trajectories\?id=(.*)", width="medium"),
        },
    )
    picked = selection.selection.rows if selection else []
    if picked:
        chosen = results[picked[0]]
        st.page_link("pages/trajectories.py", label=f"Open the trajectory of: {common.md_escape(chosen.question[:80])}", query_params={"id": chosen.trajectory_id}, icon=":material/timeline:")
    st.download_button("Download the results (JSON)", data=json.dumps({"summary": summary, "results": [r.to_dict() for r in results]}, indent=1, ensure_ascii=False),
                       file_name="vrag-eval.json", mime="application/json", key="eval_download", on_click="ignore")
