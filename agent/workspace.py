"""Where VRAG Studio keeps its data, and the settings a user chose: shared by the app and the CLI.

No Streamlit here. The data root holds everything the app writes (git-ignored by default):

    <data>/indexes/<name>/     one folder per named index (search_engine/store.py)
    <data>/trajectories/<id>/  every saved run (agent/trajectory.py)
    <data>/samples/            the generated sample report
    <data>/uploads/<index>/    files uploaded on the Library page

`Settings` is what the Settings page edits (the model endpoint, the model, a local model folder,
the search server); defaults come from the environment so a deployment can preset them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout
DATA_ENV = "VRAG_STUDIO_DATA"  # the data root (default ./data, git-ignored)


def data_root() -> Path:
    return Path(os.environ.get(DATA_ENV) or ROOT / "data").resolve()


def indexes_dir() -> Path:
    return data_root() / "indexes"


def trajectories_dir() -> Path:
    return data_root() / "trajectories"


def samples_dir() -> Path:
    return data_root() / "samples"


@dataclass
class Settings:
    """The model endpoint, the model, a local model folder and the search server a user chose."""

    base_url: str = ""  # the OpenAI-compatible model server (vLLM)
    model: str = ""  # the served model name
    api_key: str = "EMPTY"
    transformers_model: str = ""  # a local Qwen2.5-VL folder for the in-process policy
    search_url: str = ""  # "" = search the active index in this process; else our search server's URL

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            base_url=os.environ.get("VRAG_BASE_URL", "http://127.0.0.1:8001/v1"),
            model=os.environ.get("VRAG_MODEL", "Qwen/Qwen2.5-VL-7B-Instruct"),
            api_key=os.environ.get("VRAG_API_KEY", "EMPTY"),
            transformers_model=os.environ.get("VRAG_TRANSFORMERS_MODEL", ""),
            search_url=os.environ.get("VRAG_SEARCH_URL", ""),
        )

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
