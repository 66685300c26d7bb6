"""The one wiring of an evaluation, shared by the Evaluate page and `python -m agent eval`. No Streamlit here.

An evaluation is: a searcher and one policy per model server built from the user's
`workspace.Settings` (agent/runs.py's builders, as a single Ask run builds them), a `ReplicaPool`
over those policies, a resumable run folder (`EvalRun`), and `run_eval` keeping `concurrency`
episodes in flight; the per-question table and the summary are written from what is on disk.

    session = EvalSession(EvalRequest(examples, out=folder, policy="offline"), settings, open_index=lambda: index)
    for result in session.results():      # the CLI, in the foreground (Ctrl-C ends it)
        ...
    worker = Worker(session.results())    # the app: a background thread (agent/runs.py)
    session.stop(); worker.stop()         # Stop: episodes in flight end after their current model call

Progress: `session.progress` is the latest `EvalProgress` and `session.lines` one line per finished
question; both are updated by the same callback that also calls the caller's `progress` (the CLI's
tqdm bar), on the thread that steps `results()`.

Stop: `stop()` sets run_eval's stop event, so a generator blocked waiting for a question to finish
is told at once; each episode in flight ends after its current turn (a model call cannot be
interrupted), is recorded as stopped and runs again when the run is resumed. Whatever ends the run
(done, stopped, closed, Ctrl-C, a failure), results.csv, results.json and summary.json are then
written from the trajectories on disk (`finish`).
"""
from __future__ import annotations

import dataclasses
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from agent import workspace
from agent.eval_compare import Comparison, compare_runs
from agent.eval_concurrency import EvalProgress, run_eval
from agent.eval_replicas import ReplicaPool
from agent.eval_resume import MANIFEST, EvalRun
from agent.eval_table import write_tables
from agent.evaluate import Example, ExampleResult, summarize
from agent.loop import AgentConfig
from agent.policies import Policy
from agent.protocol import DEFAULT_PROFILE
from agent.rewards import LLMJudge
from agent.runs import load_transformers, make_run_policy, make_searcher, warm_up
from agent.search import Searcher
from agent.trajectory import TrajectoryStore
from agent.workspace import Settings

if TYPE_CHECKING:
    from search_engine.index import DocumentIndex

log = logging.getLogger(__name__)

RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a run name becomes a folder name
LINES_KEPT = 200  # per-question lines kept for a progress view (the table has every question)


def eval_runs_dir() -> Path:
    """<data>/evals: one folder per named evaluation run (the Evaluate page's runs)."""
    return workspace.data_root() / "evals"


def check_run_name(name: str) -> str | None:
    """Why `name` cannot name a run folder (None if it can)."""
    if not RUN_NAME_RE.match(name or ""):
        return "A run name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit."
    return None


def suggested_run_name(dataset: str, policy: str) -> str:
    """A run name from the question set and the policy, e.g. "vrag_demo_dev-offline"."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(dataset).stem).strip("._-")[:40] or "questions"
    return f"{stem}-{policy}"


def saved_runs(root: Path | None = None) -> dict[str, Path]:
    """Every run folder under `root` (default eval_runs_dir()) by name, newest first."""
    root = eval_runs_dir() if root is None else Path(root)
    if not root.is_dir():
        return {}
    found = [p for p in root.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file()]
    found.sort(key=lambda p: (p / MANIFEST).stat().st_mtime, reverse=True)
    return {p.name: p for p in found}


def compare_saved(folder_a: Path, folder_b: Path) -> Comparison:
    """Two saved runs compared (agent/eval_compare.py), labelled by their folder names."""
    comparison = compare_runs(folder_a, folder_b)
    comparison.a, comparison.b = Path(folder_a).name, Path(folder_b).name
    return comparison


def copy_to_store(run_folder: Path, trajectory_id: str, store: TrajectoryStore) -> str:
    """Copy one question's trajectory from a run folder into `store` (the Trajectories page's), replacing
    an older copy (a resumed run may have run the question again). TrajectoryImportError if it is not valid."""
    from agent.trajectory_io import TrajectoryImportError, import_folder

    source = EvalRun.load(run_folder).store.path(trajectory_id)
    if not source.is_dir():
        raise TrajectoryImportError(f"the run {Path(run_folder).name} has no trajectory {trajectory_id}")
    if store.path(trajectory_id).exists():
        store.delete(trajectory_id)
    report = import_folder(source, store, label=trajectory_id)
    if report.failed:
        raise TrajectoryImportError("; ".join(reason for _, reason in report.failed))
    return trajectory_id


def question_line(progress: EvalProgress) -> str:
    """One line for the question that just finished: "[done/total] uid: ok|wrong|stopped|error ..."."""
    r = progress.last
    head = f"[{progress.done}/{progress.total}] {r.uid}:"
    if r.error:
        return f"{head} error: {r.error}"
    mark = "stopped" if r.outcome == "stopped" else ("ok" if r.correct else "wrong")
    return f"{head} {mark}  answer={r.answer!r} reference={r.reference_answer!r}"


def probe_server(policy: Policy) -> bool:
    """Does a replica's OpenAI-compatible server answer (GET /models)?"""
    from agent.policies.openai_chat import health

    return bool(health(policy.describe()["base_url"])["ok"])


@dataclass
class EvalRequest:
    """What a person asked to evaluate: the questions, the run folder, the policy and the budget."""

    examples: list[Example]
    out: Path  # the run folder (resumed when it holds a run with the same settings)
    dataset: str = ""  # recorded in the run's manifest and the summary
    policy: str = "offline"
    max_turns: int = 10
    top_k: int = 10
    protocol: str = DEFAULT_PROFILE
    episode_timeout: float | None = None
    concurrency: int = 1
    resume: bool = True
    base_urls: tuple[str, ...] = ()  # several servers of one model (vllm); () = the settings' one
    policy_options: dict = field(default_factory=dict)  # temperature, max_tokens, timeout...

    def config(self) -> AgentConfig:
        """The loop's settings; ValueError on a bad budget or an unknown protocol."""
        return AgentConfig(max_turns=self.max_turns, top_k=self.top_k, protocol=self.protocol,
                           episode_timeout=self.episode_timeout)


class EvalSession:
    """One evaluation being run. `run` (the EvalRun) and `pool` exist once `setup` has run.

    `open_index()` gives the index searched in process (or used by the offline policy for OCR; None
    when a search server is set); `transformers(folder, **options)` loads the in-process model;
    `judge` scores answers when given; `progress(p)` is called with every EvalProgress (the CLI's
    bar). `preload` loads the index's embedder in `setup` rather than in the first search.
    """

    def __init__(self, request: EvalRequest, settings: Settings, *,
                 open_index: Callable[[], "DocumentIndex | None"],
                 transformers: Callable[..., Policy] = load_transformers,
                 judge: LLMJudge | None = None,
                 progress: Callable[[EvalProgress], None] | None = None,
                 preload: bool = True):
        if not isinstance(request.concurrency, int) or request.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {request.concurrency!r}")
        self.request = request
        self.settings = settings
        self.config = request.config()
        self.judge = judge
        self._open_index = open_index
        self._transformers = transformers
        self._report = progress
        self._preload = preload
        self._stop = threading.Event()
        self.searcher: Searcher | None = None
        self.pool: ReplicaPool | None = None
        self.run: EvalRun | None = None
        self.phase = "starting"  # what the evaluation is doing now, in words for a progress line
        self.progress: EvalProgress | None = None  # the latest report (None before the first)
        self.lines: list[str] = []  # one per finished question (the last LINES_KEPT)
        self.summary: dict | None = None  # once finished: what is on disk, summarised
        self.tables: list[Path] = []

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """End the run: no new question starts, and the episodes in flight end after their current turn."""
        self._stop.set()

    def setup(self) -> EvalRun:
        """Build the searcher, one policy per model server, the pool and the run folder (once).
        PolicyError, RunSetupError or EvalRunError (a message for a person) when it cannot start."""
        if self.run is not None:
            return self.run
        request = self.request
        self.phase = "opening the search index (slow only the first time)"
        index = self._open_index()
        searcher = make_searcher(self.settings, index)
        if self._preload:
            self.phase = "loading the index's embedder (slow only the first time)"
            warm_up(searcher)
        self.phase = "loading the policy"
        servers = [dataclasses.replace(self.settings, base_url=url) for url in request.base_urls] or [self.settings]
        policies = [make_run_policy(request.policy, s, index, transformers=self._transformers, **request.policy_options)
                    for s in servers]
        pool = ReplicaPool(policies, probe=probe_server if request.policy == "vllm" else None)
        described = policies[0].describe()
        run_settings = {"policy": described.get("name"), "model": described.get("model"), "protocol": self.config.protocol,
                        "max_turns": self.config.max_turns, "top_k": self.config.top_k, "search": searcher.describe()}
        self.run = EvalRun.open(request.out, run_settings, request.examples, dataset=request.dataset, resume=request.resume)
        self.searcher, self.pool = searcher, pool
        self.phase = "running"
        log.info("evaluation %s in %s: %d questions, %d at a time", self.run.run_id, self.run.folder,
                 len(request.examples), request.concurrency)
        return self.run

    @property
    def described(self) -> dict:
        """The (first) policy's description; {} before setup."""
        return self.pool.primary.describe() if self.pool is not None else {}

    def _on_progress(self, progress: EvalProgress) -> None:
        self.progress = progress
        if progress.last is not None:
            self.lines = [*self.lines[-(LINES_KEPT - 1):], question_line(progress)]
        if self._report is not None:
            self._report(progress)

    def results(self) -> Iterator[ExampleResult]:
        """Run the questions still to do, yielding each result as it finishes; then `finish`.
        Closing this generator, `stop()`, or a KeyboardInterrupt ends the run early, resumably."""
        run = self.setup()
        steps = run_eval(self.request.examples, self.pool, self.searcher, self.config, run,
                         concurrency=self.request.concurrency, judge=self.judge, progress=self._on_progress,
                         stop=self._stop, resume=self.request.resume)
        try:
            yield from steps
        finally:
            if self._stop.is_set():
                self.phase = "stopping: the episodes in flight end after their current model call"
            steps.close()  # closing waits for the episodes in flight
            self.finish()

    def finish(self) -> dict:
        """Summarise what is on disk for this run's questions and write results.csv, results.json and summary.json."""
        run = self.setup()
        results, missing = run.results(self.request.examples)
        summary = summarize(results) | {"missing": len(missing), "policy": self.described, "protocol": self.config.protocol,
                                        "dataset": self.request.dataset, "out": str(self.request.out), "run": run.run_id}
        self.tables = write_tables(run.folder, results, summary)
        self.summary = summary
        self.phase = "finished"
        return summary

    def saved_results(self) -> list[ExampleResult]:
        """The results on disk of this run's questions, in question order (a page's table)."""
        return self.setup().results(self.request.examples)[0]
