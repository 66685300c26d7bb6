"""Find the source files under any mix of paths, and fingerprint them.

A source is a PDF or a single page image. Folders are walked recursively (symlinked folders are not
followed, so a link loop cannot hang ingestion; each one is reported). Hidden files and folders (name
starting with ".") are ignored silently, like git does. Everything else that cannot be a source becomes
a SkippedFile with the reason, and the rest is still returned: a folder that cannot be listed, a file
that cannot be read, a broken link, an unsupported file type. Nothing is skipped without a reason.
"""
from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .types import SkippedFile

PDF_SUFFIXES = frozenset({".pdf"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"})
SUPPORTED = ", ".join(sorted(PDF_SUFFIXES | IMAGE_SUFFIXES))
LINKED_FOLDER = "a link to a folder: not followed (give the folder it points to, to index it)"


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute, symlinks resolved
    kind: str  # "pdf" | "image"
    size: int
    mtime_ns: int


def _why(error: OSError) -> str:
    if error.errno == errno.EACCES or isinstance(error, PermissionError):
        return "permission denied"
    return (error.strerror or str(error)).lower() if error.strerror else str(error)


def _walk(root: Path, skipped: list[SkippedFile], exclude: frozenset[str]):
    """Files under the folder `root`, sorted; folders that cannot be listed and linked folders are
    reported in `skipped`; folders in `exclude` (the index's own) are passed over silently."""
    def cannot_list(error: OSError) -> None:
        skipped.append(SkippedFile(str(error.filename or root), f"cannot list the folder: {_why(error)}", "folder"))

    for folder, dirs, files in os.walk(root, onerror=cannot_list):
        kept = []
        for name in sorted(dirs):
            if name.startswith(".") or os.path.join(folder, name) in exclude:
                continue
            if os.path.islink(os.path.join(folder, name)):
                skipped.append(SkippedFile(os.path.join(folder, name), LINKED_FOLDER, "link"))
            else:
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def _classify(path: Path) -> SourceFile | SkippedFile:
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        kind = "pdf"
    elif suffix in IMAGE_SUFFIXES:
        kind = "image"
    else:
        return SkippedFile(str(path), f"unsupported file type {suffix or '(no extension)'!r}; supported: {SUPPORTED}")
    try:
        stat = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return SkippedFile(str(path), f"cannot read the file: a broken link (to {os.readlink(path)})", "link")
        return SkippedFile(str(path), "cannot read the file: it vanished while being listed")
    except OSError as e:  # permission on a parent folder, a link loop
        return SkippedFile(str(path), f"cannot read the file: {_why(e)}")
    if not path.is_file():
        return SkippedFile(str(path), "not a regular file")
    if stat.st_size == 0:
        return SkippedFile(str(path), "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        return SkippedFile(str(path), "cannot read the file: permission denied")
    return SourceFile(path.resolve(), kind, stat.st_size, stat.st_mtime_ns)


def discover(paths, exclude=()) -> tuple[list[SourceFile], list[SkippedFile]]:
    """Sources under `paths` (files or folders), de-duplicated, in a stable order; plus what was skipped.
    A skipped path's `kind` says what it was: "file", "folder" (could not be listed) or "link".
    Folders in `exclude` (an index folder inside the folder being indexed) are not walked."""
    exclude = frozenset(os.path.abspath(p) for p in exclude)
    found: dict[Path, SourceFile] = {}
    skipped: list[SkippedFile] = []
    for raw in paths:
        root = Path(raw).expanduser()
        try:
            is_folder = os.path.isdir(root) if os.path.lexists(root) else None
            os.stat(root)  # raises for a path below a folder we may not enter
        except FileNotFoundError:
            is_folder = None
        except OSError as e:
            skipped.append(SkippedFile(str(root), f"cannot reach this path: {_why(e)} (on a folder above it?)", "folder"))
            continue
        if is_folder is None:
            if os.path.islink(root):
                skipped.append(SkippedFile(str(root), f"a broken link (to {os.readlink(root)})", "link"))
            else:
                skipped.append(SkippedFile(str(root), "no such file or folder"))
            continue
        if is_folder and os.path.abspath(root) in exclude:
            continue
        for candidate in (_walk(os.path.abspath(root), skipped, exclude) if is_folder else [root]):
            result = _classify(candidate)
            if isinstance(result, SkippedFile):
                skipped.append(result)
            else:
                found.setdefault(result.path, result)
    return list(found.values()), skipped


def still_there(path: str) -> bool:
    """False only if `path` is really gone (no such file). A file we may not read, or one under a
    folder we may not list, is still there: its pages must not be dropped as if it had been deleted."""
    try:
        os.stat(path)
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
