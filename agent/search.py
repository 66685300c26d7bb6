"""Where the agent's <search> goes: a local index in this process, or our search server over HTTP.

Both answer the same two calls, so the loop does not care which one it holds:
`search(query, top_k)` gives ranked `SearchHit`s and `page_image(page_id)` the full-resolution
page, from which the loop makes every observation and crop itself.
"""
from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

import httpx
from PIL import Image, UnidentifiedImageError

from search_engine.query import QueryError
from search_engine.types import SearchHit

if TYPE_CHECKING:
    from search_engine import DocumentIndex

log = logging.getLogger(__name__)


class SearchError(RuntimeError):
    """The search backend failed (server down, bad response, page image missing). Names where."""


class QueryRejected(ValueError):
    """The engine refused the query itself (e.g. too long): the model's mistake, told back to it."""


class Searcher(Protocol):
    def search(self, query: str, top_k: int) -> list[SearchHit]: ...

    def page_image(self, page_id: str) -> Image.Image: ...

    def describe(self) -> dict: ...


def _open_image(data_or_path, where: str) -> Image.Image:
    try:
        image = Image.open(data_or_path)
        image.load()
        return image
    except (OSError, UnidentifiedImageError) as e:
        raise SearchError(f"page image from {where} could not be read: {e}") from e


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


class LocalSearcher:
    """A `search_engine.DocumentIndex` in this process."""

    def __init__(self, index: "DocumentIndex"):
        self.index = index

    def search(self, query: str, top_k: int) -> list[SearchHit]:
        try:
            return list(self.index.search(query, top_k=top_k))
        except QueryError as e:
            raise QueryRejected(str(e)) from e

    def page_image(self, page_id: str) -> Image.Image:
        try:
            page = self.index.page(page_id)
        except KeyError:
            raise SearchError(f"page {page_id!r} is not in the index at {self.index.folder}") from None
        return _open_image(page.image_file, f"the index ({page.image_file})")

    def describe(self) -> dict:
        return {"kind": "local", "index": str(self.index.folder)}


class HttpSearcher:
    """Our search server (search_engine/server.py):
    `POST {base_url}/search` with {"queries": [q], "top_k": k} -> {"results": [{"query", "hits": [...]}]},
    `GET {base_url}/pages/{page_id}/image` -> the page image bytes.
    """

    def __init__(self, base_url: str, client: httpx.Client | None = None, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.Client(timeout=timeout)

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        url = self.base_url + path
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.TimeoutException as e:
            raise SearchError(f"search server at {url} timed out ({e.__class__.__name__}); is it overloaded?") from e
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise SearchError(f"cannot reach the search server at {url}: {e}. Start it with `python -m search_engine serve --index DIR` or check --search-url.") from e
        if response.status_code == 400 and method == "POST":  # the server refused the query (search_engine/query.py)
            raise QueryRejected(_error_text(response))
        if response.status_code != 200:
            raise SearchError(f"search server at {url} answered HTTP {response.status_code}: {_error_text(response)}")
        return response

    def search(self, query: str, top_k: int) -> list[SearchHit]:
        response = self._request("POST", "/search", json={"queries": [query], "top_k": top_k})
        try:
            results = response.json()["results"]
            return [SearchHit.from_dict(h) for h in results[0]["hits"]]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise SearchError(f"search server at {self.base_url}/search sent an unexpected response ({e!r}): {response.text[:300]}") from e

    def page_image(self, page_id: str) -> Image.Image:
        path = f"/pages/{quote(page_id, safe='')}/image"
        response = self._request("GET", path)
        return _open_image(io.BytesIO(response.content), self.base_url + path)

    def describe(self) -> dict:
        return {"kind": "http", "url": self.base_url}
