"""Saved trajectories read once per change of their files (st.cache_data keyed by folder and mtime).

A page that lists or opens trajectories on every rerun reads nothing again until a file changes:
the listing is keyed by every folder's trajectory.json mtime, one trajectory by its own.
"""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from agent.trajectory import TRAJECTORY_FILE, Trajectory, TrajectoryStore


def _mtime(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _signature(root: Path) -> tuple:
    try:
        entries = list(os.scandir(root))
    except OSError:
        return ()
    return tuple(sorted((e.name, _mtime(Path(e.path) / TRAJECTORY_FILE)) for e in entries if e.is_dir() and not e.name.startswith(".")))


@st.cache_data(max_entries=4, show_spinner=False)
def _listing(root: str, signature: tuple) -> tuple[list[dict], list[tuple[str, str]]]:
    trajectories, broken = TrajectoryStore(root).list()
    rows = [{
        "id": t.id, "created": t.created_at, "question": t.question, "policy": t.policy.get("name", "?"),
        "turns": len(t.turns), "outcome": t.outcome, "answer": t.answer if t.finished else "",
        "reward": f"{t.rewards['reward']:.2f}" if "reward" in t.rewards else "",
    } for t in trajectories]
    return rows, broken


def listing(store: TrajectoryStore) -> tuple[list[dict], list[tuple[str, str]]]:
    """One row per loadable trajectory (newest first; outcome from Trajectory.outcome, a blank reward
    when there was no reference), and (id, why) for the folders that failed to load."""
    return _listing(str(store.root), _signature(store.root))


@st.cache_data(max_entries=32, show_spinner=False)
def _load(folder: str, mtime: float | None) -> Trajectory:
    return Trajectory.load(folder)


def load(store: TrajectoryStore, trajectory_id: str) -> Trajectory:
    """The trajectory, as saved now (TrajectoryFormatError when it cannot be read)."""
    folder = store.path(trajectory_id)
    return _load(str(folder), _mtime(folder / TRAJECTORY_FILE))
