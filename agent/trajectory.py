"""The typed record of one episode: a question, its turns, and the answer.

A `Trajectory` serialises to one folder: `trajectory.json` plus the JPEG images the model saw
(exactly the bytes that were sent), and any attention maps as `.npy`. Loading it back gives an
equal object, so pages can replay and compare runs without the model or the index.

Coordinates, so nobody has to guess:
- "model" space: pixels of the image that was sent to the model (after the protocol's resize).
- "page" space: pixels of the full-resolution page image stored in the index.
An `ImageView` says which region of its page an image shows, so a box in model space maps to the
page by `ImageView.model_to_page`; a crop of a crop composes naturally.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

SCHEMA_VERSION = 1
TRAJECTORY_FILE = "trajectory.json"

Box = list[float]  # [x1, y1, x2, y2]


class TrajectoryFormatError(ValueError):
    """A trajectory folder that is missing, corrupt, or of an unknown schema version."""


@dataclass
class ImageView:
    """One image the model saw: which page, which region of it, at which sizes.

    `region` is the part of the page (page pixels) the image shows: the whole page after a search,
    the padded crop box after a bbox action. `input_size` is what the model saw after resizing.
    """

    file: str  # JPEG file name inside the trajectory folder (the bytes sent to the model)
    page_id: str
    page_image_file: str  # the full-resolution page image (in the index) this view came from
    region: Box  # [x1, y1, x2, y2] in page pixels
    input_size: tuple[int, int]  # (w, h) sent to the model

    @property
    def raw_size(self) -> tuple[int, int]:
        x1, y1, x2, y2 = self.region
        return int(round(x2 - x1)), int(round(y2 - y1))

    def model_to_page(self, box: Box) -> Box:
        """Map a box in this image's model space to page pixels (no padding, no clamping)."""
        rw, rh = self.raw_size
        iw, ih = self.input_size
        sx, sy = rw / iw, rh / ih
        x0, y0 = self.region[0], self.region[1]
        return [x0 + box[0] * sx, y0 + box[1] * sy, x0 + box[2] * sx, y0 + box[3] * sy]

    @classmethod
    def from_dict(cls, d: dict) -> "ImageView":
        d = dict(d)
        d["input_size"] = tuple(d["input_size"])
        d["region"] = [float(v) for v in d["region"]]
        return cls(**d)


@dataclass
class Turn:
    """One model call and what came of it.

    `action` is "search", "bbox", "answer", or "invalid" (the reply broke the protocol; `error` says
    how and `feedback` is the text sent back so the model can recover).
    """

    index: int  # 0-based
    raw_text: str  # the model's reply, verbatim
    action: str
    argument: str = ""  # the search query, the bbox text, or the answer text
    thought: str | None = None
    error: str | None = None
    feedback: str | None = None  # user text appended after this turn (error hint or final-turn nudge)
    # search
    hits: list[dict] = field(default_factory=list)  # SearchHit.to_dict() of every hit returned
    shown_page_id: str | None = None  # the first hit not shown before; None if all were shown
    # bbox
    bbox_model: Box | None = None  # as the model wrote it, in the acted-on image's model space
    bbox_page: Box | None = None  # padded and clamped crop region, in page pixels
    acted_on: ImageView | None = None  # the image the bbox refers to (the last one sent)
    # what the model saw next (a page after search, a crop after bbox)
    observation: ImageView | None = None
    # cost
    model_seconds: float = 0.0
    tool_seconds: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # maps computed later (issue 5): name -> file of an .npy inside the trajectory folder
    maps: dict[str, str] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)  # e.g. region attention share

    @classmethod
    def from_dict(cls, d: dict) -> "Turn":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        for key in ("acted_on", "observation"):
            if d.get(key) is not None:
                d[key] = ImageView.from_dict(d[key])
        return cls(**d)


@dataclass
class Trajectory:
    question: str
    policy: dict  # {"name": ..., "model": ..., "description": ...}: who produced the replies
    turns: list[Turn] = field(default_factory=list)
    answer: str | None = None
    finished: bool = False  # True once an <answer> was given
    error: str | None = None  # an infrastructure failure that ended the run (server down, ...)
    stopped: bool = False  # the user stopped the run before it finished (not an error)
    config: dict = field(default_factory=dict)  # max_turns, top_k, index, ...
    gold: dict = field(default_factory=dict)  # optional: {"answer": str, "pages": [page ids]}
    rewards: dict[str, float] = field(default_factory=dict)
    id: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6])
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION
    # in-memory only: JPEG bytes of images not yet written, keyed by ImageView.file
    images: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def outcome(self) -> str:
        """One word for lists and filters: answered, stopped, error, no answer, or unfinished.

        A user's stop is not an error; "no answer" is a budget spent without an <answer>;
        "unfinished" is a run still going, or one whose process died before it ended.
        """
        if self.finished:
            return "answered"
        if self.stopped:
            return "stopped"
        if self.error:
            return "error"
        return "no answer" if self.answer is not None else "unfinished"

    @property
    def retrieved_pages(self) -> list[str]:
        """Page ids shown to the model, in order (what the NDCG retrieval reward scores)."""
        return [t.shown_page_id for t in self.turns if t.shown_page_id]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("images")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Trajectory":
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise TrajectoryFormatError(f"trajectory schema version {version!r} is not supported (expected {SCHEMA_VERSION})")
        d = dict(d)
        d["turns"] = [Turn.from_dict(t) for t in d.get("turns", [])]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    # --- folders -------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the trajectory to `folder` atomically (a temp folder renamed into place)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
        try:
            if folder.exists():  # keep images and maps already written by an earlier save
                for f in folder.iterdir():
                    if f.is_file() and f.name != TRAJECTORY_FILE:
                        shutil.copy2(f, tmp / f.name)
            for name, data in self.images.items():
                (tmp / name).write_bytes(data)
            (tmp / TRAJECTORY_FILE).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
            if folder.exists():
                old = folder.with_name(folder.name + ".old-" + uuid.uuid4().hex[:6])
                folder.rename(old)
                tmp.rename(folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Trajectory":
        """Load a trajectory folder; images stay on disk (see `image_bytes`)."""
        path = Path(folder) / TRAJECTORY_FILE
        if not path.is_file():
            raise TrajectoryFormatError(f"{folder} is not a trajectory folder: {TRAJECTORY_FILE} is missing")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TrajectoryFormatError(f"{path} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise TrajectoryFormatError(f"{path} does not hold a trajectory object")
        try:
            traj = cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, TrajectoryFormatError):
                raise
            raise TrajectoryFormatError(f"{path} is not a valid trajectory: {e}") from e
        for turn in traj.turns:
            for view in (turn.observation, turn.acted_on):
                if view is not None and not (Path(folder) / view.file).is_file():
                    raise TrajectoryFormatError(f"{folder}: image {view.file} of turn {turn.index} is missing")
        return traj


def image_bytes(folder: str | os.PathLike, view: ImageView) -> bytes:
    """The exact JPEG bytes the model saw for `view`, from a saved trajectory folder."""
    return (Path(folder) / view.file).read_bytes()


class TrajectoryStore:
    """A folder of trajectory folders, newest first."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, trajectory_id: str) -> Path:
        if not trajectory_id or "/" in trajectory_id or "\\" in trajectory_id or trajectory_id.startswith("."):
            raise ValueError(f"not a trajectory id: {trajectory_id!r}")
        return self.root / trajectory_id

    def save(self, traj: Trajectory) -> Path:
        return traj.save(self.path(traj.id))

    def load(self, trajectory_id: str) -> Trajectory:
        return Trajectory.load(self.path(trajectory_id))

    def delete(self, trajectory_id: str) -> None:
        """Remove a saved trajectory: renamed out of the listing at once, then its files deleted.

        KeyError if the store has no trajectory of that id.
        """
        folder = self.path(trajectory_id)
        if not (folder / TRAJECTORY_FILE).is_file():
            raise KeyError(f"no trajectory {trajectory_id!r} in {self.root}")
        doomed = folder.with_name(f".deleted-{folder.name}-{uuid.uuid4().hex[:6]}")
        folder.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / TRAJECTORY_FILE).is_file()]
        return sorted(found, reverse=True)

    def list(self) -> tuple[list[Trajectory], list[tuple[str, str]]]:
        """All loadable trajectories, and (id, reason) for folders that failed to load."""
        good, bad = [], []
        for tid in self.ids():
            try:
                good.append(self.load(tid))
            except TrajectoryFormatError as e:
                bad.append((tid, str(e)))
        return good, bad
