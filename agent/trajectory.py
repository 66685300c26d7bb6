"""The typed record of one episode: a question, its turns, and the answer.

A `Trajectory` serialises to one folder: `trajectory.json` plus the JPEG images the model saw
(exactly the bytes that were sent), and any attention maps as `.npy`. Loading it back gives an
equal object, so pages can replay and compare runs without the model or the index.

Coordinates, so nobody has to guess:
- "model" space: pixels of the image that was sent to the model (after the protocol's resize).
- "page" space: pixels of the full-resolution page image stored in the index.
An `ImageView` says which region of its page an image shows, so a box in model space maps to the
page by `ImageView.model_to_page`; a crop of a crop composes naturally.

Loading validates every field's type with pydantic (the annotations below are the schema) and
raises one `TrajectoryFormatError` naming the field's path ("turns.3.hits.0.score: ..."). A record
names files only by plain file names inside its own folder; `member_path` / `image_path` /
`map_path` are the only ways to turn a name into a path, and they refuse anything that would lead
outside the folder (absolute paths, "..", links pointing elsewhere). A page image of the index is
found by its page id through an index the caller knows (`page_image_path`), never through the
path a record stored (`ImageView.page_image_file` and a hit's `image_file` are provenance only).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict  # pydantic needs typing_extensions' TypedDict on 3.11

SCHEMA_VERSION = 1
TRAJECTORY_FILE = "trajectory.json"
MAX_RECORD_BYTES = 64 * 1024**2  # a trajectory.json larger than this is refused unread
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MAP_SUFFIX = ".npy"
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a trajectory id or a file name in its folder


class TrajectoryFormatError(ValueError):
    """A trajectory folder that is missing, corrupt, of an unknown schema version, or naming an unsafe file.

    `field` is the path of the offending field ("turns.3.hits.0.score") when one field is to blame.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class UnsafePathError(TrajectoryFormatError):
    """A record named a file outside its trajectory folder (absolute, "..", a link leading elsewhere)."""


# --- names and safe paths ---------------------------------------------------------------------------


def is_safe_name(name: object) -> bool:
    """A plain name of a file or folder: letters, digits, '.', '_', '-'; no separators; not hidden."""
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None and ".." not in name


def check_id(trajectory_id: object) -> str:
    """`trajectory_id` if it is a safe folder name, else ValueError."""
    if not is_safe_name(trajectory_id):
        raise ValueError(f"not a trajectory id: {trajectory_id!r} (1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit)")
    return trajectory_id


def _file_name(suffixes: tuple[str, ...]):
    def check(name: str) -> str:
        if not is_safe_name(name) or not name.lower().endswith(suffixes):
            raise ValueError(f"{str(name)[:80]!r} is not a plain {'/'.join(suffixes)} file name inside the trajectory folder")
        return name

    return check


def member_path(folder: str | os.PathLike, name: str) -> Path:
    """The path of the file `name` inside a trajectory folder, resolved.

    Raises UnsafePathError unless `name` is a plain file name and the path (links followed) stays
    directly inside `folder`. The file need not exist.
    """
    if not is_safe_name(name):
        raise UnsafePathError(f"{str(name)[:80]!r} is not a plain file name inside the trajectory folder")
    try:
        base = Path(folder).resolve()
        path = (base / name).resolve()
    except (OSError, RuntimeError) as e:  # a link loop, an unreadable folder
        raise UnsafePathError(f"{name!r} in {folder} cannot be resolved ({e})") from None
    if path.parent != base:
        raise UnsafePathError(f"{name!r} in {base} leads outside the trajectory folder (a link to {path})")
    return path


def image_path(folder: str | os.PathLike, view: ImageView) -> Path:
    """Where the JPEG the model saw for `view` is kept in a saved trajectory folder (UnsafePathError if outside)."""
    return _named_file(folder, view.file, IMAGE_SUFFIXES)


def map_path(folder: str | os.PathLike, name: str) -> Path:
    """Where an attention map (`Turn.maps` value) is kept in a saved trajectory folder (UnsafePathError if outside)."""
    return _named_file(folder, name, (MAP_SUFFIX,))


def _named_file(folder: str | os.PathLike, name: object, suffixes: tuple[str, ...]) -> Path:
    try:
        name = _file_name(suffixes)(name)
    except (ValueError, TypeError, AttributeError) as e:
        raise UnsafePathError(str(e)) from None
    return member_path(folder, name)


def image_bytes(folder: str | os.PathLike, view: ImageView) -> bytes:
    """The exact JPEG bytes the model saw for `view`, from a saved trajectory folder.

    UnsafePathError if the record names a file outside the folder; OSError if it cannot be read.
    """
    return image_path(folder, view).read_bytes()


def page_image_path(index, page_id: str) -> Path | None:
    """The full-resolution image of page `page_id`, looked up by id in `index` (a DocumentIndex).

    None if the index has no such page, or its image is not a file inside the index folder. This is
    the only way a trajectory's page ids reach page images: never through a path a record stored.
    """
    if not isinstance(page_id, str):
        return None
    try:
        page = index.page(page_id)
        base = Path(index.folder).resolve()
        path = Path(page.image_file).resolve()
    except (KeyError, OSError, RuntimeError, ValueError, TypeError):
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path


# --- the schema's field types (pydantic reads the dataclass annotations) ------------------------------

_STRICT = ConfigDict(strict=True, extra="ignore")
_OPEN = ConfigDict(strict=True, extra="allow")
ImageName = Annotated[str, AfterValidator(_file_name(IMAGE_SUFFIXES))]
MapName = Annotated[str, AfterValidator(_file_name((MAP_SUFFIX,)))]
TrajectoryId = Annotated[str, AfterValidator(check_id)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]
Box = Annotated[list[Finite], Field(min_length=4, max_length=4)]  # [x1, y1, x2, y2]
Size = tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]]  # (w, h)


def _region(box: list[float]) -> list[float]:
    if round(box[2] - box[0]) < 1 or round(box[3] - box[1]) < 1:
        raise ValueError(f"{box} is not a region of at least one pixel with x1 < x2 and y1 < y2")
    return box


Region = Annotated[Box, AfterValidator(_region)]


class Hit(TypedDict):
    """A search hit as recorded (search_engine.types.SearchHit.to_dict)."""

    __pydantic_config__ = _OPEN  # type: ignore[misc]
    rank: int
    score: float
    page_id: str
    image_file: NotRequired[str]  # where the index kept the page (provenance only, never opened)
    source: NotRequired[str]
    page: NotRequired[int]
    scores: NotRequired[dict[str, float]]


class PolicyInfo(TypedDict, total=False):
    """`Policy.describe()`: who produced the replies."""

    __pydantic_config__ = _OPEN  # type: ignore[misc]
    name: str
    model: str | None
    description: str
    base_url: str
    settings: dict[str, Any]


class RunConfig(TypedDict, total=False):
    """AgentConfig.to_dict() plus what the caller added (the index's name, the searcher)."""

    __pydantic_config__ = _OPEN  # type: ignore[misc]
    max_turns: int
    top_k: int
    protocol: str  # the protocol profile (agent/protocol.py)
    episode_timeout: float
    index: str
    search: dict[str, Any]


class Gold(TypedDict, total=False):
    """The reference an evaluation scores against."""

    __pydantic_config__ = _OPEN  # type: ignore[misc]
    answer: str
    answers: list[str]
    pages: list[str]
    uid: str
    boxes: dict[str, Box | list[Box]]  # page id -> evidence box(es) in page pixels (attention's gold share)


# --- the record --------------------------------------------------------------------------------------


@dataclass
class ImageView:
    """One image the model saw: which page, which region of it, at which sizes.

    `region` is the part of the page (page pixels) the image shows: the whole page after a search,
    the padded crop box after a bbox action. `input_size` is what the model saw after resizing.
    """

    __pydantic_config__ = _STRICT

    file: ImageName  # JPEG file name inside the trajectory folder (the bytes sent to the model)
    page_id: str
    page_image_file: str  # where the index kept the full page (provenance only: see page_image_path)
    region: Region  # [x1, y1, x2, y2] in page pixels
    input_size: Size  # (w, h) sent to the model

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
        return _validate(cls, d)


@dataclass
class Turn:
    """One model call and what came of it.

    `action` is "search", "bbox", "answer", or "invalid" (the reply broke the protocol; `error` says
    how and `feedback` is the text sent back so the model can recover).
    """

    __pydantic_config__ = _STRICT

    index: Count  # 0-based, equal to the turn's position in `Trajectory.turns`
    raw_text: str  # the model's reply, verbatim
    action: Literal["search", "bbox", "answer", "invalid"]
    argument: str = ""  # the search query, the bbox text, or the answer text
    thought: str | None = None
    error: str | None = None
    feedback: str | None = None  # user text appended after this turn (error hint or final-turn nudge)
    # search
    hits: list[Hit] = field(default_factory=list)  # SearchHit.to_dict() of every hit returned
    shown_page_id: str | None = None  # the first hit not shown before; None if all were shown
    # bbox
    bbox_model: Box | None = None  # as the model wrote it, in the acted-on image's model space
    bbox_page: Box | None = None  # padded and clamped crop region, in page pixels
    acted_on: ImageView | None = None  # the image the bbox refers to (the last one sent)
    # what the model saw next (a page after search, a crop after bbox)
    observation: ImageView | None = None
    # cost
    model_seconds: Seconds = 0.0
    tool_seconds: Seconds = 0.0
    prompt_tokens: Count | None = None
    completion_tokens: Count | None = None
    # maps computed later (issue 5): name -> file of an .npy inside the trajectory folder
    maps: dict[str, MapName] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)  # e.g. region attention share

    @classmethod
    def from_dict(cls, d: dict) -> "Turn":
        return _validate(cls, d)


@dataclass
class Trajectory:
    __pydantic_config__ = _STRICT

    question: str
    policy: PolicyInfo  # {"name": ..., "model": ..., "description": ...}: who produced the replies
    turns: list[Turn] = field(default_factory=list)
    answer: str | None = None
    finished: bool = False  # True once an <answer> was given
    error: str | None = None  # an infrastructure failure that ended the run (server down, ...)
    stopped: bool = False  # the user stopped the run before it finished (not an error)
    config: RunConfig = field(default_factory=dict)  # max_turns, top_k, index, ...
    gold: Gold = field(default_factory=dict)  # optional: {"answer": str, "pages": [page ids]}
    rewards: dict[str, float] = field(default_factory=dict)
    id: TrajectoryId = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6])
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: Literal[1] = SCHEMA_VERSION
    # in-memory only, never saved or compared:
    # JPEG bytes of images not yet written, keyed by ImageView.file
    images: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)
    # advice on `error` for where the person is: {"cli": flags and commands, "app": pages and fields}
    error_hints: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

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
        for name in _IN_MEMORY:
            d.pop(name)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Trajectory":
        """Validate a trajectory's JSON object (TrajectoryFormatError naming the first bad field)."""
        if not isinstance(d, dict):
            raise TrajectoryFormatError(f"a trajectory is a JSON object, not {type(d).__name__}")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise TrajectoryFormatError(f"trajectory schema version {version!r} is not supported (expected {SCHEMA_VERSION})", field="schema_version")
        for key in _RECORDED:  # defaults for new trajectories, never for a record: it would change on every load
            if key not in d:
                raise TrajectoryFormatError(f"{key}: Field required (a saved trajectory always records it)", field=key)
        trajectory = _validate(cls, d)
        for i, turn in enumerate(trajectory.turns):
            if turn.index != i:
                raise TrajectoryFormatError(f"turns.{i}.index: the turn at position {i} says it is turn {turn.index}", field=f"turns.{i}.index")
        for name in ("policy", "config", "gold"):  # a TypedDict puts its declared keys first: keep the record's order
            given, validated = d.get(name), getattr(trajectory, name)
            if isinstance(given, dict) and isinstance(validated, dict):
                setattr(trajectory, name, {k: validated[k] for k in given if k in validated})
        return trajectory

    # --- folders -------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the trajectory to `folder` atomically (a temp folder renamed into place)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
        try:
            if folder.exists():  # keep images and maps already written by an earlier save (never links)
                for f in folder.iterdir():
                    if f.is_file() and not f.is_symlink() and f.name != TRAJECTORY_FILE:
                        shutil.copy2(f, tmp / f.name)
            for name, data in self.images.items():
                member_path(tmp, name).write_bytes(data)
            (tmp / TRAJECTORY_FILE).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
            if folder.exists():
                old = folder.with_name(f".old-{folder.name}-{uuid.uuid4().hex[:6]}")  # hidden: never listed
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
        """Load and validate a trajectory folder; images stay on disk (see `image_bytes`).

        Every failure is a TrajectoryFormatError whose message starts with the folder: an unreadable
        or invalid trajectory.json, a field of the wrong type (named by its path), a file name that
        leads outside the folder, an image or map the record names that is missing or not an image.
        """
        try:
            traj = cls.from_dict(_read_record(Path(folder)))
            for turn in traj.turns:
                _check_files(Path(folder), turn)
        except TrajectoryFormatError as e:
            kind = UnsafePathError if isinstance(e, UnsafePathError) else TrajectoryFormatError
            message = str(e) if str(e).startswith(str(folder)) else f"{folder}: {e}"
            raise kind(message, field=e.field) from None
        return traj


_IN_MEMORY = ("images", "error_hints")
_RECORDED = ("id", "created_at")


@cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def _validate(cls: type, d: object):
    """`d` validated as `cls`, exactly as the same data read from a saved file would be."""
    if isinstance(d, dict):
        d = {k: v for k, v in d.items() if k not in _IN_MEMORY}
    try:
        text = json.dumps(d, ensure_ascii=False)
        return _adapter(cls).validate_json(text)
    except ValidationError as e:
        raise _format_error(e) from None
    except (TypeError, ValueError, RecursionError) as e:  # not JSON data at all, or nested too deep
        raise TrajectoryFormatError(f"not a JSON trajectory record ({e.__class__.__name__}: {e})") from None


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_error(e: ValidationError) -> TrajectoryFormatError:
    errors = e.errors(include_url=False)
    first = errors[0]
    path = ".".join(str(p) for p in first["loc"]) or "(the record)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] not in ("missing", "value_error"):  # a value error already quotes the value
        message += f" (got {_short(first.get('input'))})"
    if len(errors) > 1:
        message += f"; {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} after it"
    return TrajectoryFormatError(f"{path}: {message}", field=path)


def _read_record(folder: Path) -> object:
    try:
        path = member_path(folder, TRAJECTORY_FILE)
        if not path.is_file():
            raise TrajectoryFormatError(f"{folder} is not a trajectory folder: {TRAJECTORY_FILE} is missing")
        if path.stat().st_size > MAX_RECORD_BYTES:
            raise TrajectoryFormatError(f"{TRAJECTORY_FILE} is larger than {MAX_RECORD_BYTES // 1024**2} MB")
        raw = path.read_bytes()
    except OSError as e:
        raise TrajectoryFormatError(f"{TRAJECTORY_FILE} cannot be read ({e.strerror or e})") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise TrajectoryFormatError(f"{TRAJECTORY_FILE} is not valid JSON: {e}") from None


def _check_files(folder: Path, turn: Turn) -> None:
    """Every image `turn` names is a file inside `folder` starting like a JPEG or PNG; maps stay inside."""
    for key in ("observation", "acted_on"):
        view = getattr(turn, key)
        if view is None:
            continue
        where = f"turns.{turn.index}.{key}.file"
        try:
            with open(image_path(folder, view), "rb") as f:
                head = f.read(8)
        except UnsafePathError as e:
            raise UnsafePathError(f"{where}: {e}", field=where) from None
        except FileNotFoundError:
            raise TrajectoryFormatError(f"{where}: image {view.file} of turn {turn.index} is missing", field=where) from None
        except OSError as e:
            raise TrajectoryFormatError(f"{where}: image {view.file} cannot be read ({e.strerror or e})", field=where) from None
        if not head.startswith(_IMAGE_MAGIC):
            raise TrajectoryFormatError(f"{where}: {view.file} of turn {turn.index} is not a JPEG or PNG image", field=where)
    for key, name in turn.maps.items():  # a missing map is drawn as absent, but none may lead outside
        where = f"turns.{turn.index}.maps.{key}"
        try:
            map_path(folder, name)
        except UnsafePathError as e:
            raise UnsafePathError(f"{where}: {e}", field=where) from None


class TrajectoryStore:
    """A folder of trajectory folders (each named by its trajectory's id), newest first."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, trajectory_id: str) -> Path:
        """The folder of `trajectory_id` (ValueError unless the id is a safe folder name)."""
        return self.root / check_id(trajectory_id)

    def save(self, traj: Trajectory) -> Path:
        return traj.save(self.path(traj.id))

    def load(self, trajectory_id: str) -> Trajectory:
        """TrajectoryFormatError if the folder is unreadable or its record names another id."""
        folder = self.path(trajectory_id)
        traj = Trajectory.load(folder)
        if traj.id != trajectory_id:
            raise TrajectoryFormatError(f"{folder}: id: the record says {traj.id!r}, its folder is named {trajectory_id!r}", field="id")
        return traj

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
        """Names of the folders holding a trajectory.json (also those that will not load), newest first.

        A folder that cannot even be looked into is included, so `list` reports why. OSError if the
        store's own folder cannot be listed.
        """
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            if p.name.startswith("."):
                continue
            try:
                if p.is_dir() and (p / TRAJECTORY_FILE).is_file():
                    found.append(p.name)
            except OSError:  # e.g. a folder without the permission to look inside
                found.append(p.name)
        return sorted(found, reverse=True)

    def list(self) -> tuple[list[Trajectory], list[tuple[str, str]]]:
        """All loadable trajectories, and (id, reason) for folders that failed to load. Never raises."""
        try:
            ids = self.ids()
        except OSError as e:
            return [], [("", f"the trajectory store {self.root} cannot be listed ({e.strerror or e})")]
        good, bad = [], []
        for tid in ids:
            try:
                good.append(self.load(tid))
            except (TrajectoryFormatError, ValueError) as e:
                bad.append((tid, str(e)))
        return good, bad
