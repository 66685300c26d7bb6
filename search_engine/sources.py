"""Find the source files under any mix of paths, and fingerprint them.

A source is a PDF or a single page image. Folders are walked recursively (symlinked folders are not
followed, so a link loop cannot hang ingestion). Hidden files and folders (name starting with ".")
are ignored silently, like git does; anything else that cannot be a source becomes a SkippedFile with
the reason, and the rest is still returned.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .types import SkippedFile

PDF_SUFFIXES = frozenset({".pdf"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"})
SUPPORTED = ", ".join(sorted(PDF_SUFFIXES | IMAGE_SUFFIXES))


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute, symlinks resolved
    kind: str  # "pdf" | "image"
    size: int
    mtime_ns: int


def _candidates(root: Path):
    if root.is_dir():
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith("."):
                    yield Path(folder) / name
    else:
        yield root


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
    except OSError as e:  # broken symlink, vanished file, permission on a parent folder
        return SkippedFile(str(path), f"cannot read the file: {e.strerror or e}")
    if not path.is_file():
        return SkippedFile(str(path), "not a regular file")
    if stat.st_size == 0:
        return SkippedFile(str(path), "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        return SkippedFile(str(path), "cannot read the file: permission denied")
    return SourceFile(path.resolve(), kind, stat.st_size, stat.st_mtime_ns)


def discover(paths) -> tuple[list[SourceFile], list[SkippedFile]]:
    """Sources under `paths` (files or folders), de-duplicated, in a stable order; plus what was skipped."""
    found: dict[Path, SourceFile] = {}
    skipped: list[SkippedFile] = []
    for raw in paths:
        root = Path(raw).expanduser()
        if not root.exists() and not root.is_symlink():
            skipped.append(SkippedFile(str(root), "no such file or folder"))
            continue
        for candidate in _candidates(root):
            result = _classify(candidate)
            if isinstance(result, SkippedFile):
                skipped.append(result)
            else:
                found.setdefault(result.path, result)
    return list(found.values()), skipped


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
