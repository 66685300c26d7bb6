"""The attention service over real HTTP, with the tiny random Qwen2.5-VL on CPU.

In-process servers (uvicorn in a thread, tests/support/served.py) share the test's loaded model, so the
service path and the in-process path can be compared bit for bit; one test starts the real
`python -m agent serve-attention` in an empty directory with an empty HOME, beside planted decoy
files, and stops it after.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from agent.attention import compute_attention_maps, load_choice, read_images
from agent.attention_client import AttentionService, AttentionServiceError, attention_backend
from agent.attention_request import MapRequest
from agent.attention_service import ServiceLimits, create_app
from agent.qwen_model import load_qwen_vl
from agent.trajectory import Trajectory
from support.map_checks import assert_same_map
from support.served import serving
from support.tiny_vlm import ROOT, TrajectoryBuilder, tiny_model_dir

REQUESTS = [
    MapRequest(select="answer"),
    MapRequest(select="bbox", layers=(1, 1), head=3, reduce="max"),
    MapRequest(select="token", turn=2, token=3),
    MapRequest(select="reply", layers=(0, 0), per_head=True),
    MapRequest(select="reply", sink="drop"),
    MapRequest(select="action", sink="baseline", reduce="max"),
]


@pytest.fixture(scope="module")
def loaded():
    return load_qwen_vl(tiny_model_dir())


def _trajectory(demo_corpus, folder: Path, pages: int = 2) -> Path:
    names = ["slide_3_1024.jpg", "aliyun4_2.jpg", "slide_7_1024.jpg", "aliyun4_5.jpg", "slide_9_1024.jpg"]
    b = TrajectoryBuilder("What was revenue?", {f"p{i}": demo_corpus / names[i] for i in range(pages)},
                          gold={"boxes": {"p0": [100, 100, 600, 500]}})
    b.search("p0")
    b.bbox([40, 60, 500, 400])
    for i in range(1, pages):
        b.search(f"p{i}")
    b.answer("4.2 billion")
    return b.save(folder)


@pytest.fixture(scope="module")
def service(loaded):
    with serving(create_app(loaded)) as url:
        yield url


def test_service_maps_equal_the_in_process_maps(loaded, service, demo_corpus, tmp_path):
    here = _trajectory(demo_corpus, tmp_path / "here")
    there = tmp_path / "there"
    shutil.copytree(here, there)
    client = AttentionService(service, poll_seconds=0.05)
    for request in REQUESTS:
        local = compute_attention_maps(here, loaded, request)
        remote = compute_attention_maps(there, client, request)
        assert local.maps, request
        assert [(m.turn, m.view.file) for m in remote.maps] == [(m.turn, m.view.file) for m in local.maps]
        for a, b in zip(local.maps, remote.maps):
            assert a.values.dtype == b.values.dtype == np.float32
            assert_same_map(b.values, a.values, str((request, a.turn, a.view.file)))
        assert remote.skipped == local.skipped
        for turn, scores in local.scores.items():
            assert remote.scores[turn].keys() == scores.keys()
            for key, value in scores.items():
                np.testing.assert_allclose(remote.scores[turn][key], value, rtol=1e-4, atol=1e-8)
        assert remote.result.reply_tokens == local.result.reply_tokens
        for m in local.maps:  # and the stored files hold the same maps
            name = f"attention-{request.key()}-turn{m.turn:02d}-{Path(m.view.file).stem}.npy"
            assert_same_map(np.load(there / name), np.load(here / name), name)
    for a, b in zip(Trajectory.load(there).turns, Trajectory.load(here).turns):  # the current maps and scores too
        assert a.maps == b.maps and a.scores.keys() == b.scores.keys()
        assert all(abs(a.scores[k] - b.scores[k]) <= 1e-5 * abs(b.scores[k]) + 1e-12 for k in b.scores)
    assert json.loads((there / "attention.json").read_text())["settings"] == json.loads((here / "attention.json").read_text())["settings"]
    # the client's estimate says where it runs
    estimate = client.estimate(Trajectory.load(there), REQUESTS[0])
    assert service in estimate.where and "(cpu)" in estimate.where and estimate.seconds > 0
    assert estimate.tokens > 0 and estimate.memory_bytes > 0 and f"the attention service at {service}" in estimate.summary()


def _body(folder: Path, request: MapRequest) -> dict:
    trajectory = Trajectory.load(folder)
    images = read_images(folder, trajectory)
    return {"trajectory": trajectory.to_dict(), "request": request.to_dict(),
            "images": {k: base64.b64encode(v).decode() for k, v in images.items()}}


def test_requests_that_do_not_fit_or_are_wrong_are_refused_before_they_start(loaded, demo_corpus, tmp_path):
    folder = _trajectory(demo_corpus, tmp_path / "t")
    body = _body(folder, MapRequest(select="answer"))
    with serving(create_app(loaded, limits=ServiceLimits(max_tokens=600))) as url:
        answer = httpx.post(f"{url}/jobs", json=body)
        assert answer.status_code == 413
        assert "tokens but this service's limit (--max-tokens) is 600" in answer.json()["error"]
        estimate = httpx.post(f"{url}/estimate", json={"trajectory": body["trajectory"], "request": body["request"]}).json()
        assert estimate["fits"] is False and "600" in estimate["reason"]
        assert httpx.get(f"{url}/health").json()["queue"] == {"waiting": 0, "running": None, "max_waiting": 4}
        with pytest.raises(AttentionServiceError, match="--max-tokens") as refused:
            compute_attention_maps(folder, AttentionService(url), MapRequest(select="answer"))
        assert refused.value.status == 413
    with serving(create_app(loaded, limits=ServiceLimits(memory_bytes=50 * 2**20))) as url:
        answer = httpx.post(f"{url}/jobs", json=body)
        assert answer.status_code == 413 and "beyond the weights" in answer.json()["error"] and "0.0 GB" in answer.json()["error"]
    with serving(create_app(loaded)) as url:
        cases = {
            "head 9 is outside": {**body, "request": {"select": "answer", "head": 9}},
            "< 2 (the model's layer count)": {**body, "request": {"select": "answer", "layers": [0, 5]}},
            "lacks the image(s) the model saw": {**body, "images": {}},
            "never shows": {**body, "images": {**body["images"], "secret.jpg": body["images"]["turn00-page.jpg"]}},
            "not valid base64": {**body, "images": {**body["images"], "turn00-page.jpg": "%%%"}},
            "there is no token 999": {**body, "request": {"select": "token", "turn": 1, "token": 999}},
            "unknown map request fields": {**body, "request": {"select": "answer", "layer": 1}},
            "needs a 'trajectory' field": {"images": {}},
        }
        for message, bad in cases.items():
            answer = httpx.post(f"{url}/jobs", json=bad)
            assert answer.status_code == 422 and message in answer.json()["error"], (message, answer.text)
        answer = httpx.post(f"{url}/jobs", content=b"{not json", headers={"content-type": "application/json"})
        assert answer.status_code == 422 and "not JSON" in answer.json()["error"]
        assert httpx.get(f"{url}/jobs/nope").status_code == 404
        assert httpx.get(f"{url}/health").json()["queue"]["waiting"] == 0  # nothing refused was queued
    with serving(create_app(loaded, token="s3cret")) as url:
        assert httpx.get(f"{url}/health").status_code == 401
        assert httpx.get(f"{url}/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
        with pytest.raises(AttentionServiceError, match="refused the token"):
            AttentionService(url).health()
        assert AttentionService(url, token="s3cret").health()["model"] == loaded.name


def test_a_second_job_waits_for_the_first(loaded, demo_corpus, tmp_path):
    folders = [_trajectory(demo_corpus, tmp_path / f"t{i}", pages=3) for i in range(2)]
    with serving(create_app(loaded)) as url:
        bodies = [_body(f, MapRequest(select="reply")) for f in folders]
        jobs: list[dict] = [{}, {}]
        go = threading.Barrier(2)

        def submit(i):
            go.wait()
            jobs[i] = httpx.post(f"{url}/jobs", json=bodies[i], timeout=60).json()

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(2)]
        with loaded.lock:  # held, as a generation would: the first job cannot finish before the second is queued
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ids = [j["job"] for j in jobs]
            client = AttentionService(url)
            deadline = time.monotonic() + 60
            while not any(client.status(i)["state"] == "running" for i in ids):  # the worker picks one up
                assert time.monotonic() < deadline
                time.sleep(0.02)
            seen = [[(s["state"], s["position"]) for s in (client.status(i) for i in ids)]]
        while True:
            states = [httpx.get(f"{url}/jobs/{i}").json() for i in ids]
            if httpx.get(f"{url}/jobs/{ids[0]}").json()["state"] == states[0]["state"]:  # a snapshot only if the first did not change meanwhile
                seen.append([(s["state"], s["position"]) for s in states])
            if all(s["state"] in ("done", "error") for s in states):
                break
            time.sleep(0.05)
        assert [s["state"] for s in states] == ["done", "done"]
        first, second = sorted(states, key=lambda s: s["started_at"])
        assert second["started_at"] >= first["finished_at"]  # never at the same time
        assert sorted(seen[0]) == [("queued", 1), ("running", 0)], seen  # one waited, behind the other
        assert not any(snap.count(("running", 0)) > 1 for snap in seen)
        for job_id, folder in zip(ids, folders):
            result = AttentionService(url).result(job_id, Trajectory.load(folder))
            assert result.maps and result.request == MapRequest(select="reply")


def _wait_state(client, job_id, states, timeout=120):
    deadline = time.monotonic() + timeout
    while (status := client.status(job_id))["state"] not in states:
        assert time.monotonic() < deadline, status
        time.sleep(0.02)
    return status


def test_a_job_can_be_cancelled_and_the_queue_goes_on(loaded, demo_corpus, tmp_path):
    """The test holds the model's lock (as a generation in the same process would), so the first
    job is held running before its forward pass: what follows does not depend on timing."""
    folders = [_trajectory(demo_corpus, tmp_path / f"t{i}") for i in range(2)]
    trajectories = [Trajectory.load(f) for f in folders]
    images = [read_images(f, t) for f, t in zip(folders, trajectories)]
    with serving(create_app(loaded)) as url:
        client = AttentionService(url, poll_seconds=0.05)
        with loaded.lock:
            first = client.submit(trajectories[0], images[0], MapRequest(select="reply"))
            _wait_state(client, first["job"], ("running",))
            second = client.submit(trajectories[1], images[1], MapRequest(select="answer"))
            assert (second["state"], second["position"]) == ("queued", 1)
            assert client.cancel(second["job"])["state"] == "cancelled"  # a waiting job goes at once
            assert client.cancel(first["job"])["state"] == "running"  # a running one at its next layer
        assert _wait_state(client, first["job"], ("cancelled", "done", "error"))["state"] == "cancelled"
        for job, trajectory in ((first, trajectories[0]), (second, trajectories[1])):
            with pytest.raises(AttentionServiceError, match="was cancelled") as e:
                client.result(job["job"], trajectory)
            assert e.value.status == 409
        third = client.compute(trajectories[1], images[1], MapRequest(select="answer"))  # the queue goes on
        assert third.maps and httpx.get(f"{url}/health").json()["queue"] == {"waiting": 0, "running": None, "max_waiting": 4}


def test_a_full_queue_refuses_more_jobs(loaded, demo_corpus, tmp_path):
    folder = _trajectory(demo_corpus, tmp_path / "t")
    body = _body(folder, MapRequest(select="answer"))
    with serving(create_app(loaded, limits=ServiceLimits(max_queued=1))) as url:
        client = AttentionService(url)
        with loaded.lock:
            running = httpx.post(f"{url}/jobs", json=body).json()
            _wait_state(client, running["job"], ("running",))
            assert httpx.post(f"{url}/jobs", json=body).status_code == 202
            busy = httpx.post(f"{url}/jobs", json=body)
            assert busy.status_code == 429 and "1 jobs are already waiting" in busy.json()["error"]
        _wait_state(client, running["job"], ("done",))


def test_the_service_reads_no_file_outside_the_request(loaded, service, demo_corpus, tmp_path):
    """Every file the process opens while the service handles a job is recorded (sys.addaudithook):
    none is the trajectory folder's, and none is outside Python's own libraries."""
    folder = _trajectory(demo_corpus, tmp_path / "t")
    trajectory = Trajectory.load(folder)
    images = read_images(folder, trajectory)
    client = AttentionService(service, poll_seconds=0.05)
    client.compute(trajectory, images, MapRequest(select="answer"))  # warm: lazy imports happen once
    opened: list[str] = []
    recording = threading.Event()

    def audit(event, args):
        if recording.is_set() and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(audit)  # cannot be removed: it only records while `recording` is set
    recording.set()
    (tmp_path / "probe.txt").write_text("the hook sees opens")
    assert opened == [str(tmp_path / "probe.txt")]
    opened.clear()
    try:
        result = client.compute(trajectory, images, MapRequest(select="reply", sink="drop"))
    finally:
        recording.clear()
    assert result.maps
    libraries = tuple(str(Path(p).resolve()) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})
    outside = [p for p in opened if not str(Path(p).resolve()).startswith(libraries) and not p.startswith(("/proc/", "/sys/", "/dev/"))]
    assert outside == [], outside
    assert not any(str(tmp_path) in p or str(demo_corpus) in p for p in opened)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_real_command_serves_from_an_empty_directory_beside_decoys(loaded, demo_corpus, tmp_path):
    folder = _trajectory(demo_corpus, tmp_path / "t")
    empty = tmp_path / "empty"
    empty.mkdir()
    # decoys: what a service that read paths from the request (or its cwd) would pick up instead
    decoy = _trajectory(demo_corpus, empty / "decoy")
    for f in decoy.iterdir():
        shutil.copy2(f, empty / f.name)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(empty), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT), "VRAG_ATTENTION_TOKEN": "tok", "OMP_NUM_THREADS": str(max(1, min(2, os.cpu_count() or 1)))}
    proc = subprocess.Popen([sys.executable, "-m", "agent", "serve-attention", "--model", str(tiny_model_dir()), "--port", "0"],
                            cwd=empty, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert " at http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.rsplit(" at ", 1)[1].strip()
        assert httpx.get(f"{url}/health").status_code == 401  # the token came from the environment
        request = MapRequest(select="answer")
        remote = compute_attention_maps(folder, AttentionService(url, token="tok", poll_seconds=0.05), request)
        local = compute_attention_maps(tmp_path / "t", loaded, request, save=False)
        assert len(remote.maps) == len(local.maps) > 0
        for a, b in zip(local.maps, remote.maps):
            assert_same_map(b.values, a.values, a.view.file)
        # the CLI client speaks to it too
        out = subprocess.run([sys.executable, "-m", "agent", "attention", str(folder), "--service", url, "--select", "bbox", "--layers", "1"],
                             cwd=empty, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert f"the attention service at {url} (cpu)" in out.stdout and "bbox_share" in out.stdout and "choice bbox_L1-1_mean" in out.stdout
        assert load_choice(folder, Trajectory.load(folder), MapRequest(select="bbox", layers=(1, 1))) is not None
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert sorted(p.name for p in empty.iterdir()) == sorted(["decoy"] + [f.name for f in decoy.iterdir()])  # it wrote nothing there


def test_without_weights_the_command_fails_at_once_naming_the_model(tmp_path):
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "agent", "serve-attention", "--model", "autumncc/Qwen2.5-VL-7B-VRAG", "--port", str(_free_port())],
                         cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "autumncc/Qwen2.5-VL-7B-VRAG is not on this machine" in out.stderr and "huggingface-cli download" in out.stderr
    assert time.perf_counter() - started < 30


def test_cli_in_process_and_backend_choice(loaded, demo_corpus, tmp_path, capsys):
    from agent.__main__ import main

    folder = _trajectory(demo_corpus, tmp_path / "t")
    assert main(["attention", str(folder), "--model", str(tiny_model_dir()), "--select", "token", "--turn", "3", "--token-index", "2", "--head", "1"]) == 0
    out = capsys.readouterr().out
    assert "in this process (cpu)" in out and "choice t02k2_Lall_h1-mean" in out and "turn 3:" in out
    assert main(["attention", str(folder), "--model", str(tiny_model_dir()), "--layers", "5"]) == 2
    assert "< 2 (the model's layer count)" in capsys.readouterr().err
    assert main(["attention", str(tmp_path / "missing"), "--model", str(tiny_model_dir())]) == 2
    assert main(["attention", str(folder), "--service", f"http://127.0.0.1:{_free_port()}"]) == 1
    err = capsys.readouterr().err
    assert "is not reachable" in err and "serve-attention" in err
    with pytest.raises(AttentionServiceError, match="either the same Qwen2.5-VL weights"):
        attention_backend("", "")
    assert attention_backend(loaded).describe().startswith("this process")
