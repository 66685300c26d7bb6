"""The `vllm` policy: any OpenAI-compatible chat endpoint that takes images (vLLM first).

By default the request is exactly the reference client's: `model`, `messages`, `stream=False`,
nothing else (server-side sampling defaults). Temperature and max_tokens are sent only when set.

Every failure becomes one PolicyError naming the endpoint, in words for a person, with what to do
in `cli_hint` (flags, commands) and `app_hint` (pages, fields): server down, HTTP errors (context
too long, too many images, unknown model, bad key, server error, an HTML error page from a proxy),
and every malformed reply: not JSON, cut short, an empty body, the wrong shape ({"choices": [{}]},
{"choices": "abc"}), no text content, the connection closed mid-body, a reply over
MAX_REPLY_BYTES. `timeout` is a deadline on the whole call (connect, wait, read), not per read:
the reply is read chunk by chunk in a worker thread (agent/deadline.py) and the caller gets its
PolicyError back within moments of the deadline, however slowly the server trickles.
"""
from __future__ import annotations

import html
import json
import logging
import re
import threading
from urllib.parse import urlsplit

import httpx2  # the HTTP library of the openai client (installed with it)
import openai
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.deadline import DeadlinePassed, run_before
from agent.policies.base import Completion, PolicyError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8001/v1"
DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"  # the served name in the reference `vllm serve` command
SERVE_HINT = (  # bound to this machine only; see the README for serving it to other machines on purpose
    "vllm serve autumncc/Qwen2.5-VL-7B-VRAG --port 8001 --host 127.0.0.1 --limit-mm-per-prompt image=10 "
    "--served-model-name Qwen/Qwen2.5-VL-7B-Instruct"
)
MAX_REPLY_BYTES = 4 * 1024**2  # a 32k-token reply is about 150 KB of JSON; more is not a chat reply
_CONTEXT_WORDS = ("context length", "maximum model length", "max_model_len", "too long", "maximum context")
_IMAGE_LIMIT_WORDS = ("at most", "limit-mm-per-prompt", "multimodal items", "image(s)")
_NOT_A_CHAT_SERVER = {
    "cli": "check that --base-url points at an OpenAI-compatible chat server such as vLLM",
    "app": "check that the model endpoint on the Settings page is an OpenAI-compatible chat server such as vLLM",
}


# --- the shape of a reply (only what the loop uses; anything else may vary between servers) -----


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: object = None  # must be text: checked after, to say so in words


class _Choice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message: _Message
    finish_reason: object = None


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")
    choices: list[_Choice] = Field(min_length=1)


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
        if not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
            raise PolicyError(f"the model call timeout must be a positive number of seconds, not {timeout!r}")
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
        """The model's reply, or a PolicyError (with hints) for every way the call can fail."""
        endpoint = f"{self.base_url}/chat/completions"
        body = self.request(messages)
        try:
            raw = run_before(lambda cancelled: self._post(endpoint, body, cancelled), self.timeout, name="vllm-call")
        except DeadlinePassed:
            raise _late(endpoint, self.timeout) from None
        return parse_reply_body(raw, endpoint)

    def _post(self, endpoint: str, body: dict, cancelled: threading.Event) -> bytes:
        """POST the request and read the reply's bytes (at most MAX_REPLY_BYTES), stopping when `cancelled`."""
        try:
            with self.client.chat.completions.with_streaming_response.create(**body) as response:
                return _read_body(response, endpoint, cancelled)
        except openai.APITimeoutError as e:  # the connect or one read took the whole time
            raise _late(endpoint, self.timeout) from e
        except openai.APIConnectionError as e:
            raise PolicyError(
                f"cannot reach the model server at {endpoint} ({_cause(e)})",
                cli_hint=f"start it, e.g. `{SERVE_HINT}`, or pass --base-url",
                app_hint="start the model server, or set its address on the Settings page",
            ) from e
        except openai.APIStatusError as e:
            raise _status_error(endpoint, self.model, e) from e
        except openai.APIError as e:
            raise PolicyError(f"model server {endpoint} sent an unusable response ({e})", cli_hint=_NOT_A_CHAT_SERVER["cli"],
                              app_hint=_NOT_A_CHAT_SERVER["app"]) from e
        except httpx2.HTTPError as e:  # the connection broke while an error reply was being read
            raise _broken_reply(endpoint, e) from e


def _read_body(response, endpoint: str, cancelled: threading.Event) -> bytes:
    chunks, size = [], 0
    try:
        for chunk in response.iter_bytes():  # as the bytes arrive (a chunk size would wait for it to fill)
            if cancelled.is_set():  # the caller has given up: stop reading
                return b""
            size += len(chunk)
            if size > MAX_REPLY_BYTES:
                raise PolicyError(
                    f"model server {endpoint} sent a reply larger than {MAX_REPLY_BYTES // 1024**2} MB, which is not a chat reply",
                    cli_hint=_NOT_A_CHAT_SERVER["cli"], app_hint=_NOT_A_CHAT_SERVER["app"])
            chunks.append(chunk)
    except httpx2.TimeoutException as e:
        raise PolicyError(f"model server {endpoint} stopped sending its reply halfway ({_cause(e)})",
                          cli_hint="raise --timeout, or check the server's log", app_hint="check the model server's log") from e
    except httpx2.HTTPError as e:
        raise _broken_reply(endpoint, e) from e
    return b"".join(chunks)


def _late(endpoint: str, seconds: float) -> PolicyError:
    return PolicyError(f"model server {endpoint} did not answer within {seconds:g} s",
                       cli_hint="raise --timeout, or check the server's load", app_hint="check the model server's load")


def _broken_reply(endpoint: str, e: BaseException) -> PolicyError:
    return PolicyError(f"model server {endpoint} closed the connection before its reply was complete ({_cause(e)})",
                       cli_hint="check the server's log; it may have crashed or been restarted",
                       app_hint="check the model server's log; it may have crashed or been restarted")


def _unusable(endpoint: str, what: str) -> PolicyError:
    return PolicyError(f"model server {endpoint} sent {what}", cli_hint=_NOT_A_CHAT_SERVER["cli"], app_hint=_NOT_A_CHAT_SERVER["app"])


def parse_reply_body(raw: bytes, endpoint: str) -> Completion:
    """A chat completion's bytes -> Completion; PolicyError for anything that is not one. Pure."""
    if not raw.strip():
        raise _unusable(endpoint, "an empty reply instead of a chat completion")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _unusable(endpoint, f"a reply that is not JSON, or is cut short ({len(raw):,} bytes, starting {_snippet(raw)})") from None
    try:
        reply = _Reply.model_validate(data)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "the reply"
        raise _unusable(endpoint, f"a reply that is not a chat completion ({where}: {first['msg']}; starting {_snippet(raw)})") from None
    choice = reply.choices[0]
    content = choice.message.content
    if not isinstance(content, str):  # null (tool calls, a reasoning-only reply) or anything but text
        raise _unusable(endpoint, f"a reply without text content (content {_short(content)}, finish_reason {choice.finish_reason!r})")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Completion(text=content, prompt_tokens=_count(usage.get("prompt_tokens")), completion_tokens=_count(usage.get("completion_tokens")))


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _snippet(raw: bytes, limit: int = 60) -> str:
    return repr(raw[:limit].decode("utf-8", "replace")) + ("..." if len(raw) > limit else "")


def _cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    return f"{e.__class__.__name__}: {e}" if str(e) else e.__class__.__name__


def _detail(e: openai.APIStatusError, limit: int = 300) -> str:
    """The server's own words: vLLM's JSON `message`, or an HTML error page's text, shortened."""
    body = e.body
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        text = str(message if message is not None else body)
    elif isinstance(body, str) and body:
        text = body
    else:
        text = str(getattr(e, "message", "") or e)
    if "<" in text and ">" in text:  # an HTML page (a proxy's 502): its words only
        text = html.unescape(re.sub(r"(?s)<(script|style).*?</\1>|<[^>]+>", " ", text))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _status_error(endpoint: str, model: str, e: openai.APIStatusError) -> PolicyError:
    status = e.status_code
    detail = _detail(e)
    low = detail.lower()
    where = f"model server {endpoint} answered HTTP {status}"
    if status == 400 and any(w in low for w in _CONTEXT_WORDS):
        return PolicyError(f"{where}: the conversation is longer than the model's context ({detail})",
                           cli_hint="lower --max-turns, or start vLLM with a larger --max-model-len",
                           app_hint="lower the turn budget, or restart the model server with a longer context (max-model-len)")
    if status == 400 and "image" in low and any(w in low for w in _IMAGE_LIMIT_WORDS):
        return PolicyError(f"{where}: too many images in one prompt ({detail})",
                           cli_hint="start vLLM with --limit-mm-per-prompt image=10",
                           app_hint="restart the model server allowing 10 images per prompt (limit-mm-per-prompt)")
    if status == 404:
        return PolicyError(f"{where}: model {model!r} not found ({detail})",
                           cli_hint="pass the served name with --model (the server lists them at GET /v1/models)",
                           app_hint="set the served model name on the Settings page")
    if status in (401, 403):
        return PolicyError(f"{where}: not authorised ({detail})", cli_hint="pass the right --api-key",
                           app_hint="set the right API key on the Settings page")
    if status >= 500:
        return PolicyError(f"{where}: server error ({detail})", cli_hint="check the server's log", app_hint="check the model server's log")
    return PolicyError(f"{where}: {detail}")


def health(base_url: str, api_key: str = "EMPTY", timeout: float = 3.0) -> dict:
    """Is an OpenAI-compatible server up? GET {base_url}/models, within `timeout` seconds in all.

    Returns {"ok": bool, "url": ..., "models": [ids], "error": str | None}; never raises.
    """
    try:
        base = normalize_base_url(base_url)
    except ValueError as e:
        return {"ok": False, "url": str(base_url), "models": [], "error": str(e)}
    url = f"{base}/models"

    def models(_cancelled) -> list[str]:
        client = openai.OpenAI(base_url=base, api_key=api_key or "EMPTY", timeout=timeout, max_retries=0)
        try:
            return [str(m.id) for m in client.models.list()]
        finally:
            client.close()

    try:
        found = run_before(models, timeout, name="vllm-health")
    except DeadlinePassed:
        return {"ok": False, "url": url, "models": [], "error": f"{url} did not answer within {timeout:g} s"}
    except openai.APIStatusError as e:
        return {"ok": False, "url": url, "models": [], "error": f"HTTP {e.status_code} from {url}"}
    except openai.APIError as e:
        return {"ok": False, "url": url, "models": [], "error": f"cannot reach {url} ({_cause(e)})"}
    except Exception as e:  # noqa: BLE001 - a reply of the wrong shape, whatever the SDK makes of it
        return {"ok": False, "url": url, "models": [], "error": f"{url} did not send a list of models ({e.__class__.__name__})"}
    return {"ok": True, "url": url, "models": found, "error": None}
