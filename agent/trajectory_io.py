"""Importing trajectory folders into the store, from a zip upload or a folder on the server.

A zip or folder may hold one trajectory folder (a folder with trajectory.json, or trajectory.json
at its root) or several. Each is loaded with `Trajectory.load`, which checks the schema version and
that every image it names is present, before it is copied into the store, so a corrupted
trajectory is reported with its reason and never lands in the store. Zip entries are extracted only
inside a temporary folder (no absolute paths, no `..`, no links) and within a size budget.
No Streamlit here.
"""
from __future__ import annotations

import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from agent.trajectory import TRAJECTORY_FILE, Trajectory, TrajectoryFormatError, TrajectoryStore

MAX_UNPACKED_BYTES = 2 * 1024**3  # refuse zip bombs
MAX_FOLDERS = 10_000


class TrajectoryImportError(ValueError):
    """The whole import cannot proceed (not a zip, not a folder, unsafe archive); the message says why."""


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)  # trajectory ids now in the store
    already_there: list[str] = field(default_factory=list)  # ids the store had (left unchanged)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (folder, reason)


def trajectory_folders(root: Path) -> list[Path]:
    """Every folder under `root` (itself included) holding a trajectory.json."""
    found = sorted({p.parent for p in root.rglob(TRAJECTORY_FILE) if p.is_file()})
    return found[:MAX_FOLDERS]


def import_folder(root: Path, store: TrajectoryStore) -> ImportReport:
    """Copy every valid trajectory folder under `root` into `store`, reporting the others."""
    root = Path(root).expanduser()
    if not root.exists():
        raise TrajectoryImportError(f"there is no folder at {root} on the server")
    if not root.is_dir():
        raise TrajectoryImportError(f"{root} is a file, not a folder (upload a .zip instead)")
    folders = trajectory_folders(root)
    if not folders:
        raise TrajectoryImportError(f"no trajectory folder under {root}: none holds a {TRAJECTORY_FILE}")
    report = ImportReport()
    for folder in folders:
        try:
            trajectory = Trajectory.load(folder)
        except TrajectoryFormatError as e:
            report.failed.append((str(folder), str(e)))
            continue
        try:
            target = store.path(trajectory.id)
        except ValueError as e:
            report.failed.append((str(folder), str(e)))
            continue
        if target.exists():
            report.already_there.append(trajectory.id)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=target.parent))
        shutil.rmtree(tmp)
        shutil.copytree(folder, tmp, symlinks=False)
        tmp.rename(target)
        report.imported.append(trajectory.id)
    return report


def _safe_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    total = 0
    members = []
    for info in archive.infolist():
        name = PurePosixPath(info.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts:
            raise TrajectoryImportError(f"the zip holds an unsafe path: {info.filename!r}")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise TrajectoryImportError(f"the zip holds a symbolic link: {info.filename!r}")
        total += info.file_size
        if total > MAX_UNPACKED_BYTES:
            raise TrajectoryImportError(f"the zip unpacks to more than {MAX_UNPACKED_BYTES // 1024**2} MB")
        members.append(info)
    return members


def import_zip(data: bytes, store: TrajectoryStore) -> ImportReport:
    """Unpack a zip upload into a temporary folder and import the trajectory folders in it."""
    import io

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise TrajectoryImportError(f"the upload is not a zip archive ({e})") from e
    with archive, tempfile.TemporaryDirectory(prefix="vrag-import-") as tmp:
        try:
            archive.extractall(tmp, members=_safe_members(archive))
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:  # corrupt entries, encrypted members
            raise TrajectoryImportError(f"the zip could not be unpacked ({e})") from e
        return import_folder(Path(tmp), store)


def export_zip(folder: Path) -> bytes:
    """A saved trajectory folder as a zip (the format `import_zip` reads back)."""
    import io

    folder = Path(folder)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                archive.write(path, f"{folder.name}/{path.name}")
    return out.getvalue()
