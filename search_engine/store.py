"""The index folder's page records in SQLite (WAL), and the only code that writes them.

    <index>/config.json    IndexConfig, including FORMAT_VERSION (what decides the stored content)
    <index>/records.db     SQLite in WAL mode: THE source of truth (tables below)
    <index>/images/        page images, `<page_id>.jpg` (reference naming: the file name is the page id)
    <index>/lexical/       tantivy index over the page tokens (derived; lexical_tantivy.py)
    <index>/dense.faiss    FAISS checkpoint of the page vectors (derived; dense_store.py)
    <index>/multivectors.f16  late-interaction page vectors, float16 rows (multivector_store.py)
    <index>/manifest.json  summary for light readers: each source path -> content hash and page ids

Tables: `sources` (one row per source file: content hash, size, mtime, how many of its pages were
read, whether it is complete), `pages` (one row per page: id, size, vector, boxes; the integer `vid`
is the page's id in the dense and lexical indexes and is never reused), `terms` (per page: its
length in tokens and its term counts, for exact BM25; see `encode_terms`), `changes` (a log of vids
added and removed, in commit order), `meta` (what the derived indexes have applied of that log),
`multivectors` (late-interaction indexes only: per page vid the span of its rows in multivectors.f16,
committed with its page row; the page row's `vector` is then the normalised mean of those rows, for
the candidate stage).

Column order matters: a page row is ~13 KB (264 word boxes), so SQLite keeps most of it on overflow
pages that it must walk in order. The small columns and the vector come first and the boxes last, so
a hit's metadata or a vector is read without touching the boxes; the term counts that exact BM25
reads for 100 candidates a query sit in their own narrow table (~2 KB a page).

Nothing per page is held in memory: a page is read by id when asked for (`page`, `pages_by_vid`).

Crash safety:
- A chunk of pages (or a removal) is one SQLite transaction: its page rows, the source row's
  progress and the change-log rows commit together or not at all. A killed ingest leaves the last
  committed chunk; the next ingest resumes after it (`sources.pages_read`).
- Page images are written before the transaction that names them and deleted after the one that
  drops them, so a record never names a missing image; `remove_orphan_images` deletes leftovers
  at the start of the next change after one that did not finish (`begin_changes`): listing a
  million images costs seconds, which a 10-page add should not pay.
- Multi-vectors of late-interaction pages are appended to multivectors.f16 and fsynced before the
  transaction that names their spans; a tail no transaction named is cut by the next writer
  (multivector_store.py).
- The dense and lexical indexes are derived from the records and the change log. Each records
  how far into the log it is (`dense.faiss`'s sidecar, `meta.lexical_seq`); whoever opens the index
  catches up from there, so a kill between the records' commit and theirs loses nothing.
- Writers (ingest, remove) in different processes take turns through an flock on <index>/.lock.
  Readers never block: WAL readers see the last committed state while a writer works.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import orjson

from .types import Page, TextBox

if TYPE_CHECKING:
    import numpy as np
# numpy is imported by the methods that move vectors: reading a manifest (the app's index discovery,
# read_sources) needs none of it, and the app's first page then starts ~0.1 s sooner.

log = logging.getLogger(__name__)

RECORDS_FILE = "records.db"
CHANGES_MARKER = ".changes-unfinished"  # see IndexStore.begin_changes
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources(
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, n_pages INTEGER NOT NULL, pages_read INTEGER NOT NULL,
    complete INTEGER NOT NULL, stem TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pages(
    vid INTEGER PRIMARY KEY, page_id TEXT UNIQUE NOT NULL, source_id INTEGER NOT NULL,
    page INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, text_source TEXT NOT NULL,
    vector BLOB NOT NULL, boxes TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS pages_by_source ON pages(source_id, page);
CREATE TABLE IF NOT EXISTS terms(vid INTEGER PRIMARY KEY, length INTEGER NOT NULL, counts BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS multivectors(vid INTEGER PRIMARY KEY, start INTEGER NOT NULL, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS changes(seq INTEGER PRIMARY KEY AUTOINCREMENT, vid INTEGER NOT NULL, added INTEGER NOT NULL);
"""


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
class SourceState:
    """One indexed source file: what it was (hash, size, mtime) and how far it was read."""

    path: str  # absolute
    sha256: str
    size: int
    mtime_ns: int
    n_pages: int
    pages_read: int = 0  # source pages read so far (indexed or failed); a resume starts after them
    complete: bool = False
    stem: str = ""  # page ids are `{stem}_{page}` (PDF) or `stem` (image)


@dataclass
class Chunk:
    """Pages of one source to commit, with their vectors and lexical tokens (what a backend needs)."""

    state: SourceState  # the source's progress after this chunk
    pages: list[Page]
    vectors: np.ndarray  # (len(pages), dim)
    tokens: list[list[str]]
    multivectors: list[np.ndarray] | None = None  # late interaction: per page (n_i, dim') unit rows


@dataclass(frozen=True)
class HitMeta:
    """What a search hit needs of its page, without its boxes."""

    page_id: str
    source: str
    page: int


def encode_boxes(boxes: list[TextBox]) -> str:
    """Compact boxes as JSON, [text, x1, y1, x2, y2, confidence] each (orjson: several times the json
    module's speed; dataclasses.asdict on 500 words cost more than rendering the page)."""
    return orjson.dumps([(b.text, *b.box, b.confidence) for b in boxes]).decode()


def decode_boxes(data: str) -> list[TextBox]:
    return [TextBox(text, (x1, y1, x2, y2), confidence) for text, x1, y1, x2, y2, confidence in orjson.loads(data)]


def term_hash(token: str) -> int:
    """A stable 64-bit id of a token (the same in every process, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")


def encode_terms(tokens: list[str]) -> tuple[int, bytes]:
    """(length, counts) of a page's tokens: counts is its distinct term ids (uint64, sorted) followed
    by their counts (uint16, capped at 65,535, far past where BM25 saturates). 10 bytes a term."""
    import numpy as np

    counts = Counter(tokens)
    ids = np.fromiter((term_hash(t) for t in counts), np.uint64, len(counts))
    tfs = np.fromiter(counts.values(), np.int64, len(counts)).clip(0, 65_535).astype(np.uint16)
    order = np.argsort(ids)
    return len(tokens), ids[order].tobytes() + tfs[order].tobytes()


def term_frequency_table(pages: list[bytes], query_ids: np.ndarray) -> np.ndarray:
    """How often each of `query_ids` (uint64 term ids) occurs in each page encoded by `encode_terms`,
    (pages, query terms) float32: the pages' term ids joined into one array and compared with each
    query term (a page holds a term at most once)."""
    import numpy as np

    query_ids = np.asarray(query_ids, np.uint64)
    sizes = np.array([len(c) // 10 for c in pages], np.int64)
    out = np.zeros((len(pages), len(query_ids)), np.float32)
    if not sizes.sum() or not len(query_ids):
        return out
    ids = np.concatenate([np.frombuffer(c, np.uint64, n) for c, n in zip(pages, sizes)])
    tfs = np.concatenate([np.frombuffer(c, np.uint16, n, offset=8 * int(n)) for c, n in zip(pages, sizes)])
    row_ends = np.cumsum(sizes)
    for column, term in enumerate(query_ids):  # a handful of query terms
        at = np.flatnonzero(ids == term)
        out[np.searchsorted(row_ends, at, side="right"), column] = tfs[at]
    return out


PAGE_COUNT = "page_count"  # meta key: the number of rows in pages, changed in the transactions that change them


def _count_pages(db: sqlite3.Connection, delta: int) -> None:
    """Keep the page counter in step with a change of `delta` pages, inside that change's transaction
    (after it). Records written before the counter existed get it counted here, once: count(*) reads
    every row, 15 s at a million pages when the file is not in the page cache."""
    if db.execute(f"UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = '{PAGE_COUNT}'", (delta,)).rowcount == 0:
        db.execute(f"INSERT INTO meta(key, value) VALUES ('{PAGE_COUNT}', (SELECT count(*) FROM pages))")


MANIFEST_MAX_PAGES = 100_000  # past this, manifest.json names no pages (rewriting it would cost seconds)


def write_manifest(path: Path, format_version: int, sources: dict[str, tuple[str, bool, list[str]]],
                   pages: int | None = None) -> None:
    """manifest.json: {source path: {"sha256", "pages": [page ids], "complete"}}, for light readers
    that must not open the index. An index of more than MANIFEST_MAX_PAGES pages gets a manifest with
    `"listed": false` and no sources: `read_sources` reads the records instead."""
    pages = sum(len(p) for _, _, p in sources.values()) if pages is None else pages
    listed = pages <= MANIFEST_MAX_PAGES
    data = {"format_version": format_version, "pages": pages, "listed": listed, "sources": {
        p: {"sha256": sha, "pages": ids, "complete": complete}
        for p, (sha, complete, ids) in sorted(sources.items())} if listed else {}}
    atomic_write(path, json.dumps(data, indent=1, ensure_ascii=False).encode())


def read_sources(folder: Path) -> dict[str, dict]:
    """{source path: {"sha256", "pages": [page ids], "complete"}} of an index folder, without opening
    the index (no models, no retrievers, no writer lock): from the records when they are local, else
    from manifest.json. {} when the folder holds no readable index."""
    folder = Path(folder)
    try:
        backend = json.loads((folder / "config.json").read_text()).get("backend", "local")
    except (OSError, ValueError, AttributeError):
        backend = "local"
    if backend == "local" and (folder / RECORDS_FILE).exists():
        try:
            db = sqlite3.connect(f"file:{folder / RECORDS_FILE}?mode=ro", uri=True, timeout=10)
            try:
                rows = db.execute("SELECT s.path, s.sha256, s.complete, p.page_id FROM sources s "
                                  "LEFT JOIN pages p ON p.source_id = s.id ORDER BY s.path, p.page").fetchall()
            finally:
                db.close()
            found: dict[str, dict] = {}
            for path, sha, complete, page_id in rows:
                entry = found.setdefault(path, {"sha256": sha, "pages": [], "complete": bool(complete)})
                if page_id is not None:
                    entry["pages"].append(page_id)
            return found
        except sqlite3.Error as e:
            log.info("cannot read the records of %s: %s", folder, e)
    try:
        sources = json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("sources", {})
        return sources if isinstance(sources, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


class IndexStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.images_dir = self.folder / "images"
        self.config_path = self.folder / "config.json"
        self.manifest_path = self.folder / "manifest.json"
        self.db_path = self.folder / RECORDS_FILE
        self._db: sqlite3.Connection | None = None
        self._lock = threading.RLock()  # one connection, shared by the threads of a server or the app

    # ---- the folder --------------------------------------------------------------------------------
    def create(self, config: dict) -> None:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.config_path, json.dumps(config, indent=2).encode(), durable=True)

    def read_config(self) -> dict | None:
        try:
            return json.loads(self.config_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("unreadable %s (%s): treating the index as outdated", self.config_path, e)
            return {}

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

    @contextlib.contextmanager
    def try_writer_lock(self):
        """The writer lock if it is free right now, else None (a reader never waits for a writer)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def wipe(self) -> None:
        """Delete everything this store and the derived indexes own (never other files a user put there)."""
        self.close()
        for path in (self.images_dir, self.folder / "lexical", self.folder / "sources"):
            shutil.rmtree(path, ignore_errors=True)
        for name in (RECORDS_FILE, f"{RECORDS_FILE}-wal", f"{RECORDS_FILE}-shm", "config.json", "manifest.json",
                     "dense.faiss", "dense.json", "dense.npz", "multivectors.f16", CHANGES_MARKER):
            (self.folder / name).unlink(missing_ok=True)
        for path in self.folder.glob("dense-*.faiss"):
            path.unlink(missing_ok=True)

    # ---- SQLite --------------------------------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=60)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a killed process loses nothing committed; only a power cut may lose
            # the last transactions (never corrupting the file).
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            self._db = db
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextlib.contextmanager
    def transaction(self):
        with self._lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _query(self, sql: str, args: Iterable = ()) -> list[tuple]:
        with self._lock:
            return self.db.execute(sql, tuple(args)).fetchall()

    def data_version(self) -> int:
        """Changes when another connection (another process) commits."""
        with self._lock:
            return self.db.execute("PRAGMA data_version").fetchone()[0]

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def get_metas(self, keys: tuple[str, ...], default: str) -> list[str]:
        """Several meta values in one read, in the order of `keys`."""
        found = dict(self._query(f"SELECT key, value FROM meta WHERE key IN ({','.join('?' * len(keys))})", keys))
        return [found.get(k, default) for k in keys]

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # ---- sources -------------------------------------------------------------------------------------
    def sources(self) -> dict[str, SourceState]:
        rows = self._query("SELECT path, sha256, size, mtime_ns, n_pages, pages_read, complete, stem FROM sources")
        return {r[0]: SourceState(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7]) for r in rows}

    def update_source(self, state: SourceState) -> None:
        with self.transaction() as db:
            self._upsert_source(db, state)

    def _upsert_source(self, db: sqlite3.Connection, s: SourceState) -> int:
        db.execute(
            "INSERT INTO sources(path, sha256, size, mtime_ns, n_pages, pages_read, complete, stem) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET sha256 = excluded.sha256, "
            "size = excluded.size, mtime_ns = excluded.mtime_ns, n_pages = excluded.n_pages, "
            "pages_read = excluded.pages_read, complete = excluded.complete, stem = excluded.stem",
            (s.path, s.sha256, s.size, s.mtime_ns, s.n_pages, s.pages_read, int(s.complete), s.stem),
        )
        return db.execute("SELECT id FROM sources WHERE path = ?", (s.path,)).fetchone()[0]

    def source_page_ids(self, path: str) -> list[str]:
        return [r[0] for r in self._query(
            "SELECT p.page_id FROM pages p JOIN sources s ON s.id = p.source_id WHERE s.path = ? ORDER BY p.page", (path,))]

    # ---- pages ---------------------------------------------------------------------------------------
    def next_vid(self) -> int:
        """One past every vid ever handed out. Vids are handed out in increasing order, so the largest
        is a live page's (the rowid's last entry), the change log's last addition, or one whose log rows
        were forgotten (meta next_vid, kept by `forget_changes`); a removal logs a vid added before it.
        Each is one step down a b-tree, not a scan: at a million pages the log holds a million rows."""
        used = self._query("SELECT max(v) FROM (SELECT max(vid) AS v FROM pages UNION ALL SELECT "
                           "(SELECT vid FROM changes WHERE added = 1 ORDER BY seq DESC LIMIT 1))")[0][0]
        return int(self.get_meta("next_vid", "0")) if used is None else max(int(used) + 1, int(self.get_meta("next_vid", "0")))

    def commit_pages(self, chunks: list[tuple[SourceState, list[int], list[Page], np.ndarray, list[list[str]]]],
                     spans: dict[int, tuple[int, int]] | None = None) -> None:
        """Chunks of sources (state, vids, pages, vectors, lexical tokens): their pages and the sources'
        progress, in one transaction. Each page keeps its term counts, for exact BM25 (backend_local).
        `spans`: vid -> (start, n) of its multi-vector rows, already written (multivector_store.py)."""
        import numpy as np

        with self.transaction() as db:
            for state, vids, pages, vectors, tokens in chunks:
                vectors = np.ascontiguousarray(vectors, dtype=np.float32)
                source_id = self._upsert_source(db, state)
                db.executemany(
                    "INSERT INTO pages(vid, page_id, source_id, page, width, height, text_source, vector, boxes) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(vid, p.page_id, source_id, p.page, p.width, p.height, p.text_source, vectors[i].tobytes(),
                      encode_boxes(p.boxes)) for i, (vid, p) in enumerate(zip(vids, pages))],
                )
                db.executemany("INSERT INTO terms(vid, length, counts) VALUES (?, ?, ?)",
                               [(vid, *encode_terms(t)) for vid, t in zip(vids, tokens)])
                db.executemany("INSERT INTO changes(vid, added) VALUES (?, 1)", [(v,) for v in vids])
            _count_pages(db, sum(len(vids) for _, vids, _, _, _ in chunks))
            if spans:
                db.executemany("INSERT INTO multivectors(vid, start, n) VALUES (?, ?, ?)",
                               [(vid, start, n) for vid, (start, n) in spans.items()])
                end = max(start + n for start, n in spans.values())
                db.execute("INSERT INTO meta(key, value) VALUES ('multivector_rows', ?) ON CONFLICT(key) DO UPDATE "
                           "SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))", (str(end),))

    def delete_source(self, path: str) -> list[tuple[int, str]]:
        """Drop a source and its pages in one transaction; returns their (vid, page id)."""
        with self.transaction() as db:
            row = db.execute("SELECT id FROM sources WHERE path = ?", (path,)).fetchone()
            if row is None:
                return []
            gone = db.execute("SELECT vid, page_id FROM pages WHERE source_id = ? ORDER BY page", (row[0],)).fetchall()
            db.execute("DELETE FROM terms WHERE vid IN (SELECT vid FROM pages WHERE source_id = ?)", (row[0],))
            db.execute("DELETE FROM multivectors WHERE vid IN (SELECT vid FROM pages WHERE source_id = ?)", (row[0],))
            db.execute("DELETE FROM pages WHERE source_id = ?", (row[0],))
            db.execute("DELETE FROM sources WHERE id = ?", (row[0],))
            db.executemany("INSERT INTO changes(vid, added) VALUES (?, 0)", [(v,) for v, _ in gone])
            _count_pages(db, -len(gone))
        return gone

    def delete_page(self, page_id: str) -> int | None:
        """Drop one page (its source stays indexed, without it, until the file changes)."""
        with self.transaction() as db:
            row = db.execute("SELECT vid FROM pages WHERE page_id = ?", (page_id,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM pages WHERE vid = ?", (row[0],))
            db.execute("DELETE FROM terms WHERE vid = ?", (row[0],))
            db.execute("DELETE FROM multivectors WHERE vid = ?", (row[0],))
            db.execute("INSERT INTO changes(vid, added) VALUES (?, 0)", (row[0],))
            _count_pages(db, -1)
        return row[0]

    def count(self) -> int:
        """Pages in the records: the counter kept with them (see `_count_pages`), else counted."""
        kept = self.get_meta(PAGE_COUNT)
        return int(kept) if kept is not None else self._query("SELECT count(*) FROM pages")[0][0]

    def _page(self, row: tuple) -> Page:
        page_id, source, page, width, height, text_source, boxes = row
        return Page(page_id, source, page, str(self.image_path(page_id)), width, height, text_source, decode_boxes(boxes))

    _PAGE_COLUMNS = "p.page_id, s.path, p.page, p.width, p.height, p.text_source, p.boxes"

    def page(self, page_id: str) -> Page | None:
        rows = self._query(f"SELECT {self._PAGE_COLUMNS} FROM pages p JOIN sources s ON s.id = p.source_id "
                           "WHERE p.page_id = ?", (page_id,))
        return self._page(rows[0]) if rows else None

    def iter_pages(self) -> Iterator[Page]:
        """Every page, in source and page order (read in batches: fine for thousands, slow for millions)."""
        last = ("", 0)
        while True:
            rows = self._query(f"SELECT {self._PAGE_COLUMNS} FROM pages p JOIN sources s ON s.id = p.source_id "
                               "WHERE (s.path, p.page) > (?, ?) ORDER BY s.path, p.page LIMIT 1000", last)
            if not rows:
                return
            yield from (self._page(r) for r in rows)
            last = (rows[-1][1], rows[-1][2])

    def hit_meta(self, vids: list[int]) -> dict[int, HitMeta]:
        if not vids:
            return {}
        marks = ",".join("?" * len(vids))
        rows = self._query(f"SELECT p.vid, p.page_id, s.path, p.page FROM pages p JOIN sources s ON s.id = p.source_id "
                           f"WHERE p.vid IN ({marks})", vids)
        return {r[0]: HitMeta(r[1], r[2], r[3]) for r in rows}

    def taken_page_ids(self, page_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(page_ids), 500):
            part = page_ids[start : start + 500]
            found.update(r[0] for r in self._query(
                f"SELECT page_id FROM pages WHERE page_id IN ({','.join('?' * len(part))})", part))
        return found

    # ---- the change log, for the derived indexes -----------------------------------------------------
    def last_seq(self) -> int:
        return self._query("SELECT coalesce(max(seq), 0) FROM changes")[0][0] or int(self.get_meta("log_base", "0"))

    def changes_since(self, seq: int, limit: int = 50_000) -> list[tuple[int, int, bool]]:
        """(seq, vid, added) after `seq`, in order, at most `limit`."""
        return [(s, v, bool(a)) for s, v, a in self._query(
            "SELECT seq, vid, added FROM changes WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))]

    def page_tokens_source(self, vids: list[int]) -> dict[int, str]:
        """The boxes (text) of live pages, for the lexical index to (re)index them."""
        found: dict[int, str] = {}
        for start in range(0, len(vids), 500):
            part = vids[start : start + 500]
            for vid, boxes in self._query(f"SELECT vid, boxes FROM pages WHERE vid IN ({','.join('?' * len(part))})", part):
                found[vid] = "\n".join(b.text for b in decode_boxes(boxes))
        return found

    def term_counts(self, vids: list[int], tokens: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What exact BM25 needs of candidate pages: (vids found, their lengths in tokens, their
        counts of each of `tokens`, shaped (pages, tokens)). Pages removed meanwhile are left out."""
        import numpy as np

        query_ids = np.array([term_hash(t) for t in tokens], np.uint64)
        marks = ",".join("?" * len(vids))
        rows = self._query(f"SELECT vid, length, counts FROM terms WHERE vid IN ({marks})", [int(v) for v in vids])
        found = np.array([r[0] for r in rows], np.int64)
        lengths = np.array([r[1] for r in rows], np.float32)
        tf = term_frequency_table([r[2] for r in rows], query_ids)
        return found, lengths, tf

    def vectors(self, vids: list[int]) -> dict[int, np.ndarray]:
        import numpy as np

        found: dict[int, np.ndarray] = {}
        for start in range(0, len(vids), 500):
            part = vids[start : start + 500]
            for vid, blob in self._query(f"SELECT vid, vector FROM pages WHERE vid IN ({','.join('?' * len(part))})", part):
                found[vid] = np.frombuffer(blob, dtype=np.float32)
        return found

    def multivector_spans(self) -> list[tuple[int, int, int]]:
        """(vid, start, n) of every live page's multi-vector rows (none for single-vector indexes)."""
        return self._query("SELECT vid, start, n FROM multivectors")

    def multivector_end(self) -> int:
        """One past the last multi-vector row a committed transaction ever named (removed pages included:
        a reader that has not refreshed yet may still read their rows)."""
        return int(self.get_meta("multivector_rows", "0"))

    def iter_vectors(self, batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(vids, vectors) of every live page, in vid order."""
        import numpy as np

        last = -1
        while True:
            rows = self._query("SELECT vid, vector FROM pages WHERE vid > ? ORDER BY vid LIMIT ?", (last, batch))
            if not rows:
                return
            yield np.array([r[0] for r in rows], np.int64), np.vstack([np.frombuffer(r[1], np.float32) for r in rows])
            last = rows[-1][0]

    def forget_changes(self, through: int) -> None:
        """Drop log rows every derived index has applied (the next vid is kept in meta)."""
        with self.transaction() as db:
            row = db.execute("SELECT max(vid) FROM changes WHERE seq <= ?", (through,)).fetchone()
            if row[0] is not None:
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('next_vid', ?)",
                           (str(max(int(row[0]) + 1, int(self.get_meta("next_vid", "0")))),))
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('log_base', ?)", (str(through),))
            db.execute("DELETE FROM changes WHERE seq <= ?", (through,))

    # ---- page images ---------------------------------------------------------------------------------
    def image_path(self, page_id: str) -> Path:
        return self.images_dir / f"{page_id}.jpg"

    def write_image(self, page_id: str, jpeg: bytes) -> Path:
        path = self.image_path(page_id)
        atomic_write(path, jpeg)
        return path

    def delete_image(self, page_id: str) -> None:
        self.image_path(page_id).unlink(missing_ok=True)

    def begin_changes(self) -> bool:
        """Mark the folder as being changed (an ingest or a removal: a file in the folder, under the
        writer lock); True if the last change never finished (killed, or it raised), so that images
        it wrote for pages never committed, or left after dropping their pages, may be lying around."""
        marker = self.folder / CHANGES_MARKER
        unfinished = marker.exists()
        if not unfinished:
            atomic_write(marker, b"the index is being changed, or its last change did not finish\n")
        return unfinished

    def end_changes(self) -> None:
        """The change finished: its images are all named by committed pages, or deleted."""
        (self.folder / CHANGES_MARKER).unlink(missing_ok=True)

    def remove_orphan_images(self, is_page: callable) -> int:
        """Delete images (and temp files) no page refers to: leftovers of an interrupted ingest."""
        removed = 0
        names = [p for p in self.images_dir.iterdir()] if self.images_dir.is_dir() else []
        stems = [p.stem for p in names if p.suffix == ".jpg" and not p.name.startswith(".")]
        known = is_page(stems)
        for path in names:
            if path.name.startswith(".") or path.suffix != ".jpg" or path.stem not in known:
                path.unlink(missing_ok=True)
                removed += 1
        for path in self.folder.glob(".*.tmp*"):
            path.unlink(missing_ok=True)
        return removed

    # ---- manifest (for light readers: pages/common.index_sources) ------------------------------------
    def write_manifest(self, format_version: int) -> None:
        count = self.count()
        if count > MANIFEST_MAX_PAGES:
            write_manifest(self.manifest_path, format_version, {}, pages=count)
            return
        sources: dict[str, tuple[str, bool, list[str]]] = {}
        rows = self._query("SELECT s.path, s.sha256, s.complete, p.page_id FROM sources s "
                           "LEFT JOIN pages p ON p.source_id = s.id ORDER BY s.path, p.page")
        for path, sha, complete, page_id in rows:
            entry = sources.setdefault(path, (sha, bool(complete), []))
            if page_id is not None:
                entry[2].append(page_id)
        write_manifest(self.manifest_path, format_version, sources)

    def known_sources(self) -> list[str]:
        """Source paths named by the manifest, the records or a previous format's records, read leniently
        (any format version): what an outdated index is rebuilt from."""
        found: set[str] = set()
        try:
            found.update(json.loads(self.manifest_path.read_text()).get("sources", {}))
        except (OSError, ValueError, AttributeError):
            pass
        for path in (self.folder / "sources").glob("*.json"):  # format 2: one JSON record per source
            try:
                found.add(str(json.loads(path.read_bytes())["source"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass
        if self.db_path.exists():
            try:
                found.update(self.sources())
            except sqlite3.Error:
                pass
        return sorted(found)
