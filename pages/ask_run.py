"""The Ask page's run: agent/runs.py's wiring, stepped by a background worker, kept per browser session.

An `AskRun` lives in `st.session_state["ask_run"]`, so each browser session has its own. The
worker thread builds the searcher and the policy (so Stop is clickable while the index and the
model load), runs the episode and saves the trajectory after every turn; the page only reads the
trajectory record and polls the worker. Nothing here calls Streamlit from the worker thread.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent import runs
from agent.policies import PolicyError
from agent.search import SearchError
from agent.trajectory import Trajectory, TrajectoryStore
from pages import common

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
EXPECTED = (PolicyError, SearchError, runs.RunSetupError, common.UserFacingError)  # problems a person can fix


@dataclass
class AskRun:
    run: runs.Run
    worker: runs.Worker
    index_folder: Path | None  # the index searched in process (None when searching a remote server)

    @property
    def trajectory(self) -> Trajectory | None:
        return self.run.trajectory

    @property
    def question(self) -> str:
        return self.run.request.question

    @property
    def running(self) -> bool:
        return self.worker.running

    def problem(self) -> str | None:
        """Why the run could not go on, in words for the person at the page (None if it did not fail)."""
        e = self.worker.exception
        if e is None:
            return None
        if isinstance(e, EXPECTED):
            hint = getattr(e, "app_hint", None)
            return f"{e} {hint}" if hint else str(e)
        return f"The run stopped on an unexpected problem ({e.__class__.__name__}: {e}). The turns so far are saved; the details are in the server log."


def _transformers(folder: str, **options):
    return common.transformers_policy(folder)  # loaded once per folder and shared (weights, no user state)


def prepare(question: str, policy_name: str, max_turns: int, index_name: str, index_folder: Path, settings: common.Settings, gold: dict) -> AskRun:
    """A run and its background worker, not started yet: the page starts it (`worker.start()`) once it has
    drawn the run's Stop button, so the worker's first heavy steps (loading the index and the policy,
    the first model call) do not hold up drawing it. The worker loads the index and the policy itself."""
    request = runs.RunRequest(question, policy=policy_name, max_turns=max_turns, gold=gold, index_name=index_name)
    run = runs.Run(request, settings, TrajectoryStore(common.trajectories_dir()),
                   open_index=lambda: common.open_index(index_folder), transformers=_transformers)
    worker = runs.Worker(run.turns(), expected=EXPECTED, name=f"ask:{question[:30]}")
    return AskRun(run, worker, None if settings.search_url.strip() else index_folder)
