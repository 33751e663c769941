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
   medians of ``--ratio-runs`` sequential runs (target <= 1.2).

The numbers depend on the machine; the README quotes one run with its command.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import io
import json
import os
import signal
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


def _start(queue_size: int, workers: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "diffcompose", "-q", "serve", "--port", "0",
                             "--queue-size", str(queue_size), "--workers", str(workers)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line.startswith("diffcompose serving at "):
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, line.split()[3]


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


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
    args = p.parse_args(argv)
    import httpx

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

        with futures.ThreadPoolExecutor(burst) as pool:
            answers = list(pool.map(lambda _: submit(), range(burst)))
        accepted = [r.json()["id"] for r in answers if r.status_code == 202]
        refused = [r for r in answers if r.status_code == 429]
        retry_ok = all(int(r.headers.get("retry-after", "0")) >= 1 for r in refused)
        other = len(answers) - len(accepted) - len(refused)
        ended_bad = 0
        for job in accepted:
            while True:
                state = client.get(f"api/jobs/{job}").json()
                if state["status"] in ("done", "error", "cancelled"):
                    ended_bad += state["status"] != "done"
                    break
                time.sleep(0.05)
        print(f"burst: {burst} simultaneous submissions (queue size {args.queue_size}): {len(accepted)} accepted "
              f"(all done: {ended_bad == 0}), {len(refused)} refused with 429 (Retry-After set: {retry_ok}), "
              f"failed {other + ended_bad}")
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
        return 0 if failed == 0 and other + ended_bad == 0 else 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
