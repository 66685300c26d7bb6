"""An evaluation run's folder: one trajectory per question, so a killed run continues where it stopped.

    RUN/eval.json                  the run: its id, settings, dataset and questions (uids, in order)
    RUN/<run id>-<uid>/            one trajectory folder per question (agent/trajectory.py)
    RUN/results.csv, results.json  the per-question table (agent/eval_table.py), written by the CLI
    RUN/summary.json               the summary, computed from the trajectories on disk

A question's trajectory id is derived from the run id and the question's uid, so running a question
again replaces its folder (atomically, `Trajectory.save`) instead of adding a second one: however
often a run is killed and resumed, each question ends with exactly one trajectory. A question is
done when its trajectory answered or spent its budget (`outcome` "answered" or "no answer") for the
same question text; errors, stops and unfinished episodes are run again. The settings that decide
the answers (policy, model, protocol, turn budget, hits, search engine) must match to resume; the
servers may change (replicas come and go).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from agent.evaluate import Example, ExampleResult, saved_result
from agent.trajectory import Trajectory, TrajectoryFormatError, TrajectoryStore

log = logging.getLogger(__name__)

MANIFEST = "eval.json"
MANIFEST_VERSION = 1
DONE_OUTCOMES = ("answered", "no answer")
RESUME_KEYS = ("policy", "model", "protocol", "max_turns", "top_k", "search")  # must match to resume


class EvalRunError(ValueError):
    """A run folder that cannot be used as asked (other settings, unreadable manifest); says what to do."""


def _slug(uid: str) -> str:
    """A uid as a plain file name part: letters, digits, '.', '_' and '-', with a hash when anything changed."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", uid).strip("._-")[:80].replace("..", "_")
    if slug != uid:
        slug = f"{slug}-{hashlib.sha1(uid.encode()).hexdigest()[:8]}".lstrip("-")
    return slug


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename (a reader sees the old file or the new one, never half)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class EvalRun:
    folder: Path
    run_id: str
    settings: dict  # policy, model, protocol, max_turns, top_k, search
    dataset: str = ""
    uids: list[str] = field(default_factory=list)  # every question this run was asked, in dataset order
    created_at: str = ""

    @property
    def store(self) -> TrajectoryStore:
        return TrajectoryStore(self.folder)

    # --- opening ----------------------------------------------------------------------------------------

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "EvalRun":
        """An existing run folder; EvalRunError if it holds none."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise EvalRunError(f"{folder} is not an evaluation run: it has no {MANIFEST} (run `python -m agent eval --out {folder}` first)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(folder, str(data["run_id"]), dict(data["settings"]), str(data.get("dataset", "")),
                       [str(u) for u in data.get("uids", [])], str(data.get("created_at", "")))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            raise EvalRunError(f"{path} is not a readable evaluation manifest ({e.__class__.__name__}: {e})") from None

    @classmethod
    def open(cls, folder: str | os.PathLike, settings: dict, examples: list[Example], dataset: str = "",
             resume: bool = True) -> "EvalRun":
        """The run in `folder` for these settings and questions, created if the folder holds none.

        With `resume`, an existing run must have the same settings (RESUME_KEYS); without it, the
        folder's run takes the new settings and every question will be run again.
        """
        folder = Path(folder)
        seen: dict[str, int] = {}
        for i, example in enumerate(examples):
            if example.uid in seen:
                raise EvalRunError(f"the dataset has two questions with uid {example.uid!r} (examples {seen[example.uid]} and {i}); uids must be unique")
            seen[example.uid] = i
        if (folder / MANIFEST).is_file():
            run = cls.load(folder)
            if resume:
                changed = [k for k in RESUME_KEYS if run.settings.get(k) != settings.get(k)]
                if changed:
                    was = ", ".join(f"{k}={run.settings.get(k)!r}" for k in changed)
                    now = ", ".join(f"{k}={settings.get(k)!r}" for k in changed)
                    raise EvalRunError(f"{folder} holds a run with {was}, not {now}: give another output folder, "
                                       "or the same settings to resume it, or re-run every question with the new settings")
            run.settings = dict(settings)
            run.uids += [e.uid for e in examples if e.uid not in set(run.uids)]
            run.dataset = dataset or run.dataset
        else:
            if folder.exists() and not folder.is_dir():
                raise EvalRunError(f"{folder} is a file, not a folder")
            if folder.is_dir() and TrajectoryStore(folder).ids():
                raise EvalRunError(f"{folder} already holds trajectories that are not an evaluation run; give a new or empty folder")
            run = cls(folder, "ev" + uuid.uuid4().hex[:6], dict(settings), dataset, [e.uid for e in examples],
                      datetime.now(timezone.utc).isoformat(timespec="seconds"))
        folder.mkdir(parents=True, exist_ok=True)
        run.save()
        return run

    def save(self) -> None:
        write_atomically(self.folder / MANIFEST, json.dumps({
            "version": MANIFEST_VERSION, "run_id": self.run_id, "created_at": self.created_at, "dataset": self.dataset,
            "settings": self.settings, "uids": self.uids}, ensure_ascii=False, indent=1))

    # --- questions ----------------------------------------------------------------------------------------

    def trajectory_id(self, uid: str) -> str:
        return f"{self.run_id}-{_slug(uid)}"

    def saved(self, uid: str) -> Trajectory | None:
        """The trajectory on disk for question `uid`, or None (none yet, or it does not load: logged)."""
        folder = self.store.path(self.trajectory_id(uid))
        if not folder.is_dir():
            return None
        try:
            return Trajectory.load(folder)
        except TrajectoryFormatError as e:
            log.warning("question %s: its trajectory does not load and will be run again: %s", uid, e)
            return None

    @staticmethod
    def is_done(trajectory: Trajectory | None, example: Example) -> bool:
        return (trajectory is not None and trajectory.outcome in DONE_OUTCOMES
                and trajectory.question == example.query and (trajectory.gold or {}).get("uid") == example.uid)

    def todo(self, examples: list[Example]) -> list[Example]:
        """The questions still to run, in dataset order."""
        return [e for e in examples if not self.is_done(self.saved(e.uid), e)]

    def results(self, examples: list[Example] | None = None) -> tuple[list[ExampleResult], list[str]]:
        """Results of the questions with a trajectory on disk, in dataset order, and the uids without one.

        `examples` None: every question the run was asked (its manifest's uids).
        """
        asked = [(e.uid, e.query) for e in examples] if examples is not None else [(uid, None) for uid in self.uids]
        results, missing = [], []
        for uid, question in asked:
            trajectory = self.saved(uid)
            if trajectory is None or (trajectory.gold or {}).get("uid") != uid or question not in (None, trajectory.question):
                missing.append(uid)
            else:
                results.append(saved_result(trajectory))
        return results, missing
