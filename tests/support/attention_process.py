"""The real attention service for app tests: `python -m agent serve-attention` with the tiny random
Qwen2.5-VL (tests/support/tiny_vlm.py) as a child process on a free 127.0.0.1 port, stopped after."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from support.tiny_vlm import ROOT, tiny_model_dir


@contextlib.contextmanager
def attention_service(token: str | None = None, cwd: Path | None = None):
    """Yields the service's URL once it listens (it prints "... at http://127.0.0.1:PORT")."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(max(1, min(2, os.cpu_count() or 1)))}
    env.pop("VRAG_ATTENTION_TOKEN", None)
    command = [sys.executable, "-m", "agent", "serve-attention", "--model", str(tiny_model_dir()), "--host", "127.0.0.1", "--port", "0"]
    if token:
        env["VRAG_ATTENTION_TOKEN"] = token  # read from the environment, kept out of the process list
    log = tempfile.TemporaryFile(mode="w+")  # its log, never a pipe left undrained
    proc = subprocess.Popen(command, cwd=cwd or ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline()
        if " at http://127.0.0.1:" not in line:
            proc.wait(timeout=30)
            log.seek(0)
            raise AssertionError(f"the attention service did not start: {line!r}\n{log.read()}")
        yield line.rsplit(" at ", 1)[1].strip()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
