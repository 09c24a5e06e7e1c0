"""Probe cost: /healthz against a trivial route of the same app, same server, same run.

    .venv/bin/python bench/health.py [--duration 5] [--connections 16] [--rounds 2]

Starts the service (``mds-store``'s app under uvicorn, one process, its own
embedded PostgreSQL unless ``DATABASE_URL`` is set) with one extra route,
``GET /bench/trivial``, returning a constant small JSON body. Then loads each
route in turn with wrk (else hey, else a Python client), ``--rounds`` times,
alternating, and keeps each route's best round. Prints req/s and p99 per route
and /healthz as a share of the trivial route: the ratio is the figure to compare,
absolute numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import httpx

TRIVIAL = "/bench/trivial"
HEALTH = "/healthz"


@dataclass
class Result:
    rps: float
    p99_ms: float
    tool: str


# -- the server side ------------------------------------------------------------


def serve(port: int) -> None:
    from litestar import get

    from market_data_store.config import load_settings
    from market_data_store.http import create_app
    from market_data_store.server import build_server

    @get(TRIVIAL, sync_to_thread=False)
    def trivial() -> dict[str, bool]:
        return {"ok": True}

    settings = load_settings()
    app = create_app(settings)
    app.register(trivial)
    build_server(app, settings, host="127.0.0.1", port=port).run()


# -- load generators ------------------------------------------------------------


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, duration: int, connections: int) -> Result:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    assert p99 is not None, out
    return Result(rps, _ms(p99[1], p99[2]), "wrk")


def run_hey(url: str, duration: int, connections: int) -> Result:
    out = subprocess.run(
        ["hey", "-z", f"{duration}s", "-c", str(connections), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p99 = float(re.search(r"99% in ([\d.]+) secs", out)[1]) * 1000  # type: ignore[index]
    return Result(rps, p99, "hey")


def run_python(url: str, duration: int, connections: int) -> Result:
    async def main() -> Result:
        latencies: list[float] = []
        deadline = time.monotonic() + duration

        async def worker(client: httpx.AsyncClient) -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                (await client.get(url)).raise_for_status()
                latencies.append(time.perf_counter() - started)

        async with httpx.AsyncClient() as client:
            started = time.monotonic()
            await asyncio.gather(*(worker(client) for _ in range(connections)))
            elapsed = time.monotonic() - started
        p99 = statistics.quantiles(latencies, n=100)[98] * 1000
        return Result(len(latencies) / elapsed, p99, "python")

    return asyncio.run(main())


def load(url: str, duration: int, connections: int) -> Result:
    if shutil.which("wrk"):
        return run_wrk(url, duration, connections)
    if shutil.which("hey"):
        return run_hey(url, duration, connections)
    return run_python(url, duration, connections)


# -- orchestration --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per round and route")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
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
            load(base + TRIVIAL, 1, args.connections)  # warm-up
            load(base + HEALTH, 1, args.connections)
            best: dict[str, Result] = {}
            for _ in range(args.rounds):
                for path in (TRIVIAL, HEALTH):
                    result = load(base + path, args.duration, args.connections)
                    if path not in best or result.rps > best[path].rps:
                        best[path] = result
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

    trivial, health = best[TRIVIAL], best[HEALTH]
    tool = f"{health.tool}, {args.connections} connections, best of {args.rounds}x{args.duration}s"
    print(f"trivial route {TRIVIAL:<14}: {trivial.rps:>9,.0f} req/s  p99 {trivial.p99_ms:6.2f} ms")
    print(f"health probe  {HEALTH:<14}: {health.rps:>9,.0f} req/s  p99 {health.p99_ms:6.2f} ms")
    print(f"/healthz / trivial req/s   : {health.rps / trivial.rps:>9.1%}  ({tool})")


if __name__ == "__main__":
    main()
