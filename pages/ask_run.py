"""The Ask page's run in progress: the trajectory, the generator producing its turns, where it is saved.

An `AskRun` lives in `st.session_state["ask_run"]`, so each browser session has its own. The
trajectory is saved after every turn (a stopped or crashed run keeps what it did) and once more at
the end with its rewards when the question's gold pages are known.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.trajectory import Trajectory, TrajectoryStore
from pages import common
from pages.stepper import Stepper

POLICY_LABELS = {
    "vllm": "vLLM server",
    "transformers": "transformers",
    "offline": "offline (no model)",
}
POLICY_HELP = (
    "vLLM server: an OpenAI-compatible endpoint serving the VRAG model (Settings page). "
    "transformers: Qwen2.5-VL loaded in this process from a local folder. "
    "offline: no model at all; OCR and keyword rules stand in for one."
)


@dataclass
class AskRun:
    trajectory: Trajectory
    stepper: Stepper
    folder: Path  # where the trajectory is saved
    index_folder: Path | None  # the index searched in process (None when searching a remote server)
    policy_name: str
    max_turns: int

    @property
    def waiting_for(self) -> str:
        return {"vllm": "the model server", "transformers": "the in-process model", "offline": "the offline policy (OCR)"}[self.policy_name]


def start_run(question: str, policy_name: str, max_turns: int, index_name: str, index_folder: Path, settings: common.Settings, gold: dict) -> AskRun:
    """Build the policy and the searcher and return a run ready to step. UserFacingError if either cannot start."""
    import streamlit as st

    from agent.loop import AgentConfig, new_trajectory, run_episode
    from agent.rewards import score_trajectory

    with st.spinner("Loading the search index, its embedder and the policy (slow only the first time)…"):
        searcher = common.searcher(index_folder)
        common.warm_up(searcher)
        policy = common.build_policy(policy_name, settings, index_folder)
    config = AgentConfig(max_turns=max_turns)
    trajectory = new_trajectory(question, policy, config, gold=gold, index=index_name, search=searcher.describe())
    store = TrajectoryStore(common.trajectories_dir())
    folder = store.path(trajectory.id)

    def finish(status: str) -> None:
        if status == "stopped" and trajectory.error is None:
            trajectory.error = f"Stopped by the user after {len(trajectory.turns)} turns"
        elif status == "failed" and trajectory.error is None:
            trajectory.error = f"The run failed: {stepper.error}"
        if trajectory.gold.get("pages") or trajectory.gold.get("answer"):
            trajectory.rewards = score_trajectory(trajectory)
        store.save(trajectory)

    stepper = Stepper(run_episode(trajectory, policy, searcher, config), on_step=lambda _turn: store.save(trajectory), on_end=finish)
    store.save(trajectory)
    return AskRun(trajectory, stepper, folder, None if settings.search_url else index_folder, policy_name, max_turns)
