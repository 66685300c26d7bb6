"""Files uploaded on the Library page: kept under the data folder, zips unpacked safely, then ingested.

An index refers to its sources by path, so uploads are kept (<data>/uploads/<index>/, see
agent/workspace.py). A zip of documents is unpacked into a folder named after it, beside the other
uploads (`<name> (zip)/`), and that folder is ingested (a zip given as a path on the server
is unpacked there too, and left where it is). A zip comes from someone else, so unpacking trusts nothing in it:

- a member's name is a relative path of plain parts: no absolute path, no drive letter, no '..',
  no part starting with '.'; backslashes count as separators (zips made on Windows use them);
- only regular files are written: symbolic links and other special entries are refused;
- a size budget bounds what is written (the sizes a zip declares can lie, so bytes are counted while
  they are copied) and a count budget bounds how many members are looked at: a zip bomb stops there;
- only documents (PDF and page images) are unpacked; each member left out is reported with its reason,
  beside the ingest's own skipped files, in one report;
- each file is written to a temporary name and moved into place, so an unpacking that stops midway
  never leaves half a file for the ingest to find.
No Streamlit here.
"""
from __future__ import annotations

import logging
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from agent.workspace import write_atomically
from search_engine.sources import IMAGE_SUFFIXES, PDF_SUFFIXES, SUPPORTED
from search_engine.types import IngestReport, SkippedFile

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]

MAX_UNPACKED_BYTES = 4 * 1024**3  # 4 GiB written per zip at most
MAX_MEMBERS = 20_000  # members looked at per zip
CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
_IGNORED = ("__MACOSX/",)  # metadata folders archivers add; nothing of the user's is in them


@dataclass
class Unpacked:
    folder: Path  # where the zip's documents were written
    files: list[Path] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)  # members left out, with why


def safe_name(name: str) -> str:
    """An uploaded file's name reduced to a plain file name (an upload never writes outside its folder)."""
    name = Path(name.replace("\\", "/")).name.strip() or "upload"
    return "_" + name if name.startswith(".") else name


def save_uploads(files: list[tuple[str, bytes]], folder: Path) -> list[Path]:
    """Keep uploaded files (name, bytes) in `folder`, by their base name only.

    A file uploaded again under the same name replaces the old one (the index then re-ingests it).
    """
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for name, data in files:
        path = folder / safe_name(name)
        write_atomically(path, [data])
        saved.append(path)
    return saved


def member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why this zip member must not be unpacked (None if it may): its name, its kind, its type."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or _DRIVE.match(name):
        return "an absolute path inside the zip; not unpacked"
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return "a path that climbs out of the zip's folder ('..'); not unpacked"
    if not parts:
        return "an entry with no name; not unpacked"
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # made on Unix
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "a special file (not a regular file)"
        return f"{kind}; only plain files are unpacked"
    if any(p.startswith(".") for p in parts):
        return "a hidden file; not unpacked"
    suffix = PurePosixPath(parts[-1]).suffix.lower()
    if suffix not in PDF_SUFFIXES | IMAGE_SUFFIXES:
        return f"unsupported file type {suffix or '(no extension)'!r}; supported: {SUPPORTED}"
    return None


def unpack_zip(archive: Path, dest: Path, max_bytes: int = MAX_UNPACKED_BYTES, max_members: int = MAX_MEMBERS) -> Unpacked:
    """Unpack the documents in `archive` under `dest` (see the module's rules). Never raises for a bad zip:
    what could not be unpacked is in `skipped`, the zip itself when it cannot be read at all."""
    result = Unpacked(dest)
    where = str(archive)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        result.skipped.append(SkippedFile(where, f"not a readable zip file ({e})"))
        return result
    budget = max_bytes
    with zf:
        members = zf.infolist()
        if len(members) > max_members:
            result.skipped.append(SkippedFile(where, f"holds {len(members)} entries; only the first {max_members} were looked at"))
        for info in members[:max_members]:
            label = f"{where} → {info.filename}"
            if info.is_dir() or info.filename.startswith(_IGNORED):
                continue
            problem = member_problem(info)
            if problem is None and info.flag_bits & 0x1:
                problem = "encrypted; unpack it yourself and upload its files"
            if problem is None and info.file_size > budget:
                problem = _over_budget(max_bytes)
            if problem:
                result.skipped.append(SkippedFile(label, problem))
                continue
            parts = [p for p in PurePosixPath(info.filename.replace("\\", "/")).parts if p not in ("", ".")]
            target = dest.joinpath(*parts)
            if not target.resolve().is_relative_to(dest.resolve()):  # belt and braces after member_problem
                result.skipped.append(SkippedFile(label, "a path outside the zip's folder; not unpacked"))
                continue
            try:
                written = _copy_member(zf, info, target, limit=min(budget, info.file_size))
            except _TooBig:
                result.skipped.append(SkippedFile(label, "bigger than the zip says it is; not unpacked"))
                continue
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as e:
                result.skipped.append(SkippedFile(label, f"cannot be unpacked ({e.__class__.__name__}: {e})"))
                continue
            budget -= written
            result.files.append(target)
    log.info("unpacked %d documents from %s into %s (%d left out)", len(result.files), archive, dest, len(result.skipped))
    return result


def _over_budget(max_bytes: int) -> str:
    return f"would take the zip past {max_bytes / 1024**3:.1f} GB unpacked; not unpacked"


class _TooBig(Exception):
    pass


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limit: int) -> int:
    """Copy one member to `target` (atomically), stopping with _TooBig past `limit` bytes."""
    target.parent.mkdir(parents=True, exist_ok=True)

    def chunks():
        copied = 0
        with zf.open(info) as source:
            while chunk := source.read(CHUNK):
                copied += len(chunk)
                if copied > limit:
                    raise _TooBig()
                yield chunk

    return write_atomically(target, chunks())


def zip_folder(archive: Path, folder: Path) -> Path:
    """Where a zip's documents go: a folder of `folder` named after the zip (unpacking it again replaces it)."""
    return folder / f"{archive.stem.strip() or 'upload'} (zip)"


def ingest_with_zips(index, paths: list[Path], unpack_into: Path, progress: Progress | None = None, remove_zips: bool = False) -> IngestReport:
    """Ingest `paths` into `index` (a DocumentIndex), each zip among them unpacked first; one report.

    A zip's documents go to `unpack_into`/"<name> (zip)"/ and that folder is ingested. Members a zip
    left out come first in `report.skipped`, then the ingest's own skipped files. `remove_zips`
    deletes a zip once unpacked (for the app's own copy of an upload, never for a user's file).
    """
    to_ingest: list[Path] = []
    left_out: list[SkippedFile] = []
    for path in paths:
        if not (path.is_file() and path.suffix.lower() == ".zip"):
            to_ingest.append(path)
            continue
        if progress:
            progress(0, 0, f"unpacking {path.name}")
        folder = zip_folder(path, unpack_into)
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        elif folder.exists() or folder.is_symlink():
            folder.unlink()
        unpacked = unpack_zip(path, folder)
        left_out += unpacked.skipped
        if unpacked.files:
            to_ingest.append(folder)
            if remove_zips:
                path.unlink()
        elif not unpacked.skipped:  # an empty zip (or only folders): say so; otherwise the skips say why
            left_out.append(SkippedFile(str(path), "holds no PDF or page image"))
    report = index.ingest(to_ingest, progress=progress) if to_ingest else IngestReport()
    report.skipped = left_out + report.skipped
    return report
