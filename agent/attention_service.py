"""The attention service: attention maps computed where the GPU is, beside the vLLM server.

    python -m agent serve-attention --model /models/Qwen2.5-VL-7B-VRAG --device cuda --dtype bfloat16

vLLM returns no attention, so maps come from re-running a trajectory through the same weights
(agent/attention.py). A laptop cannot hold a 7B model's re-forward; this service loads the weights
once on the GPU machine and computes the maps of a trajectory SENT to it: the trajectory record
and the exact JPEG bytes the model saw travel in the request, and nothing else is read from disk
(no path in a request is ever opened). agent/attention_client.py speaks to it.

API (JSON; with a token, every call needs `Authorization: Bearer <token>`):
- `GET /health`: the model, device, layers and heads, the limits, the queue.
- `POST /estimate` {trajectory, request}: how long it should take here (queue included), the memory
  it needs, and whether it fits (`fits`, `reason`). No images needed.
- `POST /jobs` {trajectory, images: {file: base64 JPEG}, request}: checks everything, then queues
  the job: 202 {job, state, position, estimate}. Refused before it starts, with {"error": reason}:
  422 for a malformed request or a trajectory that cannot be re-run (missing image, bad layers or
  head), 413 when it would not fit (more tokens than the model's context or --max-tokens, or more
  memory than the device has free), 429 when the queue is full.
- `GET /jobs/{id}`: {state: queued|running|done|error|cancelled, stage, fraction, position (jobs
  ahead), submitted_at, started_at, finished_at, error}.
- `GET /jobs/{id}/result`: the maps (`MapsResult.to_wire`, arrays exact) once done; 409 before.
- `DELETE /jobs/{id}`: cancel (a running job stops at its next layer).

One job runs at a time (one worker thread per service, i.e. per device), the rest wait in order.
Finished jobs are kept for the last `keep_finished` jobs, then forgotten.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.attention import AttentionError, MapsResult, compute_maps, plan_reforward
from agent.attention_cost import (
    REPLY_ROWS,
    ModelShape,
    ReforwardEstimate,
    available_bytes,
    context_views,
    estimate_for_shape,
    image_tokens,
    measure_flops,
    memory_bytes,
    up_to_turn,
)
from agent.attention_request import MapRequest
from agent.qwen_model import LoadedQwenVL
from agent.trajectory import Trajectory, TrajectoryFormatError

log = logging.getLogger(__name__)

API_VERSION = "1"
MEMORY_SHARE = 0.8  # of the memory free at start that one pass may plan to use


@dataclass
class ServiceLimits:
    max_tokens: int | None = None  # below the model's own context, if given
    memory_bytes: int | None = None  # for one pass beyond the weights; None: MEMORY_SHARE of what is free at start
    max_queued: int = 4  # jobs waiting (the running one not counted)
    max_body_bytes: int = 256 * 2**20
    keep_finished: int = 16


class Refused(Exception):
    """A job refused before it starts: HTTP `status` with a reason for a person."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class Cancelled(Exception):
    pass


@dataclass
class Job:
    id: str
    trajectory: Trajectory
    images: dict[str, bytes]
    request: MapRequest
    plan: object  # agent.attention._Plan, made at submission
    estimate: ReforwardEstimate
    state: str = "queued"
    stage: str = "queued"
    fraction: float = 0.0
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    result: MapsResult | None = None
    error: str | None = None
    error_status: int = 500
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "error", "cancelled")

    def status(self, position: int) -> dict:
        return {
            "job": self.id, "state": self.state, "stage": self.stage, "fraction": round(self.fraction, 4), "position": position,
            "submitted_at": self.submitted_at, "started_at": self.started_at, "finished_at": self.finished_at,
            "error": self.error, "request": self.request.to_dict(), "estimate": self.estimate.to_dict(),
        }


class JobQueue:
    """Jobs run one at a time, in submission order, on one worker thread."""

    def __init__(self, run, max_queued: int, keep_finished: int):
        self._run = run
        self._max_queued = max_queued
        self._keep = keep_finished
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._waiting: list[Job] = []
        self._running: Job | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="attention-worker", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> int:
        with self._cond:
            if len(self._waiting) >= self._max_queued:
                raise Refused(429, f"the attention service is busy: {len(self._waiting)} jobs are already waiting (at most {self._max_queued}); try again later")
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._cond.notify_all()
            return self._position(job)

    def _position(self, job: Job) -> int:
        """Jobs ahead of this one (the running one included)."""
        if job.state != "queued":
            return 0
        return self._waiting.index(job) + (self._running is not None)

    def get(self, job_id: str) -> tuple[Job, int] | None:
        with self._cond:
            job = self._jobs.get(job_id)
            return (job, self._position(job)) if job else None

    def cancel(self, job_id: str) -> tuple[Job, int] | None:
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.state == "queued":
                self._waiting.remove(job)
                self._finish(job, "cancelled", stage="cancelled before it started")
            elif job.state == "running":
                job.cancel.set()
            return job, self._position(job)

    def seconds_ahead(self) -> float:
        """Estimated seconds until a job submitted now would start."""
        with self._cond:
            left = sum(j.estimate.forward_seconds for j in self._waiting)
            if self._running is not None:
                left += self._running.estimate.forward_seconds * (1 - self._running.fraction)
            return left

    def summary(self) -> dict:
        with self._cond:
            return {"waiting": len(self._waiting), "running": self._running.id if self._running else None, "max_waiting": self._max_queued}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for job in self._waiting:
                job.cancel.set()
            self._cond.notify_all()
        if self._running is not None:
            self._running.cancel.set()
        self._thread.join(timeout=30)

    def _finish(self, job: Job, state: str, **fields) -> None:
        job.state, job.finished_at = state, time.time()
        for k, v in fields.items():
            setattr(job, k, v)
        job.images, job.plan = {}, None  # free the pixels
        finished = [j for j in self._jobs.values() if j.finished]
        for old in finished[: max(0, len(finished) - self._keep)]:
            del self._jobs[old.id]

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._waiting.pop(0)
                job.state, job.stage, job.started_at = "running", "starting", time.time()
                self._running = job
            try:
                result = self._run(job)
            except Cancelled:
                outcome = ("cancelled", {"stage": "cancelled while running"})
            except (AttentionError, ValueError) as e:
                outcome = ("error", {"error": str(e), "error_status": 422})
            except MemoryError:
                outcome = ("error", {"error": "the service ran out of memory during the pass; send fewer images or keep fewer layers", "error_status": 413})
            except Exception as e:  # noqa: BLE001 - the worker must survive any job
                if "out of memory" in str(e).lower():
                    outcome = ("error", {"error": f"the device ran out of memory during the pass ({e}); send fewer images or keep fewer layers", "error_status": 413})
                else:
                    log.exception("attention job %s failed", job.id)
                    outcome = ("error", {"error": f"internal error ({type(e).__name__}: {e}); see the service log"})
            else:
                outcome = ("done", {"result": result, "stage": "done", "fraction": 1.0})
            with self._cond:
                self._running = None
                self._finish(job, outcome[0], **outcome[1])
                self._cond.notify_all()


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message}, headers=headers)


def _field(body: dict, name: str, kind: type):
    if name not in body:
        raise Refused(422, f"the request needs a {name!r} field")
    if not isinstance(body[name], kind):
        raise Refused(422, f"{name!r} must be a JSON {kind.__name__.replace('dict', 'object').replace('list', 'array')}")
    return body[name]


def _parse_trajectory(body: dict) -> Trajectory:
    try:
        trajectory = Trajectory.from_dict(_field(body, "trajectory", dict))
    except TrajectoryFormatError as e:
        raise Refused(422, str(e)) from None
    except (KeyError, TypeError, ValueError) as e:
        raise Refused(422, f"the trajectory is not valid: {e}") from None
    if not trajectory.turns:
        raise Refused(422, "the trajectory has no turns")
    return trajectory


def _parse_request(body: dict) -> MapRequest:
    try:
        return MapRequest.from_dict(body.get("request") or {})
    except (TypeError, ValueError) as e:
        raise Refused(422, f"the map request is not valid: {e}") from None


def _parse_images(body: dict, trajectory: Trajectory) -> dict[str, bytes]:
    sent = _field(body, "images", dict)
    needed = {v.file for v in context_views(trajectory)}
    shown = {t.observation.file for t in trajectory.turns if t.observation is not None}
    missing, extra = sorted(needed - set(sent)), sorted(set(sent) - shown)
    if missing:
        raise Refused(422, f"the request lacks the image(s) the model saw: {missing}; send the trajectory's JPEG files as they are")
    if extra:
        raise Refused(422, f"the request holds image(s) the trajectory never shows: {extra}")
    images = {}
    for name in needed:
        try:
            images[name] = base64.b64decode(sent[name], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise Refused(422, f"image {name!r} is not valid base64") from None
    return images


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


class AttentionWorker:
    """What a service does with one loaded model: check, estimate and compute jobs."""

    def __init__(self, loaded: LoadedQwenVL, limits: ServiceLimits, attn_implementation: str = "sdpa"):
        self.loaded = loaded
        self.limits = limits
        self.attn_implementation = attn_implementation
        self.shape = ModelShape.from_loaded(loaded)
        self.heads = loaded.model.config.text_config.num_attention_heads
        self.max_tokens = min(self.shape.max_positions, limits.max_tokens or self.shape.max_positions)
        self.memory_budget = limits.memory_bytes if limits.memory_bytes is not None else int(MEMORY_SHARE * available_bytes(loaded.device))
        self.flops = measure_flops(loaded.device, self.shape.dtype)
        self.queue = JobQueue(self.run, limits.max_queued, limits.keep_finished)
        # the fast tokenizer is not safe to share between threads ("Already borrowed"): one plan at a time
        self._planning = threading.Lock()

    def describe(self) -> dict:
        return {
            "model": self.loaded.name, "device": self.loaded.device, "dtype": self.shape.dtype, "layers": self.shape.layers,
            "heads": self.heads, "max_tokens": self.max_tokens, "memory_budget_bytes": self.memory_budget,
            "attn_implementation": self.attn_implementation,
        }

    def fit_reason(self, tokens: int, per_image: list[int], rows: int = REPLY_ROWS) -> str | None:
        """Why a pass of this size would not fit here, or None when it fits."""
        if tokens > self.max_tokens:
            limit = "the model's context" if self.max_tokens == self.shape.max_positions else "this service's limit (--max-tokens)"
            return (f"the re-forward needs {tokens:,} tokens but {limit} is {self.max_tokens:,}; "
                    f"ask for an earlier turn alone (the pass then ends at its reply)")
        need = memory_bytes(self.shape, tokens, per_image, self.attn_implementation, rows=rows)["total"]
        if need > self.memory_budget:
            return (f"the re-forward needs about {_gb(need)} beyond the weights ({tokens:,} tokens, {len(per_image)} images) but "
                    f"this service may use {_gb(self.memory_budget)} on {self.loaded.device}; send fewer images or a shorter trajectory")
        return None

    def estimate(self, trajectory: Trajectory, request: MapRequest, tokens: int | None = None) -> ReforwardEstimate:
        return estimate_for_shape(up_to_turn(trajectory, request.turn), self.shape, flops_per_second=self.flops, layers=request.layers, tokens=tokens,
                                  attn_implementation=self.attn_implementation, where=f"the attention service ({self.loaded.device})",
                                  wait_seconds=self.queue.seconds_ahead())

    def check_request(self, request: MapRequest) -> None:
        try:
            request.check(self.shape.layers, self.heads)
        except ValueError as e:
            raise Refused(422, str(e)) from None

    def prepare(self, body: dict) -> Job:
        """Everything checked and planned before the job is queued; Refused otherwise."""
        trajectory = _parse_trajectory(body)
        request = _parse_request(body)
        self.check_request(request)
        images = _parse_images(body, trajectory)
        try:
            with self._planning:
                plan = plan_reforward(trajectory, images, self.loaded.processor, request)
        except (AttentionError, ValueError) as e:
            raise Refused(422, f"the trajectory cannot be re-run: {e}") from None
        except OSError as e:  # an image that does not decode
            raise Refused(422, f"an image of the trajectory cannot be read: {e}") from None
        per_image = [e - s for s, e in plan.image_spans]
        rows = max((r.size for r in plan.rows + plan.baseline_rows), default=1)
        reason = self.fit_reason(plan.tokens, per_image, rows)
        if reason:
            raise Refused(413, reason)
        return Job(id=uuid.uuid4().hex[:12], trajectory=trajectory, images=images, request=request, plan=plan,
                   estimate=self.estimate(trajectory, request, tokens=plan.tokens))

    def run(self, job: Job) -> MapsResult:
        def progress(stage: str, fraction: float) -> None:
            if job.cancel.is_set():
                raise Cancelled
            job.stage, job.fraction = stage, fraction

        return compute_maps(self.loaded, job.trajectory, job.images, job.request, progress, plan=job.plan)


def create_app(loaded: LoadedQwenVL, *, token: str | None = None, limits: ServiceLimits | None = None,
               attn_implementation: str = "sdpa", title: str = "VRAG Studio attention") -> FastAPI:
    """A FastAPI app computing attention maps with `loaded`; `app.state.worker` holds the queue."""
    limits = limits or ServiceLimits()
    worker = AttentionWorker(loaded, limits, attn_implementation)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.queue.close()

    app = FastAPI(title=title, version=API_VERSION, lifespan=lifespan)
    app.state.worker = worker

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _error(401, "this attention service needs its bearer token (Authorization: Bearer ...)", {"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
            return _error(413, f"the request is {int(length) / 2**20:.0f} MB; this service takes at most {limits.max_body_bytes / 2**20:.0f} MB")
        return await call_next(request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404 and exc.detail == "Not Found":
            return _error(404, f"no endpoint {request.method} {request.url.path}; the API is described at /docs")
        if exc.status_code == 405:
            return _error(405, f"{request.method} is not allowed on {request.url.path}", exc.headers)
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused):
        return _error(exc.status, str(exc))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("error serving %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the service log")

    async def json_body(request: Request) -> dict:
        raw = await request.body()
        if len(raw) > limits.max_body_bytes:
            raise Refused(413, f"the request is {len(raw) / 2**20:.0f} MB; this service takes at most {limits.max_body_bytes / 2**20:.0f} MB")
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise Refused(422, f"the request body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise Refused(422, "the request body must be a JSON object")
        return body

    def found(job_id: str, answer) -> tuple[Job, int]:
        if answer is None:
            raise Refused(404, f"no job {job_id!r} here (finished jobs are kept for the last {limits.keep_finished})")
        return answer

    @app.get("/health", summary="The model, device, limits and queue")
    def health() -> dict:
        return {"status": "ok", "version": API_VERSION, **worker.describe(), "queue": worker.queue.summary()}

    @app.post("/estimate", summary="How long a job would take here, and whether it fits (no images needed)")
    async def estimate(request: Request) -> dict:
        body = await json_body(request)
        trajectory, map_request = _parse_trajectory(body), _parse_request(body)
        worker.check_request(map_request)
        guess = await run_in_threadpool(worker.estimate, trajectory, map_request)
        views = context_views(up_to_turn(trajectory, map_request.turn))
        reason = worker.fit_reason(guess.tokens, [image_tokens(v, worker.shape) for v in views])
        return {"estimate": guess.to_dict(), "fits": reason is None, "reason": reason, **worker.describe()}

    @app.post("/jobs", status_code=202, summary="Check and queue a job: 202, or refused with a reason")
    async def submit(request: Request) -> dict:
        body = await json_body(request)
        job = await run_in_threadpool(worker.prepare, body)
        position = worker.queue.submit(job)
        log.info("queued attention job %s (%s, %d tokens) at position %d", job.id, job.request.key(), job.plan.tokens if job.plan else 0, position)
        return job.status(position)

    @app.get("/jobs/{job_id}", summary="A job's state and progress")
    def status(job_id: str) -> dict:
        job, position = found(job_id, worker.queue.get(job_id))
        return job.status(position)

    @app.get("/jobs/{job_id}/result", summary="The maps of a finished job")
    def result(job_id: str):
        job, position = found(job_id, worker.queue.get(job_id))
        if job.state == "error":
            return _error(job.error_status, job.error)
        if job.state == "cancelled":
            return _error(409, f"job {job_id} was cancelled")
        if job.state != "done":
            return _error(409, f"job {job_id} is {job.state} ({job.stage}); ask again when its state is done")
        return job.result.to_wire()

    @app.delete("/jobs/{job_id}", summary="Cancel a job")
    def cancel(job_id: str) -> dict:
        job, position = found(job_id, worker.queue.cancel(job_id))
        return job.status(position)

    return app
