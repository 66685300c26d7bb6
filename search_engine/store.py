"""The index folder on disk, and the only code that writes to it.

    <index>/config.json          IndexConfig, including FORMAT_VERSION
    <index>/sources/<key>.json   one record per source file: its content hash, its pages (text + boxes)
                                 and their vectors. THE source of truth; <key> = sha1 of the source path
    <index>/images/<page_id>.jpg page images (reference naming: the file name is the page id)
    <index>/dense.npz            FAISS index checkpoint (rebuilt from the records if stale or missing)
    <index>/manifest.json        summary: each source path -> content hash and page ids

Crash safety: every file is written to a temporary name and moved into place with os.replace, so a
reader sees the old or the new version, never half of one. A source is committed by writing its
record last (after its images); a record is removed before its images. A long PDF is committed in
chunks: its record is rewritten with `complete: false` after each chunk of pages, and `complete: true`
after the last. A killed ingest therefore leaves at most unreferenced images, which
`remove_orphan_images` deletes when the next ingest starts, and that ingest redoes at most the chunk
that was in progress, resuming inside the file. Writers (ingest, remove) in different
processes take turns through an flock on <index>/.lock; readers never block.
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .types import Page, TextBox

log = logging.getLogger(__name__)


def atomic_write(path: Path, data: bytes, durable: bool = False) -> None:
    """Write `data` to `path` so that readers never see a partial file. `durable` also fsyncs."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class SourceRecord:
    """One indexed source file: what it was (hash, size, mtime) and the pages it gave."""

    source: str  # absolute path
    sha256: str
    size: int
    mtime_ns: int
    vids: list[int]  # internal int id of each page in the dense and lexical indexes
    pages: list[Page]
    vectors: np.ndarray  # (len(pages), dim) float32
    complete: bool = True  # False while a long PDF is committed chunk by chunk
    pages_read: int = 0  # source pages read so far (indexed or failed); the next run resumes after them
    stem: str = ""  # page ids are `{stem}_{page}` (PDF) or `stem` (image)

    def to_json(self, folder: Path) -> bytes:
        pages = [_page_to_json(page, folder) for page in self.pages]
        vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        return json.dumps(
            {
                "source": self.source, "sha256": self.sha256, "size": self.size, "mtime_ns": self.mtime_ns,
                "vids": self.vids, "pages": pages, "complete": self.complete,
                "pages_read": self.pages_read, "stem": self.stem,
                "vectors": {"shape": list(vectors.shape), "float32_base64": base64.b64encode(vectors.tobytes()).decode()},
            },
            ensure_ascii=False,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, folder: Path) -> "SourceRecord":
        d = json.loads(data)
        pages = [_page_from_json(p, folder) for p in d["pages"]]
        raw = base64.b64decode(d["vectors"]["float32_base64"])
        vectors = np.frombuffer(raw, dtype=np.float32).reshape(d["vectors"]["shape"]).copy()
        return cls(d["source"], d["sha256"], int(d["size"]), int(d["mtime_ns"]), list(d["vids"]), pages, vectors,
                   bool(d.get("complete", True)), int(d.get("pages_read", len(pages))), str(d.get("stem", "")))


# Pages are stored with compact boxes, [text, x1, y1, x2, y2, confidence], and an image path relative
# to the index folder (so the folder can move). A 500-word PDF page has 500 boxes: dataclasses.asdict
# on them cost more than rendering the page.
_PAGE_FIELDS = ("page_id", "source", "page", "width", "height", "text_source")


def _page_to_json(page: Page, folder: Path) -> dict:
    d = {name: getattr(page, name) for name in _PAGE_FIELDS}
    d["image_file"] = os.path.relpath(page.image_file, folder)
    d["boxes"] = [[b.text, *b.box, b.confidence] for b in page.boxes]
    return d


def _page_from_json(d: dict, folder: Path) -> Page:
    boxes = [TextBox(text, (x1, y1, x2, y2), confidence) for text, x1, y1, x2, y2, confidence in d["boxes"]]
    return Page(**{name: d[name] for name in _PAGE_FIELDS}, image_file=str(folder / d["image_file"]), boxes=boxes)


class IndexStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.sources_dir = self.folder / "sources"
        self.images_dir = self.folder / "images"
        self.config_path = self.folder / "config.json"
        self.manifest_path = self.folder / "manifest.json"
        self.dense_path = self.folder / "dense.npz"

    def create(self, config: dict) -> None:
        self.sources_dir.mkdir(parents=True, exist_ok=True)
        self.images_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.config_path, json.dumps(config, indent=2).encode(), durable=True)

    @contextlib.contextmanager
    def writer_lock(self):
        """Exclusive across processes (and DocumentIndex objects) while held; blocks until free."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another process writing to %s", self.folder)
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def stamp(self) -> tuple:
        """Changes whenever a record or the dense checkpoint is written or removed by anyone."""
        def mtime(path: Path) -> int:
            try:
                return path.stat().st_mtime_ns
            except FileNotFoundError:
                return 0
        return mtime(self.sources_dir), mtime(self.dense_path), mtime(self.config_path)

    def read_config(self) -> dict | None:
        try:
            return json.loads(self.config_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("unreadable %s (%s): treating the index as outdated", self.config_path, e)
            return {}

    def wipe(self) -> None:
        """Delete everything this store owns in the folder (never other files a user put there)."""
        for path in (self.sources_dir, self.images_dir):
            shutil.rmtree(path, ignore_errors=True)
        for path in (self.config_path, self.manifest_path, self.dense_path):
            path.unlink(missing_ok=True)

    # ---- source records ----------------------------------------------------------------------------
    def _record_path(self, source: str) -> Path:
        return self.sources_dir / (hashlib.sha1(source.encode()).hexdigest()[:20] + ".json")

    def load_records(self) -> list[SourceRecord]:
        records = []
        for path in sorted(self.sources_dir.glob("*.json")):
            try:
                records.append(SourceRecord.from_json(path.read_bytes(), self.folder))
            except (OSError, ValueError, KeyError) as e:  # cannot happen with atomic writes; be loud if it does
                log.error("ignoring unreadable record %s: %s (its source will be re-ingested)", path, e)
        return records

    def write_record(self, record: SourceRecord) -> None:
        atomic_write(self._record_path(record.source), record.to_json(self.folder), durable=True)

    def delete_record(self, source: str) -> None:
        self._record_path(source).unlink(missing_ok=True)

    # ---- page images -------------------------------------------------------------------------------
    def image_path(self, page_id: str) -> Path:
        return self.images_dir / f"{page_id}.jpg"

    def write_image(self, page_id: str, jpeg: bytes) -> Path:
        path = self.image_path(page_id)
        atomic_write(path, jpeg)
        return path

    def delete_image(self, page_id: str) -> None:
        self.image_path(page_id).unlink(missing_ok=True)

    def remove_orphan_images(self, referenced: set[str]) -> int:
        """Delete images (and temp files) no record refers to: leftovers of an interrupted ingest."""
        removed = 0
        for path in self.images_dir.iterdir():
            if str(path) not in referenced:
                path.unlink(missing_ok=True)
                removed += 1
        for path in self.folder.glob(".*.tmp*"):
            path.unlink(missing_ok=True)
        return removed

    # ---- manifest ----------------------------------------------------------------------------------
    def write_manifest(self, records: list[SourceRecord], format_version: int) -> None:
        sources = {r.source: {"sha256": r.sha256, "pages": [p.page_id for p in r.pages], "complete": r.complete}
                   for r in records}
        data = {"format_version": format_version, "sources": dict(sorted(sources.items()))}
        atomic_write(self.manifest_path, json.dumps(data, indent=1, ensure_ascii=False).encode())

    def known_sources(self) -> list[str]:
        """Source paths named by the manifest or any record, read leniently (any format version):
        what an outdated index is rebuilt from."""
        found: set[str] = set()
        try:
            found.update(json.loads(self.manifest_path.read_text()).get("sources", {}))
        except (OSError, ValueError, AttributeError):
            pass
        for path in self.sources_dir.glob("*.json"):
            try:
                found.add(str(json.loads(path.read_bytes())["source"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return sorted(found)
