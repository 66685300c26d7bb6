"""Where attention maps are computed: in this process, or by the attention service over HTTP.

    backend = attention_backend(model="/models/Qwen2.5-VL-7B-VRAG")          # here
    backend = attention_backend(service_url="http://gpu-box:8003", token=t)  # agent/attention_service.py
    backend.estimate(trajectory, request).summary()  # "about 40 s in the attention service at ... (cuda) ..."
    run = compute_attention_maps(folder, backend, request, progress=...)       # stored the same way

Both backends answer the same two calls, so the app's attention panel and `python -m agent
attention` do not care which one they hold, and both give the same arrays for the same trajectory
and request (tests/integration/test_attention_service.py checks it over real HTTP):
- `estimate(trajectory, request) -> ReforwardEstimate` (where it runs, how long, how much memory);
- `compute(trajectory, images, request, progress=None) -> MapsResult`; `progress(stage, fraction)`
  may raise to cancel (the service is then told to drop the job).
No Streamlit here; failures are `AttentionServiceError` (a PolicyError: words for a person, plus
hints for the CLI and the app).
"""
from __future__ import annotations

import base64
import logging
import time
from typing import Protocol

import httpx

from agent.attention import AttentionRun, MapsResult, Progress, compute_attention_maps, compute_maps, store_maps
from agent.attention_cost import ReforwardEstimate, estimate_reforward
from agent.attention_request import MapRequest
from agent.policies.base import PolicyError
from agent.qwen_model import LoadedQwenVL, load_qwen_vl
from agent.trajectory import Trajectory

log = logging.getLogger(__name__)

SERVE_HINT = "start it on the GPU machine with: python -m agent serve-attention --model DIR --device cuda --dtype bfloat16"


class AttentionServiceError(PolicyError):
    """The attention service is unreachable, refused the job, or failed it. `status` is the HTTP
    status when the service answered (413: does not fit, 422: bad request, 429: busy)."""

    def __init__(self, message: str, *, status: int | None = None, cli_hint: str | None = None, app_hint: str | None = None):
        super().__init__(message, cli_hint=cli_hint, app_hint=app_hint)
        self.status = status


class AttentionBackend(Protocol):
    def estimate(self, trajectory: Trajectory, request: MapRequest) -> ReforwardEstimate: ...

    def compute(self, trajectory: Trajectory, images: dict[str, bytes], request: MapRequest, progress: Progress | None = None) -> MapsResult: ...

    def describe(self) -> str: ...


class InProcess:
    """The maps computed in this process, with a model loaded here (once, on first use)."""

    def __init__(self, model: LoadedQwenVL | str, *, device: str = "cpu", dtype: str = "auto", attn_implementation: str = "sdpa"):
        self._model = model
        self._options = {"device": device, "dtype": dtype, "attn_implementation": attn_implementation}

    @property
    def loaded(self) -> LoadedQwenVL:
        if not isinstance(self._model, LoadedQwenVL):
            self._model = load_qwen_vl(self._model, **self._options)
        return self._model

    def estimate(self, trajectory: Trajectory, request: MapRequest) -> ReforwardEstimate:
        return estimate_reforward(trajectory, self._model, device=self._options["device"], layers=request.layers, turn=request.turn)

    def compute(self, trajectory, images, request, progress=None) -> MapsResult:
        return compute_maps(self.loaded, trajectory, images, request, progress)

    def describe(self) -> str:
        name = self._model.name if isinstance(self._model, LoadedQwenVL) else str(self._model)
        return f"this process ({name})"


class AttentionService:
    """The attention service at `url` (agent/attention_service.py)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0, poll_seconds: float = 0.5, client: httpx.Client | None = None):
        if not url.startswith(("http://", "https://")):
            raise AttentionServiceError(f"the attention service address {url!r} must start with http:// or https://",
                                        app_hint="Give the full address on the Settings page, e.g. http://gpu-box:8003.")
        self.url = url.rstrip("/")
        self.poll_seconds = poll_seconds
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = client or httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def describe(self) -> str:
        return f"the attention service at {self.url}"

    def close(self) -> None:
        self._client.close()

    # --- HTTP ------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs) -> dict:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise AttentionServiceError(f"the attention service at {self.url} did not answer in time", cli_hint=SERVE_HINT) from None
        except httpx.HTTPError as e:
            raise AttentionServiceError(
                f"the attention service at {self.url} is not reachable ({type(e).__name__}: {e})",
                cli_hint=SERVE_HINT, app_hint="Start the attention service on the GPU machine, or clear its address on the Settings page to compute here.",
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            reason = body.get("error") if isinstance(body, dict) else response.text[:300]
            if response.status_code == 401:
                raise AttentionServiceError(f"the attention service at {self.url} refused the token: {reason}", status=401,
                                            app_hint="Set the service's token on the Settings page.", cli_hint="pass --token TOKEN")
            raise AttentionServiceError(f"the attention service refused: {reason}", status=response.status_code)
        if not isinstance(body, dict):
            raise AttentionServiceError(f"the attention service at {self.url} answered {path} with something that is not a JSON object")
        return body

    def health(self) -> dict:
        return self._call("GET", "/health")

    def estimate(self, trajectory: Trajectory, request: MapRequest) -> ReforwardEstimate:
        answer = self._call("POST", "/estimate", json={"trajectory": trajectory.to_dict(), "request": request.to_dict()})
        estimate = ReforwardEstimate.from_dict(answer["estimate"])
        estimate.where = f"{self.describe()} ({answer.get('device', '?')})"
        if not answer.get("fits", True):
            estimate.where += f"; it would be refused: {answer.get('reason')}"
        return estimate

    def submit(self, trajectory: Trajectory, images: dict[str, bytes], request: MapRequest) -> dict:
        body = {"trajectory": trajectory.to_dict(), "request": request.to_dict(),
                "images": {name: base64.b64encode(data).decode() for name, data in images.items()}}
        return self._call("POST", "/jobs", json=body)

    def status(self, job_id: str) -> dict:
        return self._call("GET", f"/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict:
        return self._call("DELETE", f"/jobs/{job_id}")

    def result(self, job_id: str, trajectory: Trajectory) -> MapsResult:
        return MapsResult.from_wire(self._call("GET", f"/jobs/{job_id}/result"), trajectory)

    def compute(self, trajectory, images, request, progress=None) -> MapsResult:
        """Submit, wait (reporting queue position and progress), and fetch the maps."""
        job = self.submit(trajectory, images, request)
        job_id = job["job"]
        try:
            while job["state"] in ("queued", "running"):
                if progress:
                    stage = f"waiting behind {job['position']} job(s)" if job["state"] == "queued" else job["stage"]
                    progress(stage, float(job["fraction"]))
                time.sleep(self.poll_seconds)
                job = self.status(job_id)
        except BaseException:
            if job.get("state") in ("queued", "running"):
                try:
                    self.cancel(job_id)
                except AttentionServiceError as e:
                    log.warning("could not cancel attention job %s: %s", job_id, e)
            raise
        if job["state"] != "done":
            raise AttentionServiceError(f"the attention service's job {job_id} ended {job['state']}: {job.get('error') or job.get('stage')}")
        result = self.result(job_id, trajectory)
        if progress:
            progress("done", 1.0)
        return result


def attention_backend(model: str | LoadedQwenVL | None = None, service_url: str = "", token: str | None = None, **options) -> AttentionBackend:
    """The service when a URL is given, else this process with `model` (a folder, hub id or loaded model)."""
    if service_url.strip():
        return AttentionService(service_url.strip(), token or None)
    if model is None or (isinstance(model, str) and not model.strip()):
        raise AttentionServiceError(
            "attention maps need either the same Qwen2.5-VL weights that produced the trajectory, here, or the address of an attention service",
            cli_hint="pass --model DIR, or --service URL (python -m agent serve-attention on the GPU machine)",
            app_hint="Give a local model folder or the attention service's address on the Settings page.",
        )
    return InProcess(model.strip() if isinstance(model, str) else model, **options)


def compute_choice(folder, backend: AttentionBackend, request: MapRequest, progress: Progress | None = None) -> AttentionRun:
    """Compute `request`'s maps of the saved trajectory in `folder` with `backend` and store them as
    that choice, the record naming where they were computed (`computed_by`, for people)."""
    run = compute_attention_maps(folder, backend, request, progress=progress, save=False)
    return store_maps(folder, run.trajectory, run.result, extra={"computed_by": backend.describe()})


def check_service(url: str, token: str = "", timeout: float = 3.0) -> dict:
    """Whether the attention service at `url` answers its /health, in words for a person.

    Returns {"ok", "label", "detail"} (the Settings page's check format) plus "health" (the service's
    answer: model, device, layers, heads, queue) when it answered. Never raises.
    """
    label = "Attention service"
    url = url.strip()
    if not url:
        return {"ok": False, "label": label, "detail": "no attention service address set; maps are computed in this process"}
    try:
        service = AttentionService(url, token or None, timeout=timeout)
    except AttentionServiceError as e:
        return {"ok": False, "label": label, "detail": f"{e}. {e.app_hint}" if e.app_hint else str(e)}
    try:
        health = service.health()
    except AttentionServiceError as e:
        if e.status == 401:
            detail = (f"{service.url} answers but refused the token given: give the token the service was started with"
                      if token else f"{service.url} answers but needs a token: give the token the service was started with")
        elif e.status is not None:
            detail = f"{service.url} answered HTTP {e.status} to a health check, so it is probably not an attention service: is this the right address and port?"
        elif "not a JSON object" in str(e):
            detail = f"{service.url} answered, but not as an attention service does: is this the right address and port?"
        else:
            detail = f"{e}. Is the service started on that machine and port, and reachable from here?"
        return {"ok": False, "label": label, "detail": detail}
    except (httpx.HTTPError, ValueError) as e:  # an address httpx cannot even use
        return {"ok": False, "label": label, "detail": f"{url!r} is not a usable address ({type(e).__name__}: {e})"}
    finally:
        service.close()
    if health.get("status") != "ok" or not isinstance(health.get("layers"), int):
        return {"ok": False, "label": label, "detail": f"{service.url} answered, but not as an attention service does: is this the right address and port?"}
    queue = health.get("queue") or {}
    waiting = int(queue.get("waiting") or 0)
    busy = "; a job is running" if queue.get("running") else ""
    return {"ok": True, "label": label, "health": health,
            "detail": (f"{service.url} is up: {health.get('model', '?')} on {health.get('device', '?')} "
                       f"({health['layers']} layers, {health.get('heads', '?')} heads); {waiting} job(s) waiting{busy}")}
