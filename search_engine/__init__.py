"""Offline page-image search engine: index PDFs and page images, search them in English and Chinese.

    from search_engine import DocumentIndex
    index = DocumentIndex.open("data/indexes/mine")
    report = index.ingest(["~/papers", "~/scans/receipt.png"], progress=print)
    hits = index.search("revenue growth in 2019", top_k=5)

The names below are imported on first use (PEP 562): importing a light submodule such as
`search_engine.types` must not pull in PyMuPDF, FAISS and scipy, or the app would start slowly.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "DocumentIndex": ".index",
    "IndexConfig": ".config",
    "FORMAT_VERSION": ".config",
    "QueryError": ".query",
    "validate_query": ".query",
    "MAX_QUERY_CHARS": ".query",
    "MAX_TOP_K": ".query",
    "IngestReport": ".types",
    "Page": ".types",
    "SearchHit": ".types",
    "SkippedFile": ".types",
    "TextBox": ".types",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'search_engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
