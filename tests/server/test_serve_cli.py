"""``diffcompose serve`` as a user starts it: a real subprocess on a free port, its URL line, its
start time (no model, no torch at start), one classical run over HTTP, the token off loopback,
and a clean stop on SIGTERM. Also: other commands' ``--help`` never imports FastAPI."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

#: The issue's bound is 2 s on a quiet machine; CI runners are shared, so the test allows more and
#: prints the figure (the README reports a measured one).
START_LIMIT_S = 6.0


def _start(*args: str) -> tuple[subprocess.Popen, str, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "diffcompose", "serve", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    elapsed = time.perf_counter() - t0
    if not line.startswith("diffcompose serving at "):
        proc.kill()
        raise AssertionError(f"no URL line: {line!r} {proc.stderr.read()!r}")  # type: ignore[union-attr]
    return proc, line.split()[3], elapsed


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_serve_starts_fast_on_loopback_without_torch_and_runs_a_classical_job() -> None:
    proc, url, elapsed = _start()
    try:
        print(f"diffcompose serve printed its URL after {elapsed:.2f} s")
        assert url.startswith("http://127.0.0.1:") and "token=" not in url
        assert elapsed < START_LIMIT_S
        health = httpx.get(url + "api/health", timeout=10).json()
        assert health["torch_loaded"] is False and health["engines_loaded"] == []
        img = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
        mask = np.zeros((40, 56), np.uint8)
        mask[10:20, 10:30] = 255
        r = httpx.post(url + "api/run", timeout=60, data={"request": json.dumps(
            {"task": "remove", "engine": "classical", "options": {"method": "telea"}})},
            files={"image": ("i.png", _png(img)), "mask": ("m.png", _png(mask))})
        assert r.status_code == 200 and r.headers["x-diffcompose-engine"] == "classical"
        assert Image.open(io.BytesIO(r.content)).size == (56, 40)
        health = httpx.get(url + "api/health", timeout=10).json()
        assert health["torch_loaded"] is False and health["engines_loaded"] == ["classical"]
    finally:
        assert _stop(proc) == 0
    assert "cancelled" not in proc.stderr.read()  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """... and leaves no results folder behind (its own TMPDIR stays empty)."""
    proc, url, _ = _start()
    try:
        port = url.rsplit(":", 1)[1].strip("/")
        r = subprocess.run([sys.executable, "-m", "diffcompose", "serve", "--port", port], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "TMPDIR": str(tmp_path)})
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in r.stderr
        assert not any(tmp_path.iterdir())
    finally:
        _stop(proc)


@pytest.mark.slow
def test_serve_off_loopback_generates_and_requires_a_token() -> None:
    proc, url, _ = _start("--host", "0.0.0.0")
    try:
        assert "?token=" in url
        token = url.split("?token=", 1)[1]
        base = "http://127.0.0.1:" + url.split(":")[2].split("/")[0] + "/"
        assert httpx.get(base + "api/health", timeout=10).status_code == 401
        assert httpx.get(base + "api/health", params={"token": token}, timeout=10).status_code == 200
    finally:
        _stop(proc)


@pytest.mark.slow
def test_serve_refuses_bad_settings_in_one_line() -> None:
    r = subprocess.run([sys.executable, "-m", "diffcompose", "serve", "--host", "0.0.0.0", "--token", "short"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--token" in r.stderr
    r = subprocess.run([sys.executable, "-m", "diffcompose", "serve", "--max-results", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--max-results must be 1..1000000" in r.stderr


def test_help_of_other_commands_does_not_import_the_server_stack() -> None:
    code = ("import sys\nfrom diffcompose.cli.main import main\n"
            "for argv in (['remove', '--help'], ['serve', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'torch') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "[]", r.stdout + r.stderr
