"""Offline page-image search engine: index PDFs and page images, search them in English and Chinese.

    from search_engine import DocumentIndex
    index = DocumentIndex.open("data/indexes/mine")
    report = index.ingest(["~/papers", "~/scans/receipt.png"], progress=print)
    hits = index.search("revenue growth in 2019", top_k=5)
"""
from .config import FORMAT_VERSION, IndexConfig
from .index import DocumentIndex
from .query import MAX_QUERY_CHARS, MAX_TOP_K, QueryError, validate_query
from .types import IngestReport, Page, SearchHit, SkippedFile, TextBox

__all__ = [
    "DocumentIndex", "IndexConfig", "FORMAT_VERSION", "QueryError", "validate_query", "MAX_QUERY_CHARS",
    "MAX_TOP_K", "IngestReport", "Page", "SearchHit", "SkippedFile", "TextBox",
]
