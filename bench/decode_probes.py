"""Probes while bodies are decoded: /healthz latency with 4 clients looping max-size POSTs.

    .venv/bin/python bench/decode_probes.py [--seconds 10] [--clients 4]

Starts the service (``mds-store``'s app under uvicorn, one process, its own embedded
PostgreSQL unless ``DATABASE_URL`` is set; nothing is written to it), measures the
/healthz latency of an idle service (the baseline of this run), then, per scenario,
``--clients`` processes loop one body each while this process probes /healthz every
10 ms. Printed per scenario: probe p50/p99/max and p99 vs the idle baseline, requests
answered (status counts) and the service's peak RSS growth above its level before the
scenario (``VmHWM`` after resetting it through ``/proc/<pid>/clear_refs``), also per
concurrent request.

Scenarios, each the largest body the defaults admit:
- ``max-valid-422``: 50,000 real bars (~8.9 MB), the last one invalid: decoded and
  validated in full, answered 422, nothing queued;
- ``tiny-objects``: 32 MiB of ``{}`` elements (11 M "bars");
- ``tiny-bars``: 32 MiB of minimal valid bars (~370,000, over the 50,000 cap).

To measure another version of the code, point ``PYTHONPATH`` at its ``src``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

MAX_BODY = 32 * 1024 * 1024
MAX_BARS = 50_000


def serve(port: int) -> None:
    from market_data_store.config import load_settings
    from market_data_store.http import create_app
    from market_data_store.server import build_server

    settings = load_settings()
    build_server(create_app(settings), settings, host="127.0.0.1", port=port).run()


def body_of(kind: str) -> bytes:
    if kind == "max-valid-422":
        bars = [
            b'{"symbol":"SYM%d","ts":"2024-01-02T%02d:%02d:00Z","open":"101.25","high":"102.5",'
            b'"low":"100.75","close":"101.5","volume":"12345","resolution":"1m"}'
            % (i % 500, i // 60 % 24, i % 60)
            for i in range(MAX_BARS)
        ]
        bars[-1] = bars[-1].replace(b'"low":"100.75"', b'"low":"999"')
        return b'{"provider":"bench","bars":[' + b",".join(bars) + b"]}"
    if kind == "tiny-objects":
        element = b"{}"
    else:
        element = (
            b'{"symbol":"A","ts":"2024-01-01T00:00:00Z","open":1,"high":1,"low":1,'
            b'"close":1,"volume":1}'
        )
    head, tail = b'{"provider":"bench","bars":[', b"]}"
    count = (MAX_BODY - len(head) - len(tail)) // (len(element) + 1)
    return head + b",".join([element] * count) + tail


def client(url: str, kind: str, go: Any, stop: Any, results: multiprocessing.Queue[str]) -> None:
    data = body_of(kind)
    results.put("ready")
    go.wait()
    statuses: Counter[str] = Counter()
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=120) as http:
        while not statuses or not stop.is_set():  # at least one request each
            try:
                statuses[str(http.post(url, content=data, headers=headers).status_code)] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
    results.put(" ".join(f"{k}x{v}" for k, v in sorted(statuses.items())))


def probe(base: str, seconds: float) -> list[float]:
    latencies: list[float] = []
    with httpx.Client(timeout=30) as http:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            started = time.perf_counter()
            http.get(base + "/healthz")
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
    return latencies


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


def rss_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    sys.exit("server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per scenario")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--scenarios", default="max-valid-422,tiny-objects,tiny-bars", help="comma-separated"
    )
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="mds-bench-") as tmp:
        env = {**os.environ, "MDS_COORDINATOR_DEAD_LETTER_PATH": f"{tmp}/dlq.ndjson"}
        env.setdefault("MDS_DATABASE_EMBEDDED_DIR", f"{tmp}/pgdata")
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_ready(base, proc)
            idle = probe(base, 5)
            base_p99 = p99(idle)
            print(f"idle /healthz: p50 {statistics.median(idle):.2f} ms  p99 {base_p99:.2f} ms")
            for kind in args.scenarios.split(","):
                before = rss_kib(proc.pid, "VmRSS")
                Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # reset VmHWM
                results: multiprocessing.Queue[str] = multiprocessing.Queue()
                go, stop = multiprocessing.Event(), multiprocessing.Event()
                clients = [
                    multiprocessing.Process(
                        target=client, args=(base + "/v1/bars", kind, go, stop, results)
                    )
                    for _ in range(args.clients)
                ]
                for c in clients:
                    c.start()
                for _ in clients:
                    results.get(timeout=300)  # bodies built
                go.set()
                latencies = probe(base, args.seconds)
                stop.set()
                answered = [results.get(timeout=300) for _ in clients]
                for c in clients:
                    c.join()
                peak = rss_kib(proc.pid, "VmHWM")
                growth = max(0, peak - before) / 1024
                print(
                    f"{kind:<14}: probes p50 {statistics.median(latencies):7.2f} ms  "
                    f"p99 {p99(latencies):8.2f} ms ({p99(latencies) / base_p99:5.1f}x idle)  "
                    f"max {max(latencies):8.2f} ms  n={len(latencies)}  "
                    f"peak RSS +{growth:.0f} MiB (+{growth / args.clients:.0f} MiB per "
                    f"concurrent request)  answers: {'; '.join(answered)}"
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
