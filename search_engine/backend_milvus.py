"""The Milvus backend: page records, vectors and BM25 in Milvus, for indexes past one machine.

Selected by `IndexConfig(backend="milvus", milvus_uri=...)` (CLI: `--backend milvus --milvus-uri URI`).
The URI is a Milvus standalone or cluster (`http://host:19530`) or a local Milvus Lite data path
ending in `.db` (started in this process by pymilvus). Two collections, named from the index folder
(or `milvus_collection`):

    <name>_pages    vid (INT64, primary), page_id, source, page, width, height, text_source,
                    boxes (JSON text), text (analysed by jieba + lowercase: Chinese and English),
                    sparse (BM25, computed by Milvus from `text` with its built-in BM25 function),
                    vector (FLOAT_VECTOR, inner product on unit vectors = cosine)
    <name>_sources  path (primary), content hash, size, mtime, pages read, complete, stem

The index folder keeps config.json, the page images and manifest.json, as with the local backend, so
the HTTP API serves images the same way. Page vids are a hash of the page id, so writing a chunk
again after a kill is an upsert, not a duplicate: pages are written first, then the source's
progress, and a resumed ingest rewrites at most the chunk in flight. Collections use Strong
consistency, so a search sees every write before it. One writer at a time is enforced by the
index folder's lock (writers on several machines need to share that folder).

Fusion: with `fusion.method == "score"` (the default) the two rankings come back from Milvus and are
fused here exactly as for the local backend; with "rrf" Milvus fuses them itself (`hybrid_search`
with its RRFRanker), and hits carry the fused score only. Milvus tokenises with jieba (words), where
the local backend uses character bigrams; bench/RESULTS.md gives the retrieval figures of both.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from .config import IndexConfig
from .store import MANIFEST_MAX_PAGES, Chunk, HitMeta, IndexStore, SourceState, decode_boxes, encode_boxes, write_manifest
from .types import Page

log = logging.getLogger(__name__)

MAX_VARCHAR = 65_535
ANALYZER = {"tokenizer": "jieba", "filter": ["lowercase"]}
BATCH = 500


class MilvusError(ConnectionError):
    """Milvus cannot be reached or refused a request; the message names the URI."""


def page_vid(page_id: str) -> int:
    """A stable positive int64 for a page id (Milvus primary key): upserts stay idempotent."""
    return int.from_bytes(hashlib.blake2b(page_id.encode(), digest_size=8).digest(), "big") >> 1


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a Milvus filter string literal


class MilvusBackend:
    name = "milvus"

    def __init__(self, folder: Path, config: IndexConfig):
        if not config.milvus_uri:
            raise ValueError("the milvus backend needs a URI: IndexConfig.milvus_uri (--milvus-uri), e.g. "
                             "http://host:19530 or a local Milvus Lite path ending in .db")
        self.folder = Path(folder)
        self.config = config
        self.images = IndexStore(self.folder)  # config.json, lock, page images, manifest (no records.db)
        prefix = config.milvus_collection or re.sub(r"[^A-Za-z0-9_]", "_", self.folder.name) or "vrag"
        if not re.match(r"[A-Za-z_]", prefix):
            prefix = "vrag_" + prefix
        self.pages_name, self.sources_name = f"{prefix}_pages", f"{prefix}_sources"
        self._client = None
        self._dim: int | None = None

    # ---- connection and collections ------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            from pymilvus import MilvusClient

            uri = self.config.milvus_uri
            if uri.endswith(".db"):
                Path(uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
            try:
                self._client = MilvusClient(uri=str(Path(uri).expanduser()) if uri.endswith(".db") else uri)
            except Exception as e:  # pymilvus raises MilvusException or grpc errors
                raise MilvusError(f"cannot connect to Milvus at {uri}: {e}") from e
        return self._client

    def load(self) -> None:
        """Create the collections if missing, and load them (Milvus searches only loaded collections;
        a server keeps them released after a restart)."""
        if self.client.has_collection(self.pages_name):
            fields = self.client.describe_collection(self.pages_name)["fields"]
            self._dim = next((int(f["params"]["dim"]) for f in fields if f["name"] == "vector"), None)
            self.client.load_collection(self.pages_name)
        if not self.client.has_collection(self.sources_name):
            self._create_sources()
        else:
            self.client.load_collection(self.sources_name)

    def _create_sources(self) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False)
        schema.add_field("path", DataType.VARCHAR, is_primary=True, max_length=4096)
        schema.add_field("state", DataType.VARCHAR, max_length=MAX_VARCHAR)  # SourceState as JSON
        schema.add_field("dummy", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector in every collection
        index = self.client.prepare_index_params()
        index.add_index("dummy", index_type="FLAT", metric_type="L2")
        self.client.create_collection(self.sources_name, schema=schema, index_params=index, consistency_level="Strong")

    def _create_pages(self, dim: int) -> None:
        from pymilvus import DataType, Function, FunctionType

        schema = self.client.create_schema(auto_id=False)
        schema.add_field("vid", DataType.INT64, is_primary=True)
        schema.add_field("page_id", DataType.VARCHAR, max_length=1024)
        schema.add_field("source", DataType.VARCHAR, max_length=4096)
        schema.add_field("page", DataType.INT64)
        schema.add_field("width", DataType.INT64)
        schema.add_field("height", DataType.INT64)
        schema.add_field("text_source", DataType.VARCHAR, max_length=16)
        schema.add_field("boxes", DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_VARCHAR, enable_analyzer=True, analyzer_params=ANALYZER)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_function(Function(name="text_bm25", function_type=FunctionType.BM25,
                                     input_field_names=["text"], output_field_names=["sparse"]))
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="HNSW", metric_type="IP",
                        params={"M": self.config.dense.hnsw_m, "efConstruction": self.config.dense.ef_construction})
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        self.client.create_collection(self.pages_name, schema=schema, index_params=index, consistency_level="Strong")
        self._dim = dim

    def refresh(self) -> None:
        """Nothing to do: every read goes to Milvus, with Strong consistency."""

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def wipe(self) -> None:
        for name in (self.pages_name, self.sources_name):
            if self.client.has_collection(name):
                self.client.drop_collection(name)
        self._dim = None

    # ---- writing (inside the index folder's writer lock) -----------------------------------------------
    def begin_write(self) -> None:
        self.load()

    def end_write(self, format_version: int) -> None:
        count = self.count()
        if count > MANIFEST_MAX_PAGES:
            write_manifest(self.images.manifest_path, format_version, {}, pages=count)
            return
        sources = self.sources()
        pages: dict[str, list[tuple[int, str]]] = {}
        for row in self._iterate(["source", "page", "page_id"]):
            pages.setdefault(row["source"], []).append((row["page"], row["page_id"]))
        write_manifest(self.images.manifest_path, format_version,
                       {path: (s.sha256, s.complete, [p for _, p in sorted(pages.get(path, []))]) for path, s in sources.items()})

    def commit(self, chunks: list[Chunk]) -> None:
        """Pages first (upserts: a chunk written twice is written once), then the sources' progress."""
        rows = []
        for chunk in chunks:
            if self._dim is None:
                self._create_pages(int(chunk.vectors.shape[1]))
            for page, vector in zip(chunk.pages, chunk.vectors):
                rows.append(self._row(page, vector))
        for start in range(0, len(rows), BATCH):
            self.client.upsert(self.pages_name, rows[start : start + BATCH])
        for chunk in chunks:
            self.update_source(chunk.state)

    def _row(self, page: Page, vector: np.ndarray) -> dict:
        boxes = encode_boxes(page.boxes)
        if len(boxes.encode()) > MAX_VARCHAR:  # a page of more than ~2,000 words: keep what fits
            log.warning("page %s: %d boxes do not fit a Milvus text field; keeping the first ones", page.page_id, len(page.boxes))
            kept = page.boxes
            while len(boxes.encode()) > MAX_VARCHAR:
                kept = kept[: int(len(kept) * 0.9)]
                boxes = encode_boxes(kept)
        text = page.text.encode()[:MAX_VARCHAR].decode(errors="ignore")
        return {"vid": page_vid(page.page_id), "page_id": page.page_id, "source": page.source, "page": page.page,
                "width": page.width, "height": page.height, "text_source": page.text_source, "boxes": boxes,
                "text": text, "vector": np.asarray(vector, np.float32).tolist()}

    def update_source(self, state: SourceState) -> None:
        self.client.upsert(self.sources_name, [{"path": state.path, "state": json.dumps(state.__dict__), "dummy": [0.0, 0.0]}])

    def drop_source(self, path: str) -> list[str]:
        rows = self._query(f"source == {_quote(path)}", ["vid", "page_id", "page"]) if self._dim else []
        rows.sort(key=lambda r: r["page"])
        if rows:
            self.client.delete(self.pages_name, ids=[r["vid"] for r in rows])
        self.client.delete(self.sources_name, ids=[path])
        for row in rows:
            self.images.delete_image(row["page_id"])
        return [r["page_id"] for r in rows]

    def remove_page(self, page_id: str) -> bool:
        if not self._dim or not self._query(f"vid == {page_vid(page_id)}", ["vid"]):
            return False
        self.client.delete(self.pages_name, ids=[page_vid(page_id)])
        self.images.delete_image(page_id)
        return True

    # ---- reading ---------------------------------------------------------------------------------------
    def _query(self, filter: str, fields: list[str], limit: int | None = None) -> list[dict]:
        kwargs = {"limit": limit} if limit else {}
        return list(self.client.query(self.pages_name, filter=filter, output_fields=fields, **kwargs))

    def _iterate(self, fields: list[str]) -> Iterator[dict]:
        if not self._dim:
            return
        iterator = self.client.query_iterator(self.pages_name, batch_size=1000, filter="", output_fields=fields)
        try:
            while True:
                batch = iterator.next()
                if not batch:
                    return
                yield from batch
        finally:
            iterator.close()

    def count(self) -> int:
        if not self._dim:
            return 0
        return int(self.client.query(self.pages_name, filter="", output_fields=["count(*)"])[0]["count(*)"])

    def sources(self) -> dict[str, SourceState]:
        rows = self.client.query(self.sources_name, filter='path != ""', output_fields=["path", "state"])
        return {r["path"]: SourceState(**json.loads(r["state"])) for r in rows}

    def taken_page_ids(self, page_ids: list[str]) -> set[str]:
        if not self._dim or not page_ids:
            return set()
        found: set[str] = set()
        for start in range(0, len(page_ids), BATCH):
            vids = [page_vid(p) for p in page_ids[start : start + BATCH]]
            found.update(r["page_id"] for r in self._query(f"vid in {vids}", ["page_id"]))
        return found

    _PAGE_FIELDS = ["page_id", "source", "page", "width", "height", "text_source", "boxes"]

    def _page(self, r: dict) -> Page:
        return Page(r["page_id"], r["source"], int(r["page"]), str(self.images.image_path(r["page_id"])),
                    int(r["width"]), int(r["height"]), r["text_source"], decode_boxes(r["boxes"]))

    def page(self, page_id: str) -> Page | None:
        if not self._dim:
            return None
        rows = self._query(f"vid == {page_vid(page_id)}", self._PAGE_FIELDS)
        return self._page(rows[0]) if rows and rows[0]["page_id"] == page_id else None

    def iter_pages(self) -> Iterator[Page]:
        return iter(sorted((self._page(r) for r in self._iterate(self._PAGE_FIELDS)), key=lambda p: (p.source, p.page)))

    def dense_search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not self._dim:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        hits = self.client.search(self.pages_name, data=[np.asarray(vector, np.float32).tolist()], anns_field="vector",
                                  limit=k, output_fields=["vid"],
                                  search_params={"metric_type": "IP", "params": {"ef": max(self.config.dense.ef_search, k)}})[0]
        return np.array([h["distance"] for h in hits], np.float32), np.array([h["vid"] for h in hits], np.int64)

    def lexical_search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not self._dim:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        hits = self.client.search(self.pages_name, data=[query], anns_field="sparse", limit=k, output_fields=["vid"],
                                  search_params={"metric_type": "BM25"})[0]
        # BM25 is never negative; Milvus Lite reports it negated (as a distance), a server as a score
        scores = np.abs(np.array([h["distance"] for h in hits], np.float32))
        ids = np.array([h["vid"] for h in hits], np.int64)
        order = np.argsort(-scores, kind="stable")
        keep = scores[order] > 0
        return scores[order][keep], ids[order][keep]

    def fused_search(self, vector: np.ndarray, query: str, k: int, fusion) -> tuple[np.ndarray, np.ndarray] | None:
        """Milvus's own hybrid search when fusion is "rrf"; None: fuse the two rankings as usual."""
        if fusion.method != "rrf" or not self._dim:
            return None
        from pymilvus import AnnSearchRequest, RRFRanker

        requests = [AnnSearchRequest([np.asarray(vector, np.float32).tolist()], "vector", {"metric_type": "IP"}, k),
                    AnnSearchRequest([query], "sparse", {"metric_type": "BM25"}, k)]
        hits = self.client.hybrid_search(self.pages_name, requests, RRFRanker(int(fusion.rrf_k)), limit=k, output_fields=["vid"])[0]
        return np.array([h["distance"] for h in hits], np.float32), np.array([h["vid"] for h in hits], np.int64)

    def hit_meta(self, keys: list[int]) -> dict[int, HitMeta]:
        if not keys:
            return {}
        rows = self._query(f"vid in {[int(k) for k in keys]}", ["vid", "page_id", "source", "page"])
        return {int(r["vid"]): HitMeta(r["page_id"], r["source"], int(r["page"])) for r in rows}

    def image_path(self, page_id: str) -> Path:
        return self.images.image_path(page_id)

    def describe(self) -> dict:
        return {"backend": self.name, "uri": self.config.milvus_uri, "collection": self.pages_name}
