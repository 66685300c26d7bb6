"""IndexConfig: every setting of an index, saved as config.json in the index folder.

Some settings decide what is stored (the embedder, the render DPI, OCR settings, the on-disk format):
`identity()` lists them, and opening an index whose stored identity differs from the one asked for
rebuilds it rather than mixing, say, 144-dpi and 200-dpi pages or two embedders' vectors. The other
settings (search structure, fusion, limits) only change how stored data is used and can change freely.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .dense import DenseConfig
from .fusion import FusionConfig

# Bump when the layout or meaning of anything in the index folder changes.
# 2: compact box lists in the source records; 3: records in SQLite, BM25 in tantivy, FAISS checkpoint + log;
# 4: term counts per page (exact BM25 over tantivy's candidates)
# 5: term counts in their own table (binary), the page vector before its boxes (store.py: column order)
FORMAT_VERSION = 5
BACKENDS = ("local", "milvus")


@dataclass
class IndexConfig:
    embedder: str = "minilm"  # see embedders.load_embedder
    model_path: str = ""  # visual embedders: a local model folder or a hub name ("": the embedder's default hub id)
    pool_factor: int = 1  # late interaction: store ~n/pool_factor pooled vectors per page (1: every patch)
    vlm_pooling: str = "last"  # single-vector visual embedder: "last" token or "mean"
    device: str = "auto"  # visual embedders: "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
    dtype: str = "auto"  # visual embedders: "auto" (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16
    maxsim_exact_max_pages: int = 2_000  # late interaction: exact MaxSim up to this many pages (bench/RESULTS.md)
    maxsim_candidates: int = 400  # past it: pages the mean-vector candidate stage proposes for exact MaxSim
    dpi: int = 144  # PDF render resolution
    min_text_chars: int = 20  # a PDF page with less text-layer text than this is OCR'd
    ocr_min_confidence: float = 0.5
    ocr_max_side: int = 2000
    ocr_threads: int | None = 1  # see ocr.py; None = all cores
    max_image_pixels: int = 100_000_000  # decompression-bomb guard for images and rendered pages
    jpeg_quality: int = 90  # for page images that are not already JPEG files
    candidates: int = 100  # pages each retriever proposes before fusion
    lexical_b: float = 0.4  # BM25 length normalisation (see lexical.py, lexical_tantivy.padding)
    lexical_k1: float = 0.9  # BM25 term-frequency saturation (backend_local re-scores tantivy's candidates)
    backend: str = "local"  # "local" (SQLite + tantivy + FAISS in the folder) or "milvus" (see backend_milvus.py)
    milvus_uri: str = ""  # backend "milvus": http://host:19530, or a local Milvus Lite path ending in .db
    milvus_collection: str = ""  # backend "milvus": collection name prefix (default: from the folder name)
    workers: int | None = None  # processes rendering and OCRing pages during ingest; None = one per core, 0 = none
    dense_checkpoint_every: int = 20_000  # fold this many new vectors into the FAISS checkpoint at once
    dense: DenseConfig = field(default_factory=DenseConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    format_version: int = FORMAT_VERSION

    def identity(self) -> dict:
        """The settings that decide what is stored; a mismatch means the index must be rebuilt."""
        return {
            "format_version": self.format_version,
            "embedder": self.embedder,
            "model_path": self.model_path,
            "pool_factor": self.pool_factor,
            "vlm_pooling": self.vlm_pooling,
            "dpi": self.dpi,
            "min_text_chars": self.min_text_chars,
            "ocr_min_confidence": self.ocr_min_confidence,
            "ocr_max_side": self.ocr_max_side,
            "lexical_b": self.lexical_b,
            "backend": self.backend,
            "milvus_uri": self.milvus_uri,
            "milvus_collection": self.milvus_collection,
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "IndexConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values["dense"] = DenseConfig(**d.get("dense", {}))
        values["fusion"] = FusionConfig(**d.get("fusion", {}))
        values["format_version"] = int(d.get("format_version", 0))  # absent: older than versioning
        return cls(**values)
