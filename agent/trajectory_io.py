"""Importing trajectory folders into the store, from a zip or a folder; exporting one as a zip.

A zip or folder may hold one trajectory folder (a folder with trajectory.json, or trajectory.json
at its root) or several. Each is validated whole before anything is copied: the record (every
field's type, file names inside the folder: `Trajectory.load`), every image it names decodes as a
JPEG or PNG, every attention map it names is a numeric .npy, and the folder holds no links. What
fails is reported with its reason and never lands in the store.

A zip is unpacked only inside a temporary folder, entry by entry, and refused whole if it holds
an absolute path, a `..`, a link, more than MAX_ENTRIES entries, more than MAX_UNPACKED_BYTES in
all, or an entry that inflates more than MAX_RATIO times (a zip bomb); bytes are counted as they
are written, so a header that lies about sizes gains nothing.
No Streamlit here.
"""
from __future__ import annotations

import io
import os
import shutil
import stat
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from agent.trajectory import (
    TRAJECTORY_FILE,
    Trajectory,
    TrajectoryFormatError,
    TrajectoryStore,
    image_path,
    is_safe_name,
    map_path,
)

MAX_UNPACKED_BYTES = 1024**3  # all entries together
MAX_ENTRIES = 100_000
MAX_RATIO = 100  # uncompressed / compressed, for entries over RATIO_FLOOR bytes
RATIO_FLOOR = 1024**2
MAX_FOLDERS = 10_000
_CHUNK = 1024**2


class TrajectoryImportError(ValueError):
    """The whole import cannot proceed (not a zip, not a folder, unsafe archive); the message says why."""


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)  # trajectory ids now in the store
    already_there: list[str] = field(default_factory=list)  # ids the store had (left unchanged)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (folder, reason)


# --- finding and validating trajectory folders --------------------------------------------------


def trajectory_folders(root: Path) -> list[Path]:
    """Every folder under `root` (itself included) holding a trajectory.json; links and hidden
    folders (a store's temporary and deleted folders) are not entered."""
    found = []
    for current, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if TRAJECTORY_FILE in files:
            found.append(Path(current))
            if len(found) >= MAX_FOLDERS:
                break
    return sorted(found)


def _is_link(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def _check_picture(path: Path) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=["JPEG", "PNG"]) as image:
                image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TrajectoryFormatError(f"{path.name} is not a readable JPEG or PNG image ({e.__class__.__name__}: {e})") from None


def _check_map(path: Path) -> None:
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise TrajectoryFormatError(f"{path.name} is not a readable .npy map ({e.__class__.__name__}: {e})") from None
    if not isinstance(values, np.ndarray) or values.ndim != 2 or values.dtype.kind not in "fiu":
        raise TrajectoryFormatError(f"{path.name} is not a 2-D numeric map")


def validate_folder(folder: Path) -> Trajectory:
    """Load `folder` and check every file its record names, more deeply than loading does.

    Raises TrajectoryFormatError with the reason.
    """
    folder = Path(folder)
    if _is_link(folder):
        raise TrajectoryFormatError(f"{folder} is a link, not a trajectory folder")
    links = sorted(p.name for p in folder.iterdir() if _is_link(p))
    if links:
        raise TrajectoryFormatError(f"{folder} holds links ({', '.join(links[:3])}); a trajectory folder holds only files")
    trajectory = Trajectory.load(folder)
    for turn in trajectory.turns:
        for view in (turn.observation, turn.acted_on):
            if view is not None:
                _check_picture(image_path(folder, view))
        for name in turn.maps.values():
            path = map_path(folder, name)
            if not path.is_file():
                raise TrajectoryFormatError(f"turns.{turn.index}.maps: map {name} is missing")
            _check_map(path)
    return trajectory


def _copy_in(folder: Path, target: Path) -> None:
    """Copy the folder's own regular files (no links, no subfolders) to `target`, atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=target.parent))
    try:
        for path in folder.iterdir():
            if is_safe_name(path.name) and stat.S_ISREG(os.lstat(path).st_mode):
                shutil.copyfile(path, tmp / path.name, follow_symlinks=False)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def import_folder(root: Path, store: TrajectoryStore, label: str | None = None) -> ImportReport:
    """Copy every valid trajectory folder under `root` into `store`, reporting the others.

    `label` names `root` in the report (e.g. the zip's name); by default its path.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise TrajectoryImportError(f"there is no folder at {root} on the server")
    if not root.is_dir():
        raise TrajectoryImportError(f"{root} is a file, not a folder (import a .zip instead)")
    folders = trajectory_folders(root)
    if not folders:
        raise TrajectoryImportError(f"no trajectory folder under {label or root}: none holds a {TRAJECTORY_FILE}")
    report = ImportReport()
    for folder in folders:
        name = str(folder) if label is None else str(PurePosixPath(label) / folder.relative_to(root).as_posix())
        try:
            trajectory = validate_folder(folder)
            target = store.path(trajectory.id)
        except (TrajectoryFormatError, ValueError, OSError) as e:
            report.failed.append((name, str(e).replace(str(folder), name)))
            continue
        if target.exists():
            report.already_there.append(trajectory.id)
            continue
        try:
            _copy_in(folder, target)
        except OSError as e:
            report.failed.append((name, f"could not be copied into the store ({e.strerror or e})"))
            continue
        report.imported.append(trajectory.id)
    return report


# --- zips --------------------------------------------------------------------------------------------


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The entry's relative path (None for a folder entry); TrajectoryImportError if unsafe."""
    raw = info.filename
    name = PurePosixPath(raw.replace("\\", "/"))
    if "\x00" in raw or name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
        raise TrajectoryImportError(f"the zip holds an unsafe path: {raw!r}")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise TrajectoryImportError(f"the zip holds a symbolic link: {raw!r}")
    if info.is_dir():
        return None
    return name


def _check_sizes(infos: list[zipfile.ZipInfo]) -> None:
    if len(infos) > MAX_ENTRIES:
        raise TrajectoryImportError(f"the zip holds {len(infos):,} entries, more than the {MAX_ENTRIES:,} allowed")
    total = 0
    for info in infos:
        total += info.file_size
        if total > MAX_UNPACKED_BYTES:
            raise TrajectoryImportError(f"the zip unpacks to more than {MAX_UNPACKED_BYTES // 1024**2} MB")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise TrajectoryImportError(
                f"the zip entry {info.filename!r} inflates {info.file_size / max(info.compress_size, 1):,.0f} times "
                f"(more than {MAX_RATIO}): refused as a zip bomb")


def _unpack(archive: zipfile.ZipFile, into: Path) -> None:
    infos = archive.infolist()
    _check_sizes(infos)
    written = 0
    for info in infos:
        relative = _member_path(info)
        if relative is None:
            continue
        target = into.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        with archive.open(info) as source, open(target, "wb") as out:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                written += len(chunk)
                if size > info.file_size or written > MAX_UNPACKED_BYTES:
                    raise TrajectoryImportError(f"the zip entry {info.filename!r} unpacks to more than its header says: refused")
                out.write(chunk)


def import_zip(data: bytes | str | os.PathLike, store: TrajectoryStore, name: str = "the zip") -> ImportReport:
    """Unpack a zip (its bytes, or a path to it) into a temporary folder and import the trajectories in it.

    `name` labels the zip's folders in the report ("run.zip/20250101-...").
    """
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise TrajectoryImportError(f"{name} is not a zip archive ({e})") from e
    with archive, tempfile.TemporaryDirectory(prefix="vrag-import-") as tmp:
        try:
            _unpack(archive, Path(tmp))
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError, NotImplementedError) as e:
            if isinstance(e, TrajectoryImportError):
                raise
            # corrupt entries, encrypted members, unsupported compression
            raise TrajectoryImportError(f"{name} could not be unpacked ({e.__class__.__name__}: {e})") from e
        return import_folder(Path(tmp), store, label=name)


def export_zip(folder: Path) -> bytes:
    """A saved trajectory folder as a zip (the format `import_zip` reads back).

    Only the folder's own regular files go in: never a link, never anything outside the folder.
    """
    folder = Path(folder)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            if is_safe_name(path.name) and stat.S_ISREG(os.lstat(path).st_mode):
                archive.write(path, f"{folder.name}/{path.name}")
    return out.getvalue()
