"""Where the agent's <search> goes: a local index in this process, or our search server over HTTP.

Both answer the same calls, so the loop does not care which one it holds:
`search(query, top_k)` gives ranked `SearchHit`s; `model_view(page_id)` the exact JPEG a search
turn sends for a page (search_engine/model_views.py: made once per page and kept, so a search turn
decodes nothing); `page_image(page_id)` the full-resolution page, and `page_top(page_id, rows)` its
top rows only (agent/page_decode.py), which is what the loop decodes to crop. A searcher without
`model_view` or `page_top` (a test double, someone's own) still works: the loop then makes the view
from `page_image` and crops from the whole page, as before.
"""
from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from PIL import Image, UnidentifiedImageError

from agent.page_decode import PageTop, decode_top
from search_engine.model_views import ModelView, ModelViews, Sizing, make_view
from search_engine.query import QueryError
from search_engine.types import SearchHit

if TYPE_CHECKING:
    import httpx

    from search_engine import DocumentIndex

log = logging.getLogger(__name__)


class SearchError(RuntimeError):
    """The search backend failed (server down, bad response, page image missing). Names where."""


class QueryRejected(ValueError):
    """The engine refused the query itself (e.g. too long): the model's mistake, told back to it."""


class Searcher(Protocol):
    def search(self, query: str, top_k: int) -> list[SearchHit]: ...

    def model_view(self, page_id: str) -> ModelView: ...

    def page_image(self, page_id: str) -> Image.Image: ...

    def page_top(self, page_id: str, rows: int | None) -> PageTop: ...

    def describe(self) -> dict: ...


def decoded_top(searcher: Searcher, page_id: str, rows: int | None) -> PageTop:
    """`searcher.page_top(page_id, rows)`, or the whole page for a searcher that has no `page_top`."""
    page_top = getattr(searcher, "page_top", None)
    if page_top is None:
        image = searcher.page_image(page_id)
        return PageTop(image, tuple(image.size))
    return page_top(page_id, rows)


def _decode_top(source: str | bytes, rows: int | None, where: str) -> PageTop:
    try:
        return decode_top(source, rows)
    except (OSError, UnidentifiedImageError) as e:
        raise SearchError(f"page image from {where} could not be read: {e}") from e


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


def _size(text: str) -> tuple[int, int]:
    """ "846x474" -> (846, 474)"""
    w, h = text.split("x")
    return int(w), int(h)


class LocalSearcher:
    """A `search_engine.DocumentIndex` in this process."""

    def __init__(self, index: "DocumentIndex", sizing: Sizing = Sizing()):
        self.index = index
        self.views = ModelViews(index.folder, sizing)

    def search(self, query: str, top_k: int) -> list[SearchHit]:
        try:
            return list(self.index.search(query, top_k=top_k))
        except QueryError as e:
            raise QueryRejected(str(e)) from e

    def _image_file(self, page_id: str) -> str:
        try:
            return self.index.page(page_id).image_file
        except KeyError:
            raise SearchError(f"page {page_id!r} is not in the index at {self.index.folder}") from None

    def model_view(self, page_id: str) -> ModelView:
        image_file = self._image_file(page_id)
        try:
            return self.views.get(page_id, image_file)
        except OSError as e:  # UnidentifiedImageError included
            raise SearchError(f"page image from the index ({image_file}) could not be read: {e}") from e

    def page_image(self, page_id: str) -> Image.Image:
        return self.page_top(page_id, None).image

    def page_top(self, page_id: str, rows: int | None) -> PageTop:
        image_file = self._image_file(page_id)
        return _decode_top(image_file, rows, f"the index ({image_file})")

    def describe(self) -> dict:
        return {"kind": "local", "index": str(self.index.folder)}


class HttpSearcher:
    """Our search server (search_engine/server.py):
    `POST {base_url}/search` with {"queries": [q], "top_k": k} -> {"results": [{"query", "hits": [...]}]},
    `GET {base_url}/pages/{page_id}/model-view?min_pixels=..&max_pixels=..` -> the view's JPEG, its
    sizes and sizing key in headers (search_engine/model_views.py),
    `GET {base_url}/pages/{page_id}/image` -> the page image bytes.
    A view is used only when the server's sizing key is ours (same bounds, same Pillow and
    libjpeg-turbo, so the same bytes); otherwise, and with servers that have no views, the view is
    made here from the page image.
    """

    def __init__(self, base_url: str, client: httpx.Client | None = None, timeout: float = 30.0, sizing: Sizing = Sizing()):
        import httpx  # here, not at the top: httpx (and the rich it loads) is ~0.1 s the app's first page does not need

        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.Client(timeout=timeout)
        self.sizing = sizing
        self._server_views = True  # until the server shows it has none we can use

    def _request(self, method: str, path: str, fallback_ok: bool = False, **kwargs) -> httpx.Response:
        import httpx

        url = self.base_url + path
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.TimeoutException as e:
            raise SearchError(f"search server at {url} timed out ({e.__class__.__name__}); is it overloaded?") from e
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise SearchError(f"cannot reach the search server at {url}: {e}. Start it with `python -m search_engine serve --index DIR` or check --search-url.") from e
        if response.status_code == 400 and method == "POST":  # the server refused the query (search_engine/query.py)
            raise QueryRejected(_error_text(response))
        if response.status_code != 200 and not fallback_ok:
            raise SearchError(f"search server at {url} answered HTTP {response.status_code}: {_error_text(response)}")
        return response

    def search(self, query: str, top_k: int) -> list[SearchHit]:
        response = self._request("POST", "/search", json={"queries": [query], "top_k": top_k})
        try:
            results = response.json()["results"]
            return [SearchHit.from_dict(h) for h in results[0]["hits"]]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise SearchError(f"search server at {self.base_url}/search sent an unexpected response ({e!r}): {response.text[:300]}") from e

    def model_view(self, page_id: str) -> ModelView:
        view = self._server_view(page_id) if self._server_views else None
        return view or make_view(self.page_image(page_id), self.sizing)

    def _server_view(self, page_id: str) -> ModelView | None:
        path = f"/pages/{quote(page_id, safe='')}/model-view"
        sizing = self.sizing
        response = self._request("GET", path, fallback_ok=True, params={"min_pixels": sizing.min_pixels, "max_pixels": sizing.max_pixels})
        if response.status_code != 200:
            if response.status_code == 404 and _error_text(response).startswith("no endpoint"):
                log.info("search server at %s has no model views; making them here", self.base_url)
                self._server_views = False
            return None  # e.g. other bounds than the server's, or no such page: the page image says which
        if response.headers.get("x-model-view-sizing") != sizing.key:
            log.info("search server at %s makes views under sizing %s, not ours (%s); making them here",
                     self.base_url, response.headers.get("x-model-view-sizing"), sizing.key)
            self._server_views = False
            return None
        try:
            view = ModelView(response.content, _size(response.headers["x-input-size"]), _size(response.headers["x-raw-size"]))
            with Image.open(io.BytesIO(view.jpeg)) as image:  # the header only: is it the JPEG it says it is?
                if image.format != "JPEG" or image.size != view.input_size:
                    raise ValueError(f"a {image.format} of {image.size}, said to be a JPEG of {view.input_size}")
        except (KeyError, ValueError, OSError) as e:
            log.warning("search server at %s sent a damaged model view of %s (%s); making it here", self.base_url, page_id, e)
            return None
        return view

    def page_image(self, page_id: str) -> Image.Image:
        return self.page_top(page_id, None).image

    def page_top(self, page_id: str, rows: int | None) -> PageTop:
        path = f"/pages/{quote(page_id, safe='')}/image"
        response = self._request("GET", path)
        return _decode_top(response.content, rows, self.base_url + path)

    def describe(self) -> dict:
        return {"kind": "http", "url": self.base_url}
