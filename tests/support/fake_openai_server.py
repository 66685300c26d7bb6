"""A local OpenAI-compatible chat server that replays scripted replies, for tests.

It stands in for a vLLM server with the VRAG weights (which cannot run here) and speaks the same
protocol over real HTTP on 127.0.0.1: `POST /v1/chat/completions` (non-streaming) and
`GET /v1/models`. Like vLLM it checks the request (messages present, images are decodable base64
data URLs, at most `limit_images` images per prompt) and answers errors in vLLM's JSON shape.
Every request body is recorded, so a test can assert exactly what the client sent.

A script entry is one of:
- a string: the assistant's reply;
- a callable(body) -> str: a reply computed from the request;
- `Fail(status, message)`: an HTTP error with vLLM's error body;
- `Slow(seconds, reply)`: answer after a delay (for client timeouts).
Misbehaving servers, for fault injection (tests/integration/test_agent_faults.py):
- `Raw(status, body, content_type, length)`: exactly these bytes (a 502 HTML page, a body cut
  short, an empty body, a wrong shape, 20 MB); a `length` above len(body) declares more than is
  sent, and the connection is closed mid-body;
- `Trickle(body, interval)`: headers at once, then the body one byte every `interval` seconds;
- `Hang()`: read the request and never answer (until the server stops).
When the script runs out the server answers 500, so a test never hangs on a missing reply.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from PIL import Image

IMAGE_PREFIX = "data:image;base64,"
CONTEXT_ERROR = (
    "This model's maximum context length is 32768 tokens. However, you requested 40213 tokens "
    "(40213 in the messages, 0 in the completion). Please reduce the length of the messages or completion."
)


@dataclass
class Fail:
    status: int
    message: str


@dataclass
class Slow:
    seconds: float
    reply: str


@dataclass
class Raw:
    status: int
    body: bytes
    content_type: str = "application/json"
    length: int | None = None  # the Content-Length to declare (default: len(body))


@dataclass
class Trickle:
    body: bytes
    interval: float = 1.0


@dataclass
class Hang:
    pass


def completion_json(text, model: str = "Qwen/Qwen2.5-VL-7B-Instruct", prompt_tokens: int = 1, completion_tokens: int = 1) -> dict:
    """vLLM's non-streaming chat completion body for one reply `text`."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    }


def decode_images(body: dict) -> list[Image.Image]:
    """All images of a chat request, decoded (raises ValueError on a bad one)."""
    images = []
    for message in body.get("messages", []):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if part.get("type") != "image_url":
                continue
            url = part["image_url"]["url"]
            if not url.startswith(IMAGE_PREFIX):
                raise ValueError(f"image url does not start with {IMAGE_PREFIX!r}: {url[:40]!r}")
            try:
                data = base64.b64decode(url[len(IMAGE_PREFIX):], validate=True)
                image = Image.open(io.BytesIO(data))
                image.load()
            except (binascii.Error, OSError) as e:
                raise ValueError(f"undecodable image: {e}") from e
            images.append(image)
    return images


class FakeOpenAIServer:
    """`with FakeOpenAIServer(["<think>..</think><search>..</search>", ...]) as server: server.base_url`"""

    def __init__(self, script: list, model: str = "Qwen/Qwen2.5-VL-7B-Instruct", limit_images: int = 10):
        self.script = list(script)
        self.model = model
        self.limit_images = limit_images
        self.requests: list[dict] = []  # bodies of chat completion requests, in order
        self.paths: list[str] = []  # every request line path
        self.arrivals: list[float] = []  # time.monotonic() when each chat request was read (to measure deadlines)
        self.hung_up: list[float] = []  # time.monotonic() when a client closed the connection before the reply was sent
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # ends Hang and Trickle replies when the server stops
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _next(self):
        with self._lock:
            return self.script.pop(0) if self.script else Fail(500, "fake server: the script has no more replies")

    def __enter__(self) -> "FakeOpenAIServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def handle_one_request(self):  # a client that gave up (deadline, size cap) is not an error here
                try:
                    super().handle_one_request()
                except (BrokenPipeError, ConnectionResetError):
                    server.hung_up.append(time.monotonic())
                    self.close_connection = True

            def _raw(self, entry: Raw) -> None:
                self.send_response(entry.status)
                self.send_header("Content-Type", entry.content_type)
                self.send_header("Content-Length", str(len(entry.body) if entry.length is None else entry.length))
                self.end_headers()
                self.wfile.write(entry.body)
                if entry.length is not None and entry.length > len(entry.body):
                    self.wfile.flush()
                    self.close_connection = True  # hang up mid-body

            def _trickle(self, entry: Trickle) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(entry.body)))
                self.end_headers()
                self.wfile.flush()
                for i in range(len(entry.body)):
                    if server._stopping.wait(entry.interval):
                        break
                    self.wfile.write(entry.body[i:i + 1])
                    self.wfile.flush()
                self.close_connection = True

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str) -> None:
                kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
                self._send(status, {"object": "error", "message": message, "type": kind, "param": None, "code": status})

            def do_GET(self):
                server.paths.append(self.path)
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model", "owned_by": "vllm"}]})
                else:
                    self._error(404, f"no route {self.path}")

            def do_POST(self):
                server.paths.append(self.path)
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if self.path != "/v1/chat/completions":
                    return self._error(404, f"no route {self.path}")
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._error(400, "request body is not JSON")
                server.requests.append(body)
                server.arrivals.append(time.monotonic())
                if body.get("model") != server.model:
                    return self._error(404, f"The model `{body.get('model')}` does not exist.")
                if not isinstance(body.get("messages"), list) or not body["messages"]:
                    return self._error(400, "messages must be a non-empty list")
                try:
                    images = decode_images(body)
                except (ValueError, KeyError, TypeError) as e:
                    return self._error(400, str(e))
                if len(images) > server.limit_images:
                    return self._error(400, f"At most {server.limit_images} image(s) may be provided in one request.")
                entry = server._next()
                if isinstance(entry, Fail):
                    return self._error(entry.status, entry.message)
                if isinstance(entry, Raw):
                    return self._raw(entry)
                if isinstance(entry, Trickle):
                    return self._trickle(entry)
                if isinstance(entry, Hang):
                    server._stopping.wait()
                    self.close_connection = True
                    return
                if isinstance(entry, Slow):
                    time.sleep(entry.seconds)
                    entry = entry.reply
                text = entry(body) if callable(entry) else entry
                prompt_tokens = len(raw) // 16 + 300 * len(images)  # deterministic stand-in for a real count
                completion_tokens = max(1, len(text) // 4)
                reply = completion_json(text, server.model, prompt_tokens, completion_tokens)
                reply["id"] = f"chatcmpl-{len(server.requests)}"
                self._send(200, reply)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (connection refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


Script = list[str | Fail | Slow | Raw | Trickle | Hang | Callable[[dict], str]]
