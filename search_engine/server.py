"""The HTTP API over one index: the reference VRAG search API plus a richer one for our own clients.

Compatibility comes first. The reference VRAG agent calls `GET /search?queries=q1&queries=q2` and
reads, per query, a list of `{"idx": i, "image_file": path}` (top 10); the newer reference server
takes `POST /search` with `{"queries", "top_k", "vrag_ret"}`. Both work here unchanged. Without
`vrag_ret` the POST answer is ours: every hit with its fused and per-retriever scores and page
metadata. `GET /pages/{id}` and `GET /pages/{id}/image` let a client on another machine fetch what
`image_file` points to, and never serve a file outside the index folder. `GET /pages/{id}/model-view`
serves the exact JPEG the VRAG protocol sends for the page (model_views.py: made once, kept in the
index folder), with its sizes and sizing key in `X-Input-Size`, `X-Raw-Size`, `X-Model-View-Sizing`.

Every bad request gets a 4xx with `{"error": "<one clear sentence>"}`; a traceback never reaches the
client. `create_app(index)` takes the index as an argument, so tests and the CLI build the same app.
"""
from __future__ import annotations

import logging
import mimetypes
import threading
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field, StrictInt, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .model_views import ModelViews
from .query import QueryError, validate_query
from .types import SearchHit

log = logging.getLogger(__name__)

API_VERSION = "1"
GET_TOP_K = 10  # the reference GET API always returns the top 10
POST_TOP_K = 3  # the newer reference POST API's default when a body has no top_k
MAX_QUERIES = 64  # per request: a batch bigger than this is a mistake or abuse, not a use case
# h11 refuses request lines over 16 KiB with a bare plain-text 400. Let up to 1 MiB through so that an
# over-long query gets our clear JSON message from `validate_query` instead.
MAX_REQUEST_LINE = 1 << 20


class SearchRequest(BaseModel):
    queries: list[str] | str = Field(description="one query or a list of queries")
    top_k: StrictInt = Field(POST_TOP_K, description="hits per query (an integer; true or \"3\" are refused)")
    vrag_ret: bool = Field(False, description="answer in the reference shape: per query, a list of {idx, image_file}")
    mode: Literal["fused", "dense", "lexical"] = "fused"


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message}, headers=headers)


def _validation_message(exc: RequestValidationError | ValidationError) -> str:
    """One readable sentence from pydantic's error list, e.g. `top_k: Input should be a valid integer`."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "invalid request: " + "; ".join(parts)


def _image_url(page_id: str) -> str:
    return f"/pages/{quote(page_id, safe='')}/image"


def create_app(index, *, title: str = "VRAG Studio search", views: ModelViews | None = None) -> FastAPI:
    """A FastAPI app serving `index` (a `DocumentIndex`, or anything with its search/page/pages API)
    and the model views of its pages (`views`: the protocol's sizing by default)."""
    app = FastAPI(title=title, version=API_VERSION)
    root = Path(index.folder).resolve()
    views = views or ModelViews(root)
    # One search at a time: the embedder's fast tokenizer is not safe to share between threads
    # ("Already borrowed"), and on a 2-core machine concurrent searches would not be faster anyway.
    lock = threading.Lock()

    @app.exception_handler(QueryError)
    async def _bad_query(request: Request, exc: QueryError):
        return _error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        return _error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404 and exc.detail == "Not Found":  # the router's: no such endpoint
            return _error(404, f"no endpoint {request.method} {request.url.path}; the API is described at /docs")
        if exc.status_code == 405:
            return _error(405, f"{request.method} is not allowed on {request.url.path}", exc.headers)
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("error serving %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")

    def run_searches(queries: list[str], top_k: int, mode: str = "fused") -> list[list[SearchHit]]:
        if not queries:
            raise QueryError("give at least one query")
        if len(queries) > MAX_QUERIES:
            raise QueryError(f"at most {MAX_QUERIES} queries per request, got {len(queries)}")
        cleaned = [validate_query(q, top_k) for q in queries]  # all checked before any search runs
        with lock:
            return [index.search(q, top_k=top_k, mode=mode) for q in cleaned]

    def reference_shape(results: list[list[SearchHit]]) -> list[list[dict]]:
        return [[{"idx": i, "image_file": hit.image_file} for i, hit in enumerate(hits)] for hits in results]

    # Plain `def` endpoints run in FastAPI's thread pool, so a slow search never blocks the event loop.
    @app.get("/search", summary="Reference VRAG search: per query, the top 10 as {idx, image_file}")
    def search_get(
        queries: list[str] = Query(..., description="repeat for several queries: ?queries=a&queries=b"),
        top_k: int = Query(GET_TOP_K, description="not in the reference API; defaults to its 10"),
    ) -> list[list[dict]]:
        return reference_shape(run_searches(queries, top_k))

    # The reference server reads the body with `await request.json()`, whatever the Content-Type, so a
    # client posting JSON as text/plain or form-encoded works there; parsing the raw body keeps that.
    @app.post(
        "/search",
        summary="Rich search (scores, page metadata); the reference shape with vrag_ret",
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": SearchRequest.model_json_schema()}}, "required": True}},
    )
    async def search_post(request: Request):
        try:
            body = SearchRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return _error(422, _validation_message(exc))
        queries = [body.queries] if isinstance(body.queries, str) else body.queries
        results = await run_in_threadpool(run_searches, queries, body.top_k, body.mode)
        if body.vrag_ret:
            return reference_shape(results)
        return {
            "results": [
                {"query": q, "hits": [hit.to_dict() | {"image_url": _image_url(hit.page_id)} for hit in hits]}
                for q, hits in zip(queries, results)
            ]
        }

    def find_page(page_id: str):
        try:
            with lock:
                return index.page(page_id)
        except KeyError:
            raise HTTPException(404, f"no page {page_id!r} in this index") from None

    @app.get("/pages/{page_id}", summary="One page record: source, size, text and text boxes")
    def page_record(page_id: str) -> dict:
        page = find_page(page_id)
        return page.to_dict() | {"text": page.text, "image_url": _image_url(page.page_id)}

    def image_path(page) -> Path:
        # The record comes from the index folder, but a hand-edited or corrupted record must still never
        # make us serve another file: resolve symlinks and `..` and require the result inside the folder.
        path = Path(page.image_file).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            log.warning("page %s points outside the index folder or to a missing file: %s", page.page_id, path)
            raise HTTPException(404, f"no image for page {page.page_id!r}")
        return path

    @app.get("/pages/{page_id}/image", summary="The stored page image", response_class=FileResponse)
    def page_image(page_id: str):
        path = image_path(find_page(page_id))
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type)

    @app.get("/pages/{page_id}/model-view", summary="The exact JPEG the VRAG protocol sends for this page",
             response_class=Response)
    def model_view(page_id: str, min_pixels: int = Query(views.sizing.min_pixels), max_pixels: int = Query(views.sizing.max_pixels)):
        if (min_pixels, max_pixels) != (views.sizing.min_pixels, views.sizing.max_pixels):
            raise HTTPException(404, f"this server makes model views for min_pixels={views.sizing.min_pixels} and "
                                     f"max_pixels={views.sizing.max_pixels} only; fetch /pages/{{id}}/image and resize it")
        page = find_page(page_id)
        try:
            view = views.get(page.page_id, image_path(page))
        except OSError as e:
            log.warning("cannot make the model view of %s: %s", page.page_id, e)
            raise HTTPException(404, f"the image of page {page.page_id!r} cannot be read") from None
        return Response(view.jpeg, media_type="image/jpeg", headers={
            "X-Input-Size": "%dx%d" % view.input_size, "X-Raw-Size": "%dx%d" % view.raw_size,
            "X-Model-View-Sizing": views.sizing.key})

    @app.get("/health", summary="Liveness plus what is being served")
    def health() -> dict:
        return {
            "status": "ok",
            "pages": len(index),
            "embedder": index.config.embedder,  # the name only: asking for the model would load it
            "index": root.name,  # the name only: a client has no business knowing server paths
            "index_format": index.config.format_version,
            "version": API_VERSION,
        }

    return app


def uvicorn_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8002, **kwargs) -> uvicorn.Config:
    """The one server configuration, shared by `python -m search_engine serve` and the tests."""
    return uvicorn.Config(
        app, host=host, port=port, http="h11", h11_max_incomplete_event_size=MAX_REQUEST_LINE, **kwargs
    )
