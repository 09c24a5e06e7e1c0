"""Probes while bodies are decoded: /healthz latency with 4 clients looping max-size POSTs.

    .venv/bin/python bench/decode_probes.py [--seconds 10] [--clients 4] [--rounds 3]
        [--baseline edd9d74 | --baseline none]

Starts the service (``mds-store``'s app under uvicorn, one process, its own embedded
PostgreSQL unless ``DATABASE_URL`` is set; nothing is written to it) twice: this
tree, and the code of ``--baseline`` (a git revision, extracted with ``git archive``
and put first on ``PYTHONPATH``; default: main before issue 8's decode work). Both
run side by side and are measured alternately, round by round, so a noisy machine
affects both alike. Per server: the /healthz latency when idle, then per scenario
``--clients`` processes loop one body each while this process probes /healthz every
10 ms. Printed per round, scenario and version: probe p50/p99/max, requests answered
(status counts) and the server's peak RSS growth above its level before the scenario
(``VmHWM`` after resetting it through ``/proc/<pid>/clear_refs``); at the end, the
median of the rounds.

Scenarios, each the largest body the defaults admit:
- ``max-valid-422``: 50,000 real bars (~7 MB), the last one invalid: decoded and
  validated in full, answered 422, nothing queued;
- ``tiny-objects``: 32 MiB of ``{}`` elements (11 M "bars");
- ``tiny-bars``: 32 MiB of minimal valid bars (~370,000, over the 50,000 cap).
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

MAX_BODY = 32 * 1024 * 1024
BASELINE = "edd9d74"  # main before the bounded decode of issue 8
ROOT = Path(__file__).resolve().parent.parent
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


def extract(revision: str, into: str) -> str:
    """``src`` of ``revision`` under ``into``; its path."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "src"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return f"{into}/src"


class Server:
    def __init__(self, name: str, tmp: str, pythonpath: str | None) -> None:
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MDS_COORDINATOR_DEAD_LETTER_PATH": f"{tmp}/{name}-dlq.ndjson"}
        env.setdefault("MDS_DATABASE_EMBEDDED_DIR", f"{tmp}/{name}-pgdata")
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(self.port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def scenario(server: Server, kind: str, clients_n: int, seconds: float) -> dict[str, Any]:
    pid = server.proc.pid
    before = rss_kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM
    results: multiprocessing.Queue[str] = multiprocessing.Queue()
    go, stop = multiprocessing.Event(), multiprocessing.Event()
    clients = [
        multiprocessing.Process(
            target=client, args=(server.base + "/v1/bars", kind, go, stop, results)
        )
        for _ in range(clients_n)
    ]
    for c in clients:
        c.start()
    for _ in clients:
        results.get(timeout=300)  # bodies built
    go.set()
    latencies = probe(server.base, seconds)
    stop.set()
    answered = [results.get(timeout=300) for _ in clients]
    for c in clients:
        c.join()
    peak = rss_kib(pid, "VmHWM")
    return {
        "p50": statistics.median(latencies),
        "p99": p99(latencies),
        "max": max(latencies),
        "n": len(latencies),
        "rss": max(0, peak - before) / 1024,
        "answers": "; ".join(answered),
    }


def line(name: str, kind: str, r: dict[str, Any]) -> str:
    return (
        f"{kind:<14} {name:<9}: probes p50 {r['p50']:7.2f} ms  p99 {r['p99']:8.2f} ms  "
        f"max {r['max']:8.2f} ms  n={r['n']:<5}  peak RSS +{r['rss']:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per scenario")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default=BASELINE, help="git revision, or 'none'")
    parser.add_argument(
        "--scenarios", default="max-valid-422,tiny-objects,tiny-bars", help="comma-separated"
    )
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    kinds = args.scenarios.split(",")
    with tempfile.TemporaryDirectory(prefix="mds-bench-") as tmp:
        servers = [Server("this", tmp, None)]
        if args.baseline != "none":
            servers.append(Server(args.baseline, tmp, extract(args.baseline, f"{tmp}/base")))
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        try:
            for server in servers:
                wait_ready(server.base, server.proc)
                idle = probe(server.base, 5)
                print(
                    f"idle /healthz {server.name}: p50 {statistics.median(idle):.2f} ms  "
                    f"p99 {p99(idle):.2f} ms",
                    flush=True,
                )
            for round_ in range(args.rounds):
                for kind in kinds:
                    order = servers if round_ % 2 == 0 else servers[::-1]
                    for server in order:
                        r = scenario(server, kind, args.clients, args.seconds)
                        results.setdefault((kind, server.name), []).append(r)
                        print(
                            f"round {round_ + 1} {line(server.name, kind, r)}  "
                            f"answers: {r['answers']}",
                            flush=True,
                        )
            print(f"median of {args.rounds} round(s), {args.clients} clients:")
            for kind in kinds:
                for server in servers:
                    rs = results[(kind, server.name)]
                    med = {
                        k: statistics.median(r[k] for r in rs)
                        for k in ("p50", "p99", "max", "n", "rss")
                    }
                    print(line(server.name, kind, {**med, "answers": ""}))
        finally:
            for server in servers:
                server.stop()


if __name__ == "__main__":
    main()
