"""Query validation in one place, shared by DocumentIndex.search, the CLI and the HTTP API.

Limits: a query is 1..MAX_QUERY_CHARS characters after stripping whitespace (questions are a
sentence or two; 2,000 characters is generous, a 100 kB paste is a mistake), and 1 <= top_k <= MAX_TOP_K
(the reference engine returns 10; 100 is already more pages than an agent can look at).
"""
from __future__ import annotations

MAX_QUERY_CHARS = 2_000
MAX_TOP_K = 100


class QueryError(ValueError):
    """A query or top_k that the engine refuses; the message says what is allowed."""


def validate_query(query: object, top_k: object = 10) -> str:
    """Return the stripped query, or raise QueryError."""
    if not isinstance(query, str):
        raise QueryError(f"the query must be a string, got {type(query).__name__}")
    stripped = query.strip()
    if not stripped:
        raise QueryError("the query is empty; type a question or some keywords")
    if len(stripped) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is {len(stripped):,} characters long; the maximum is {MAX_QUERY_CHARS:,}")
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise QueryError(f"top_k must be an integer, got {top_k!r}")
    if not 1 <= top_k <= MAX_TOP_K:
        raise QueryError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
    return stripped
