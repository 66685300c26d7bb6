"""The Evaluate page's run (kept per session) and its charts.

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


def question_sets() -> dict[str, Path]:
    """The question sets shipped in bench/questions/, by file name."""
    root = common.QUESTION_SETS
    return {p.name: p for p in sorted(root.glob("*.json"))} if root.is_dir() else {}


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


def show_results(run: EvalRun) -> None:
    import plotly.graph_objects as go

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
    charts = st.columns(3)
    with charts[0]:
        key = st.selectbox("Accuracy by", keys, key="eval_group") if keys else None
        groups: dict[str, list[float]] = defaultdict(list)
        for r in results:
            groups[str(meta.get(r.uid, {}).get(key, "unspecified")) if key else "all questions"].append(r.correct)
        names = sorted(groups)
        figure = go.Figure(go.Bar(
            x=names, y=[sum(groups[n]) / len(groups[n]) for n in names],
            text=[f"{sum(groups[n]):.0f}/{len(groups[n])}" for n in names], textposition="auto",
            hovertemplate="%{x}: accuracy %{y:.2f}<extra></extra>",
        ))
        figure.update_layout(title="Accuracy by question type", yaxis=dict(range=[0, 1], title="accuracy"), height=340, margin=dict(l=10, r=10, t=40, b=10))
        st.plotly_chart(figure, key="eval_chart_accuracy")
    with charts[1]:
        figure = go.Figure(go.Histogram(x=[r.scores.get("ndcg", 0.0) for r in results], xbins=dict(start=0, end=1.0001, size=0.1)))
        figure.update_layout(title="NDCG of the pages shown", xaxis=dict(range=[0, 1], title="NDCG"), yaxis_title="questions", height=340, margin=dict(l=10, r=10, t=40, b=10))
        st.plotly_chart(figure, key="eval_chart_ndcg")
    with charts[2]:
        counts: dict[int, int] = defaultdict(int)
        for r in results:
            counts[r.turns] += 1
        figure = go.Figure(go.Bar(x=sorted(counts), y=[counts[k] for k in sorted(counts)], hovertemplate="%{x} turns: %{y} questions<extra></extra>"))
        figure.update_layout(title="Turns per question", xaxis=dict(title="turns", dtick=1), yaxis_title="questions", height=340, margin=dict(l=10, r=10, t=40, b=10))
        st.plotly_chart(figure, key="eval_chart_turns")

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
        column_config={"trajectory": st.column_config.LinkColumn("trajectory", display_text=r"trajectories\?id=(.*)")},
    )
    picked = selection.selection.rows if selection else []
    if picked:
        chosen = results[picked[0]]
        st.page_link("pages/trajectories.py", label=f"Open the trajectory of: {common.md_escape(chosen.question[:80])}", query_params={"id": chosen.trajectory_id}, icon=":material/timeline:")
    st.download_button("Download the results (JSON)", data=json.dumps({"summary": summary, "results": [r.to_dict() for r in results]}, indent=1, ensure_ascii=False),
                       file_name="vrag-eval.json", mime="application/json", key="eval_download", on_click="ignore")
