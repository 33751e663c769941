"""The server under hostile input, slow clients and load (issue 25, items 7-12).

In-process tests (FastAPI's TestClient) check the answers; real-socket tests run the app on
uvicorn with the same protocol class ``diffcompose serve`` uses, on a loopback port of this
process, and send only to it, a bounded number of connections for a bounded time.

Jobs here never reach an engine until the test says so: :class:`HeldEngines` stands in for
the engine manager and blocks each job's engine load on an event, so queues, memory
admission and progress streams are tested with jobs that really wait.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient  # noqa: E402

from diffcompose.errors import InputError  # noqa: E402
from diffcompose.server import Settings, create_app  # noqa: E402
from diffcompose.server.jobs import WORK_BYTES_PER_PIXEL, job_memory  # noqa: E402

HEALTH_P95 = 0.1  # seconds: the target for /api/health under load


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def remove_files(side: int) -> dict[str, tuple[str, bytes, str]]:
    """A flat ``side`` x ``side`` photo and a mask: a few kB uploaded, ``side``² pixels decoded."""
    img = np.full((side, side, 3), 120, np.uint8)
    mask = np.zeros((side, side), np.uint8)
    mask[side // 4: side // 2, side // 4: side // 2] = 255
    return {"image": ("image.png", png(img), "image/png"), "mask": ("mask.png", png(mask), "image/png")}


REMOVE = json.dumps({"task": "remove", "engine": "classical", "options": {"method": "telea"}})


class PassEngine:
    def execute(self, job: Any, options: Any, ctx: Any, *, paste_back: bool = True, margin: Any = None) -> Any:
        return job.image


class HeldEngines:
    """An engine manager whose engines load only once ``gate`` is set (every job waits there)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.memory_budget = None

    def get(self, name: str, **kwargs: Any) -> PassEngine:
        self.gate.wait(60)
        return PassEngine()

    def loaded(self) -> list:
        return []

    def is_loaded(self, name: str, **kwargs: Any) -> bool:
        return False  # every job waits at the gate, as for a model load


@pytest.fixture
def held() -> Any:
    engines = HeldEngines()
    apps: list = []

    def make(**settings: Any) -> TestClient:
        app = create_app(Settings(**settings), engines=engines)  # type: ignore[arg-type]
        apps.append(app)
        return TestClient(app, base_url="http://127.0.0.1:7860")

    make.engines = engines  # type: ignore[attr-defined]
    yield make
    engines.gate.set()
    for app in apps:
        app.state.jobs.shutdown()


# --------------------------------------------------------------------------- 7. long integer literals


def test_an_integer_literal_too_long_to_read_is_a_400_without_a_traceback(held, caplog) -> None:
    client = held()
    digits = "9" * (sys.get_int_max_str_digits() + 1)
    caplog.set_level(logging.DEBUG)
    for where in (f'{{"task": "remove", "seed": {digits}}}', f'{{"task": "remove", "options": {{"radius": -{digits}}}}}',
                  f'{{"task": "remove", "box": [{digits}, 0, 1, 1]}}'):
        r = client.post("/api/jobs", files=remove_files(32), data={"request": where})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error == (f"the 'request' field has a number too long to read (over "
                         f"{sys.get_int_max_str_digits()} digits)")
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR or rec.exc_info]


# --------------------------------------------------------------------------- 8. memory admission


def test_a_job_is_costed_from_its_decoded_arrays_and_the_working_estimate() -> None:
    from diffcompose.methods.tasks import prepare

    img = np.zeros((300, 400, 3), np.uint8)
    mask = np.zeros((300, 400), bool)
    mask[10:50, 10:50] = True
    job = prepare("remove", {"image": img, "mask": mask}, None)
    held = sum(a.nbytes for a in (job.image, job.paste_mask, *job.arrays.values()) if isinstance(a, np.ndarray))
    assert held >= img.nbytes + mask.nbytes
    assert job_memory(job) == held + 300 * 400 * WORK_BYTES_PER_PIXEL


def test_jobs_over_the_memory_budget_get_429_and_larger_than_it_503(held) -> None:
    small = remove_files(600)   # about 11 MB costed
    big = remove_files(1500)    # about 68 MB costed: more than the whole budget
    client = held(memory_budget=30 * 10**6, queue_size=16, workers=1)
    first = client.post("/api/jobs", files=small, data={"request": REMOVE})
    second = client.post("/api/jobs", files=small, data={"request": REMOVE})
    assert first.status_code == second.status_code == 202
    admitted = client.get("/api/health").json()["memory_admitted"]
    assert admitted > 20 * 10**6
    third = client.post("/api/jobs", files=small, data={"request": REMOVE})  # 3 x 11 MB > 30 MB
    assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1
    assert "memory budget" in third.json()["error"] and "--memory-budget" in third.json()["error"]
    assert "\n" not in third.json()["error"]
    huge = client.post("/api/run", files=big, data={"request": REMOVE})
    assert huge.status_code == 503 and "more than the server's budget" in huge.json()["error"]
    # the budget comes back when jobs end: the held ones finish, then a new one is admitted
    held.engines.gate.set()
    for job in (first.json()["id"], second.json()["id"]):
        deadline = time.monotonic() + 30
        while client.get(f"/api/jobs/{job}").json()["status"] != "done":
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert client.get("/api/health").json()["memory_admitted"] == 0
    assert client.post("/api/run", files=small, data={"request": REMOVE}).status_code == 200


def test_cancelling_a_queued_job_gives_its_memory_back(held) -> None:
    client = held(memory_budget=15 * 10**6, workers=1)
    running = client.post("/api/jobs", files=remove_files(64), data={"request": REMOVE})  # holds the worker
    base = client.get("/api/health").json()["memory_admitted"]
    a = client.post("/api/jobs", files=remove_files(600), data={"request": REMOVE}).json()["id"]
    assert client.get(f"/api/jobs/{a}").json()["status"] == "queued"
    assert client.post("/api/jobs", files=remove_files(600), data={"request": REMOVE}).status_code == 429
    assert client.post(f"/api/jobs/{a}/cancel").json()["status"] == "cancelled"
    assert client.get("/api/health").json()["memory_admitted"] == base
    assert client.post("/api/jobs", files=remove_files(600), data={"request": REMOVE}).status_code == 202
    assert running.status_code == 202


def test_the_default_budget_is_a_quarter_of_memory_and_settings_are_checked(monkeypatch) -> None:
    from diffcompose.server.settings import default_memory_budget

    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert default_memory_budget() == max(2 * 2**30, physical // 4)
    assert Settings().job_memory_budget == default_memory_budget()
    assert Settings(memory_budget=10**9).job_memory_budget == 10**9
    for bad, flag in (({"header_timeout": 0}, "--header-timeout"), ({"body_timeout": float("nan")}, "--body-timeout"),
                      ({"max_connections": 0}, "--max-connections"), ({"max_streams": -1}, "--max-streams"),
                      ({"memory_budget": 0}, "--memory-budget")):
        with pytest.raises(InputError, match=flag):
            Settings(**bad).check()


def test_serve_takes_the_budget_and_limits_from_its_flags(monkeypatch) -> None:
    from diffcompose.cli import serve as serve_cli

    seen: dict = {}
    monkeypatch.setattr(serve_cli, "serve", lambda settings, **kw: seen.setdefault("s", settings))
    monkeypatch.setattr(serve_cli, "forbid_downloads", lambda: seen.setdefault("offline", True))
    from diffcompose.cli.main import main

    main(["serve", "--memory-budget", "3GB", "--header-timeout", "2.5", "--body-timeout", "7",
          "--max-connections", "300", "--max-streams", "200"])
    s = seen["s"]
    assert (s.memory_budget, s.header_timeout, s.body_timeout, s.max_connections, s.max_streams) == \
        (3 * 10**9, 2.5, 7.0, 300, 200)
    assert s.allow_downloads is False and seen["offline"] is True
    seen.clear()
    main(["serve", "--allow-downloads"])
    assert seen["s"].allow_downloads is True and "offline" not in seen


# --------------------------------------------------------------------------- 10. loopback hosts, printed URL


def test_any_loopback_address_is_a_host_of_this_machine(held) -> None:
    client = held()
    for host in ("127.0.0.2:7860", "127.1.2.3", "[::1]:7860", "localhost:7860"):
        assert client.get("/api/health", headers={"host": host}).status_code == 200, host
    for host in ("evil.example:7860", "127.0.0.2.evil.example", "0.0.0.0:7860", "10.0.0.1"):
        assert client.get("/api/health", headers={"host": host}).status_code == 403, host


def test_the_printed_url_names_this_machine_for_a_wildcard_host() -> None:
    from diffcompose.cli.serve import shown_host

    assert shown_host("0.0.0.0") == socket.gethostname()
    assert shown_host("::") in (socket.gethostname(), f"[{socket.gethostname()}]")
    assert shown_host("127.0.0.2") == "127.0.0.2" and shown_host("::1") == "[::1]"


def test_serve_on_127_0_0_2_answers_at_its_printed_url() -> None:
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.2", 0))
    except OSError:
        pytest.skip("this system does not route 127.0.0.2")
    finally:
        probe.close()
    proc = subprocess.Popen([sys.executable, "-m", "diffcompose", "-q", "serve", "--host", "127.0.0.2", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("diffcompose serving at http://127.0.0.2:"), line
        url = line.split()[3]
        import httpx

        r = httpx.get(url + "api/health", timeout=10)
        assert r.status_code == 200 and r.json()["queued"] == 0
    finally:
        proc.terminate()
        proc.wait(15)


# --------------------------------------------------------------------------- 11. headers, downloads


def test_every_response_carries_the_security_headers(held) -> None:
    client = held()
    answers = [client.get("/"), client.get("/api/health"), client.get("/api/jobs/nope"),
               client.get("/static/app.js"), client.get("/docs"),
               client.get("/api/health", headers={"host": "evil.example"}),
               client.post("/api/jobs", data={"request": "{"})]
    for r in answers:
        assert r.headers["x-frame-options"] == "DENY", r.request.url
        assert r.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    assert {r.status_code for r in answers} >= {200, 403, 404, 400}


def test_a_model_not_cached_ends_at_once_without_allow_downloads(held, monkeypatch, tmp_path) -> None:
    pytest.importorskip("torch")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    held.engines.gate.set()  # nothing waits: the check must come before any engine is asked for
    client = held()
    small = remove_files(64)
    request = json.dumps({"task": "remove", "engine": "freecompose", "model": "nobody-xyz/not-cached"})
    t = time.perf_counter()
    r = client.post("/api/run", files=small, data={"request": request})
    assert time.perf_counter() - t < 1.0
    assert r.status_code == 503
    assert r.json()["error"] == ("model 'nobody-xyz/not-cached' is not in the local cache and this server does not "
                                 "download models (start it with --allow-downloads, or put the model in --model-dir)")
    # in the cache (a snapshot folder, as huggingface_hub lays it out), it goes to the engine
    (tmp_path / "empty-cache" / "models--nobody-xyz--not-cached" / "snapshots" / "abc").mkdir(parents=True)
    assert client.post("/api/run", files=small, data={"request": request}).status_code == 200


def test_forbid_downloads_sets_the_hub_offline_for_the_process(monkeypatch) -> None:
    import huggingface_hub.constants as constants

    from diffcompose.cli.serve import forbid_downloads

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    forbid_downloads()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True


# --------------------------------------------------------------------------- 9. real sockets


class LiveServer:
    """The app on uvicorn in a thread, with ``diffcompose serve``'s protocol class, on 127.0.0.1."""

    def __init__(self, engines: Any = None, **settings: Any) -> None:
        import uvicorn

        from diffcompose.cli.serve import listen
        from diffcompose.server.connections import guarded_protocol

        self.engines = engines
        self.settings = Settings(**settings).check()
        self.app = create_app(self.settings, engines=engines)
        sock = listen("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, http=guarded_protocol(self.settings.header_timeout,
                                                                self.settings.max_connections),
                                log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        import httpx

        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return s

    def health_latencies(self, n: int = 40) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            r = self.client.get("/api/health")
            out.append(time.perf_counter() - t)
            assert r.status_code == 200
        return out

    def open_connections(self) -> int:
        return len(self.server.server_state.connections)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def live() -> Any:
    made: list[LiveServer] = []
    engines = HeldEngines()

    def make(**settings: Any) -> LiveServer:
        made.append(LiveServer(engines, **settings))
        return made[-1]

    make.engines = engines  # type: ignore[attr-defined]
    yield make
    engines.gate.set()
    for s in made:
        s.stop()


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` within ``seconds``, and what it sent before."""
    sock.settimeout(seconds)
    got = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return True, got
            got += chunk
    except (socket.timeout, TimeoutError):
        return False, got
    except ConnectionResetError:
        return True, got


def test_half_open_connections_do_not_slow_other_clients_and_time_out(live) -> None:
    server = live(header_timeout=1.0)
    slow = []
    for i in range(200):
        s = server.connect()
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + str(i).encode())
        slow.append(s)
    silent = [server.connect() for _ in range(20)]  # connected, never a byte
    lat = server.health_latencies()
    assert p95(lat) < HEALTH_P95, f"/api/health p95 {p95(lat) * 1000:.0f} ms with 220 half-open connections"
    t = time.perf_counter()
    closed, answer = closed_within(slow[0], 5)
    assert closed and answer.startswith(b"HTTP/1.1 408 ") and b"--header-timeout" in answer
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert b"x-frame-options: deny" in head and b"x-content-type-options: nosniff" in head  # written before the app
    assert all(closed_within(s, 3)[0] for s in slow[1:] + silent)
    assert time.perf_counter() - t < 4
    for s in slow + silent:
        s.close()


def test_a_complete_request_head_is_not_cut_by_the_header_timeout(live) -> None:
    server = live(header_timeout=0.5)
    s = server.connect()
    for part in (b"GET /api/health HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
        s.sendall(part)
        time.sleep(0.1)
    closed, answer = closed_within(s, 1.0)
    assert answer.startswith(b"HTTP/1.1 200 ") and not closed  # kept alive, answered
    s.close()


def test_past_the_connection_cap_the_oldest_idle_connections_go(live) -> None:
    server = live(header_timeout=30, max_connections=25)
    flood = []
    for _ in range(60):
        s = server.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: 12")
        flood.append(s)
    time.sleep(0.3)
    assert server.open_connections() <= 25
    # the oldest of the flood were dropped, the newest are still open; other clients are served
    assert closed_within(flood[0], 2)[0] and not closed_within(flood[-1], 0.2)[0]
    lat = server.health_latencies(20)
    assert p95(lat) < HEALTH_P95
    for s in flood:
        s.close()


def test_a_stalled_body_gets_408(live) -> None:
    server = live(body_timeout=0.5)
    s = server.connect()
    s.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=xx\r\n"
              b"Content-Length: 1000\r\n\r\n--xx\r\n")
    t = time.perf_counter()
    closed, answer = closed_within(s, 5)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"--body-timeout" in answer
    assert time.perf_counter() - t < 3
    s.close()


def _multipart(fields: dict[str, tuple[str, bytes]], boundary: str = "hardening") -> bytes:
    out = b""
    for name, (filename, data) in fields.items():
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_health_stays_fast_with_a_full_queue_waiting_runs_and_many_streams(live) -> None:
    """A full queue, 45 /api/run requests waiting on it and 150 open progress streams: /api/health
    and the thread-pool endpoints still answer fast, one stream past the cap gets 503, and every
    stream ends with 'done' as soon as the jobs run (no polling: idle streams cost no CPU)."""
    server = live(queue_size=64, workers=1, max_streams=150, memory_budget=10**10)
    files = remove_files(48)
    body = _multipart({"request": ("", REMOVE.encode()), "image": ("i.png", files["image"][1]),
                       "mask": ("m.png", files["mask"][1])})
    head = (f"POST /api/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=hardening\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    runs = []
    for _ in range(45):
        s = server.connect()
        s.sendall(head + body)
        runs.append(s)
    jobs = [server.client.post("/api/jobs", files=files, data={"request": REMOVE}).json()["id"] for _ in range(20)]
    deadline = time.monotonic() + 30
    while server.client.get("/api/health").json()["queued"] < 64:  # one job is held running, 64 wait
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.client.post("/api/jobs", files=files, data={"request": REMOVE}).status_code == 429
    streams = []
    for k in range(150):
        s = server.connect()
        s.sendall(f"GET /api/jobs/{jobs[k % len(jobs)]}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        streams.append(s)
    while server.client.get("/api/health").json()["streams"] < 150:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    over = server.client.get(f"/api/jobs/{jobs[0]}/events")
    assert over.status_code == 503 and "--max-streams" in over.json()["error"]
    lat = server.health_latencies(60)
    assert p95(lat) < HEALTH_P95, f"/api/health p95 {p95(lat) * 1000:.0f} ms"
    assert server.client.get(f"/api/jobs/{jobs[0]}").json()["status"] == "queued"  # a thread-pool endpoint
    cpu = time.process_time()  # this process runs the server: idle streams must not wake it
    time.sleep(1.0)
    idle_cpu = time.process_time() - cpu
    assert idle_cpu < 0.02, f"{idle_cpu:.3f} s of CPU in 1 s with 150 idle streams: they poll"
    server.engines.gate.set()  # the jobs run: every stream ends with its job's 'done'
    for s in streams:
        s.settimeout(30)
        got = b""
        while b"event: done" not in got:
            chunk = s.recv(65536)
            assert chunk, got[-300:]
            got += chunk
        s.close()
    for s in runs:
        s.settimeout(30)
        assert s.recv(64).startswith(b"HTTP/1.1 200 ")
        s.close()
    while server.client.get("/api/health").json()["streams"]:
        assert time.monotonic() < deadline + 30
        time.sleep(0.05)


def test_memory_freed_by_jobs_goes_back_to_the_system_when_the_last_one_ends(held, monkeypatch) -> None:
    from diffcompose.server import jobs as jobs_module

    calls: list[dict] = []
    client = held(workers=1)
    app_jobs = client.app.state.jobs  # type: ignore[attr-defined]
    monkeypatch.setattr(jobs_module, "release_freed_memory", lambda: calls.append(app_jobs.counts()))
    ids = [client.post("/api/jobs", files=remove_files(32), data={"request": REMOVE}).json()["id"] for _ in range(2)]
    held.engines.gate.set()
    deadline = time.monotonic() + 30
    while any(client.get(f"/api/jobs/{j}").json()["status"] != "done" for j in ids):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    while not calls:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.1)
    assert len(calls) == 1  # not when the first ended (the second was queued), once when the second did
    assert calls[0]["queued"] == 0 and calls[0]["memory_admitted"] == 0
    assert client.post("/api/run", files=remove_files(32), data={"request": REMOVE}).status_code == 200
    while len(calls) < 2:  # the worker releases just after the answer is ready
        assert time.monotonic() < deadline
        time.sleep(0.01)
