"""Load test of ``diffcompose serve``: ``.venv/bin/python benchmarks/server_load.py [--clients 32 --requests 10]``.

Starts the real server on loopback (a subprocess, free port), then:

0. ``--startup-runs`` times: seconds from launching ``diffcompose serve`` to its URL line
   (``--startup-only`` stops there);

1. ``--clients`` concurrent clients each send ``--requests`` classical removals of a
   ``--size``-pixel photo through ``POST /api/run``; prints throughput, p50/p95 latency and
   the number of failed requests (anything but 200: must be 0);
2. a burst of ``--burst`` simultaneous ``POST /api/jobs`` beyond the queue limit: 202s and
   429s are counted separately (a 429 with ``Retry-After`` is the promised answer, not a
   failure; anything else is one), then every accepted job is waited for;
3. the ratio of one request's HTTP latency to the same removal in-process (``dc.remove``),
   medians of ``--ratio-runs`` sequential runs (target <= 1.2);
4. ``--big-burst N``: N simultaneous jobs of a flat ``--big-side``-pixel square photo (a few kB
   uploaded, tens of MP decoded: the memory amplification case), with ``--memory-budget``:
   answers by status, and the server's RSS before, at its peak and after every job ended;
5. ``--half-open N``: N connections that send half a request head and stall, then
   ``/api/health`` p50/p95 (other clients must still be served at once);
6. ``--streams N``: a full queue of slow jobs and N open progress streams (SSE) on them, then
   ``/api/health`` p50/p95 (target p95 < 100 ms at N = 1000), and whether every stream ends
   when the jobs are cancelled.

Phase 2 also prints the p50/p95 of the submissions and the server's RSS (``/proc``, Linux)
before the burst, at its peak and after the accepted jobs ended.

The numbers depend on the machine; the README quotes one run with its command.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image


def _photo(size: int) -> tuple[bytes, bytes, np.ndarray, np.ndarray]:
    from skimage import data

    img = np.asarray(Image.fromarray(data.astronaut()).resize((size, size), Image.BICUBIC))
    mask = np.zeros((size, size), np.uint8)
    s = size / 512
    mask[int(200 * s):int(280 * s), int(220 * s):int(300 * s)] = 255
    enc = []
    for a in (img, mask):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        enc.append(buf.getvalue())
    return enc[0], enc[1], img, mask > 0


def _start(queue_size: int, workers: int, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "diffcompose", "-q", "serve", "--port", "0",
                             "--queue-size", str(queue_size), "--workers", str(workers), *extra],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line.startswith("diffcompose serving at "):
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, line.split()[3]


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (Linux ``/proc``; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class RssPeak:
    """Samples a process's RSS every 20 ms in a thread while in use: ``before``, ``peak``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = self.peak = _rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_mb(self.pid))

    def __enter__(self) -> "RssPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _health_latencies(client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get("api/health")
        out.append(time.perf_counter() - t)
        if r.status_code != 200:
            raise SystemExit(f"/api/health answered {r.status_code}: {r.text[:200]}")
    return out


def _wait_ended(client, jobs: list[str]) -> int:
    """Wait for every job to end; returns how many did not end 'done'."""
    bad = 0
    for job in jobs:
        while True:
            state = client.get(f"api/jobs/{job}").json()
            if state["status"] in ("done", "error", "cancelled"):
                bad += state["status"] != "done"
                break
            time.sleep(0.05)
    return bad


def _host_port(url: str) -> tuple[str, int]:
    netloc = url.split("://", 1)[1].split("/", 1)[0]
    host, port = netloc.rsplit(":", 1)
    return host.strip("[]"), int(port)


def big_burst(args: argparse.Namespace) -> None:
    """Phase 4: simultaneous jobs that decode far larger than they upload, under a memory budget."""
    import httpx

    side = args.big_side
    flat = np.full((side, side, 3), 128, np.uint8)
    mask = np.zeros((side, side), np.uint8)
    mask[side // 2: side // 2 + 32, side // 2: side // 2 + 32] = 255
    files = {}
    for name, a in (("image", flat), ("mask", mask)):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        files[name] = (f"{name}.png", buf.getvalue(), "image/png")
    uploaded = sum(len(f[1]) for f in files.values())
    request = json.dumps({"task": "remove", "engine": "classical", "options": {"method": "telea"}})
    extra = ["--memory-budget", args.memory_budget] if args.memory_budget else []
    proc, url = _start(args.queue_size, args.workers, *extra)
    try:
        client = httpx.Client(base_url=url, timeout=600)
        budget = client.get("api/health").json().get("memory_budget")
        started = _rss_mb(proc.pid)
        small = _photo(64)
        client.post("api/run", data={"request": request},  # the engine's modules load: part of the baseline
                    files={"image": ("i.png", small[0], "image/png"), "mask": ("m.png", small[1], "image/png")})
        print(f"big burst: server RSS at start {started:.0f} MB, after one small job (engine loaded) "
              f"{_rss_mb(proc.pid):.0f} MB")
        for round_ in range(1, args.big_rounds + 1):
            _big_round(client, proc, request, files, args, budget, extra, uploaded, round_)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _big_round(client, proc, request, files, args, budget, extra, uploaded, round_) -> None:  # noqa: PLR0913
    """One burst of phase 4: answers by status, submit latency, the server's RSS before/peak/after."""
    side = args.big_side
    barrier = threading.Barrier(args.big_burst)

    def submit() -> tuple:
        barrier.wait()
        t = time.perf_counter()
        r = client.post("api/jobs", data={"request": request}, files=files)
        return r, time.perf_counter() - t

    with RssPeak(proc.pid) as rss:
        with futures.ThreadPoolExecutor(args.big_burst) as pool:
            answers = list(pool.map(lambda _: submit(), range(args.big_burst)))
        accepted = [r.json()["id"] for r, _ in answers if r.status_code == 202]
        bad = _wait_ended(client, accepted)
    time.sleep(2.0)
    after = _rss_mb(proc.pid)
    codes: dict[int, int] = {}
    for r, _ in answers:
        codes[r.status_code] = codes.get(r.status_code, 0) + 1
    lat = [dt for _, dt in answers]
    refusal = next((r.json()["error"] for r, _ in answers if r.status_code != 202), "")
    print(f"big burst {round_}: {args.big_burst} simultaneous jobs of a flat {side}x{side} photo "
          f"({side * side / 1e6:.0f} MP, "
          f"{uploaded / 1e3:.0f} kB uploaded each), memory budget "
          f"{'default' if not extra else args.memory_budget} = {budget / 1e9 if budget else float('nan'):.2f} GB: "
          f"answers {dict(sorted(codes.items()))}, accepted jobs not done {bad}; submit p50 {_pct(lat, 50):.2f} s, "
          f"p95 {_pct(lat, 95):.2f} s; server RSS before {rss.before:.0f} MB, peak {rss.peak:.0f} MB, "
          f"after {after:.0f} MB")
    if refusal:
        print(f"  a refusal: {refusal}")


def half_open(args: argparse.Namespace) -> None:
    """Phase 5: slow clients holding half-sent request heads while others ask /api/health."""
    import httpx

    proc, url = _start(args.queue_size, args.workers)
    socks: list[socket.socket] = []
    try:
        client = httpx.Client(base_url=url, timeout=60)
        _health_latencies(client, 5)
        host, port = _host_port(url)
        t = time.perf_counter()
        for _ in range(args.half_open):
            s = socket.create_connection((host, port), timeout=10)
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1")
            socks.append(s)
        opened = time.perf_counter() - t
        lat = _health_latencies(client, 200)
        print(f"half-open: {args.half_open} connections sending half a request head (opened in {opened:.2f} s): "
              f"/api/health x200 p50 {_pct(lat, 50) * 1000:.1f} ms, p95 {_pct(lat, 95) * 1000:.1f} ms, "
              f"max {max(lat) * 1000:.1f} ms")
    finally:
        for s in socks:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def streams(args: argparse.Namespace) -> None:
    """Phase 6: a full queue of slow jobs, N open progress streams, /api/health latency."""
    import httpx

    image, mask, _, _ = _photo(args.stream_size)
    files = {"image": ("image.png", image, "image/png"), "mask": ("mask.png", mask, "image/png")}
    request = json.dumps({"task": "remove", "engine": "classical", "options": {"method": "patchmatch"}})
    proc, url = _start(args.queue_size, args.workers, "--max-streams", str(max(args.streams, 1)),
                       "--max-connections", str(args.streams + 256))
    socks: list[socket.socket] = []
    try:
        client = httpx.Client(base_url=url, timeout=60)
        jobs = []
        while True:  # fill the queue: the first job runs, the rest wait
            r = client.post("api/jobs", data={"request": request}, files=files)
            if r.status_code != 202:
                break
            jobs.append(r.json()["id"])
        host, port = _host_port(url)
        t = time.perf_counter()
        for k in range(args.streams):
            s = socket.create_connection((host, port), timeout=30)
            s.sendall(f"GET /api/jobs/{jobs[-1 - k % (len(jobs) - 1)]}/events HTTP/1.1\r\n"
                      f"Host: 127.0.0.1\r\n\r\n".encode())
            socks.append(s)
        deadline = time.monotonic() + 60
        while client.get("api/health").json().get("streams", args.streams) < args.streams:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        opened = time.perf_counter() - t
        state = client.get("api/health").json()
        lat = _health_latencies(client, 200)
        print(f"streams: {state.get('streams')} open progress streams (opened in {opened:.1f} s) on a full queue "
              f"({state['queued']} queued, {state['running']} running, {args.stream_size}px patchmatch jobs): "
              f"/api/health x200 p50 {_pct(lat, 50) * 1000:.1f} ms, p95 {_pct(lat, 95) * 1000:.1f} ms, "
              f"max {max(lat) * 1000:.1f} ms")
        for job in jobs:
            client.post(f"api/jobs/{job}/cancel")
        ended = 0
        for s in socks:
            s.settimeout(30)
            got = b""
            try:
                while not (b"event: cancelled" in got or b"event: done" in got or b"event: error" in got):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
            except OSError:
                pass
            ended += b"event: " in got and (b"cancelled" in got or b"done" in got or b"error" in got)
        print(f"  after cancelling every job: {ended} of {args.streams} streams got their end event")
    finally:
        for s in socks:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/server_load.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=10, help="removals per client")
    p.add_argument("--size", type=int, default=512, help="photo side in pixels")
    p.add_argument("--method", default="patchmatch", help="classical remove method")
    p.add_argument("--queue-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--burst", type=int, default=0, help="simultaneous job submissions (default: 3 x queue size)")
    p.add_argument("--ratio-runs", type=int, default=7)
    p.add_argument("--startup-runs", type=int, default=5)
    p.add_argument("--startup-only", action="store_true")
    p.add_argument("--big-burst", type=int, default=0, help="phase 4: simultaneous large-decode jobs (0: skip)")
    p.add_argument("--big-side", type=int, default=6000, help="phase 4: side of the flat photo in pixels")
    p.add_argument("--big-rounds", type=int, default=2, help="phase 4: bursts one after the other (a plateau "
                   "that does not grow from one to the next is reuse, not a leak)")
    p.add_argument("--memory-budget", default=None, help="phase 4: the server's --memory-budget (default: its own)")
    p.add_argument("--half-open", type=int, default=0, help="phase 5: half-open connections (0: skip)")
    p.add_argument("--streams", type=int, default=0, help="phase 6: open progress streams (0: skip)")
    p.add_argument("--stream-size", type=int, default=1024, help="phase 6: photo side of the queued jobs")
    p.add_argument("--only-extra", action="store_true", help="run only phases 4-6 (skip startup and 1-3)")
    args = p.parse_args(argv)
    import httpx

    if args.only_extra:
        for flag, phase in ((args.big_burst, big_burst), (args.half_open, half_open), (args.streams, streams)):
            if flag:
                phase(args)
        return 0

    starts = []
    for _ in range(args.startup_runs):
        t = time.perf_counter()
        proc, _url = _start(args.queue_size, args.workers)
        starts.append(time.perf_counter() - t)
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    if starts:
        print(f"startup: launch to URL line, {len(starts)} starts: median {statistics.median(starts):.2f} s "
              f"(min {min(starts):.2f}, max {max(starts):.2f})")
    if args.startup_only:
        return 0

    image, mask, img_arr, mask_arr = _photo(args.size)
    request = json.dumps({"task": "remove", "engine": "classical", "options": {"method": args.method}})
    proc, url = _start(args.queue_size, args.workers)
    try:
        client = httpx.Client(base_url=url, timeout=600, limits=httpx.Limits(max_connections=args.clients + 8))
        files = {"image": ("image.png", image, "image/png"), "mask": ("mask.png", mask, "image/png")}

        def one() -> tuple[int, float]:
            t = time.perf_counter()
            r = client.post("api/run", data={"request": request}, files=files)
            return r.status_code, time.perf_counter() - t

        one()  # warm-up: the engine loads on first use
        # 1. sustained load
        lat: list[float] = []
        failed = 0
        t0 = time.perf_counter()
        with futures.ThreadPoolExecutor(args.clients) as pool:
            runs = [pool.submit(lambda: [one() for _ in range(args.requests)]) for _ in range(args.clients)]
            for f in runs:
                for status, dt in f.result():
                    lat.append(dt)
                    failed += status != 200
        wall = time.perf_counter() - t0
        total = args.clients * args.requests
        print(f"load: {args.clients} clients x {args.requests} classical removals ({args.method}) at "
              f"{args.size}x{args.size}: {total / wall:.2f} req/s, p50 {_pct(lat, 50):.2f} s, "
              f"p95 {_pct(lat, 95):.2f} s, failed {failed}")
        # 2. a burst beyond the queue limit
        burst = args.burst or 3 * args.queue_size
        barrier = threading.Barrier(burst)

        def submit() -> httpx.Response:
            barrier.wait()
            return client.post("api/jobs", data={"request": request}, files=files)

        submit_lat: list[float] = []

        def timed_submit() -> httpx.Response:
            r = submit()
            submit_lat.append(r.elapsed.total_seconds())
            return r

        with RssPeak(proc.pid) as rss:
            with futures.ThreadPoolExecutor(burst) as pool:
                answers = list(pool.map(lambda _: timed_submit(), range(burst)))
            accepted = [r.json()["id"] for r in answers if r.status_code == 202]
            refused = [r for r in answers if r.status_code == 429]
            retry_ok = all(int(r.headers.get("retry-after", "0")) >= 1 for r in refused)
            other = len(answers) - len(accepted) - len(refused)
            ended_bad = _wait_ended(client, accepted)
        time.sleep(2.0)
        rss_after = _rss_mb(proc.pid)
        print(f"burst: {burst} simultaneous submissions (queue size {args.queue_size}): {len(accepted)} accepted "
              f"(all done: {ended_bad == 0}), {len(refused)} refused with 429 (Retry-After set: {retry_ok}), "
              f"failed {other + ended_bad}; submit p50 {_pct(submit_lat, 50) * 1000:.0f} ms, "
              f"p95 {_pct(submit_lat, 95) * 1000:.0f} ms; server RSS before {rss.before:.0f} MB, "
              f"peak {rss.peak:.0f} MB, 2 s after the last job ended {rss_after:.0f} MB")
        # 3. HTTP latency / in-process, one removal at a time
        import diffcompose as dc

        http = [one()[1] for _ in range(args.ratio_runs)]
        local = []
        for _ in range(args.ratio_runs):
            t = time.perf_counter()
            dc.remove(img_arr, mask_arr, engine="classical", method=args.method)
            local.append(time.perf_counter() - t)
        ratio = statistics.median(http) / statistics.median(local)
        print(f"latency: HTTP {statistics.median(http) * 1000:.0f} ms vs in-process "
              f"{statistics.median(local) * 1000:.0f} ms (medians of {args.ratio_runs}): ratio {ratio:.2f}")
        if failed or other + ended_bad:
            return 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    for flag, phase in ((args.big_burst, big_burst), (args.half_open, half_open), (args.streams, streams)):
        if flag:
            phase(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
