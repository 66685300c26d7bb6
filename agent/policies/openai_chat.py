"""The `vllm` policy: any OpenAI-compatible chat endpoint that takes images (vLLM first).

By default the request is exactly the reference client's: `model`, `messages`, `stream=False`,
nothing else (server-side sampling defaults). Temperature and max_tokens are sent only when set.
Every failure a user can cause or fix (server down, timeout, HTTP error, context too long, too
many images, unknown model name) becomes a PolicyError that names the endpoint and what to do.
"""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx2  # the HTTP library of the openai client (installed with it)
import openai

from agent.policies.base import Completion, PolicyError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8001/v1"
DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"  # the served name in the reference `vllm serve` command
SERVE_HINT = (
    "vllm serve autumncc/Qwen2.5-VL-7B-VRAG --port 8001 --host 0.0.0.0 --limit-mm-per-prompt image=10 "
    "--served-model-name Qwen/Qwen2.5-VL-7B-Instruct"
)
_CONTEXT_WORDS = ("context length", "maximum model length", "max_model_len", "too long", "maximum context")
_IMAGE_LIMIT_WORDS = ("at most", "limit-mm-per-prompt", "multimodal items", "image(s)")


def normalize_base_url(base_url: str) -> str:
    """`http://host:8001` -> `http://host:8001/v1` (the OpenAI client wants the /v1 prefix).

    Raises ValueError, naming the URL, for anything that is not an http(s) URL with a host.
    """
    given = base_url
    base_url = (base_url or "").strip()
    if "://" not in base_url:
        base_url = "http://" + base_url
    base_url = base_url.rstrip("/")
    parts = urlsplit(base_url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
        httpx2.URL(base_url)  # the URL parser the openai client itself uses
    except (ValueError, httpx2.InvalidURL) as e:
        raise ValueError(f"{given!r} is not a valid endpoint URL ({e}); use e.g. {DEFAULT_BASE_URL}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{given!r} is not a valid endpoint URL; use e.g. {DEFAULT_BASE_URL}")
    if parts.path in ("", "/"):
        base_url += "/v1"
    return base_url


class OpenAIChatPolicy:
    name = "vllm"

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_MODEL,
        api_key: str = "EMPTY",
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float = 300.0,
        max_retries: int = 0,
        client: openai.OpenAI | None = None,
    ):
        try:
            self.base_url = normalize_base_url(base_url)
        except ValueError as e:
            raise PolicyError(str(e)) from None
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.client = client or openai.OpenAI(base_url=self.base_url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=max_retries)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "model": self.model,
            "description": f"OpenAI-compatible chat endpoint {self.base_url} (model {self.model})",
            "base_url": self.base_url,
        }

    def request(self, messages: list[dict]) -> dict:
        """The keyword arguments sent to `chat.completions.create` (the request body)."""
        body = {"model": self.model, "messages": messages, "stream": False}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body

    def complete(self, messages: list[dict]) -> Completion:
        endpoint = f"{self.base_url}/chat/completions"
        try:
            response = self.client.chat.completions.create(**self.request(messages))
        except openai.APITimeoutError as e:
            raise PolicyError(f"model server {endpoint} did not answer within {self.timeout:g} s; raise --timeout or check the server's load") from e
        except openai.APIConnectionError as e:
            raise PolicyError(f"cannot reach the model server at {endpoint} ({_cause(e)}); start it, e.g. `{SERVE_HINT}`, or pass --base-url") from e
        except openai.APIStatusError as e:
            raise PolicyError(_status_message(endpoint, self.model, e)) from e
        except openai.APIError as e:  # e.g. a body that is not a chat completion
            raise PolicyError(f"model server {endpoint} sent an unusable response: {e}") from e
        if not getattr(response, "choices", None):
            raise PolicyError(f"model server {endpoint} returned no choices: {str(response)[:300]}")
        text = response.choices[0].message.content or ""
        usage = getattr(response, "usage", None)
        return Completion(
            text=text,
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
        )


def _cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    return f"{e.__class__.__name__}: {e}" if str(e) else e.__class__.__name__


def _status_message(endpoint: str, model: str, e: openai.APIStatusError) -> str:
    status = e.status_code
    detail = str(getattr(e, "message", "") or e)[:400]
    low = detail.lower()
    where = f"model server {endpoint} answered HTTP {status}"
    if status == 400 and any(w in low for w in _CONTEXT_WORDS):
        return f"{where}: the conversation is longer than the model's context ({detail}); lower --max-turns or start vLLM with a larger --max-model-len"
    if status == 400 and "image" in low and any(w in low for w in _IMAGE_LIMIT_WORDS):
        return f"{where}: too many images in one prompt ({detail}); start vLLM with --limit-mm-per-prompt image=10"
    if status == 404:
        return f"{where}: model {model!r} not found ({detail}); pass the served name with --model (see GET /v1/models)"
    if status in (401, 403):
        return f"{where}: not authorised ({detail}); pass the right --api-key"
    if status >= 500:
        return f"{where}: server error ({detail}); check the server's log"
    return f"{where}: {detail}"


def health(base_url: str, api_key: str = "EMPTY", timeout: float = 3.0) -> dict:
    """Is an OpenAI-compatible server up? GET {base_url}/models.

    Returns {"ok": bool, "url": ..., "models": [ids], "error": str | None}; never raises.
    """
    try:
        base = normalize_base_url(base_url)
    except ValueError as e:
        return {"ok": False, "url": str(base_url), "models": [], "error": str(e)}
    url = f"{base}/models"
    client = openai.OpenAI(base_url=base, api_key=api_key or "EMPTY", timeout=timeout, max_retries=0)
    try:
        models = [m.id for m in client.models.list()]
    except openai.APIStatusError as e:
        return {"ok": False, "url": url, "models": [], "error": f"HTTP {e.status_code} from {url}"}
    except openai.APIError as e:
        return {"ok": False, "url": url, "models": [], "error": f"cannot reach {url} ({_cause(e)})"}
    finally:
        client.close()
    return {"ok": True, "url": url, "models": models, "error": None}
