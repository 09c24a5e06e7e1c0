"""Probe cost: /healthz against a trivial route of the same app, and against a bare
Litestar app's trivial route on the same server settings, same run.

    .venv/bin/python bench/health.py [--duration 5] [--connections 16] [--rounds 2]

Starts the service (``mds-store``'s app under uvicorn, one process, its own
embedded PostgreSQL unless ``DATABASE_URL`` is set) with one extra route,
``GET /bench/trivial``, returning a constant small JSON body; and, in a second
process, a bare Litestar app (no middleware, no dependencies, no lifespan) with
the same route, under the same ``build_server`` settings. Then loads each route
in turn with wrk (else hey, else a Python client), ``--rounds`` times,
alternating, and keeps each route's best round. Prints req/s and p99 per route
and the ratios: /healthz as a share of the bare app's route is what the service's
own per-request cost (middleware, metrics, routing, dependencies) leaves of
Litestar's; absolute numbers depend on the machine.
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


def serve_bare(port: int) -> None:
    """A bare Litestar app: one route, nothing of the service's own per-request path."""
    from litestar import Litestar, get

    from market_data_store.config import load_settings
    from market_data_store.server import build_server

    @get(TRIVIAL, sync_to_thread=False)
    def trivial() -> dict[str, bool]:
        return {"ok": True}

    @get("/readyz", sync_to_thread=False)
    def ready() -> dict[str, bool]:
        return {"ok": True}

    app = Litestar(
        route_handlers=[trivial, ready],
        logging_config=None,
        openapi_config=None,
    )
    build_server(app, load_settings(), host="127.0.0.1", port=port).run()


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
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return

    service = f"http://127.0.0.1:{free_port()}"
    bare = f"http://127.0.0.1:{free_port()}"
    targets = {
        "bare Litestar": bare + TRIVIAL,
        "service trivial": service + TRIVIAL,
        "service /healthz": service + HEALTH,
    }
    with tempfile.TemporaryDirectory(prefix="mds-bench-") as tmp:
        env = {**os.environ, "MDS_COORDINATOR_DEAD_LETTER_PATH": f"{tmp}/dlq.ndjson"}
        env.setdefault("MDS_DATABASE_EMBEDDED_DIR", f"{tmp}/pgdata")
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, flag, base.rsplit(":", 1)[1]],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for flag, base in (("--serve", service), ("--serve-bare", bare))
        ]
        try:
            for proc, base in zip(procs, (service, bare), strict=True):
                wait_ready(base, proc)
            for url in targets.values():  # warm-up
                load(url, 1, args.connections)
            best: dict[str, Result] = {}
            for _ in range(args.rounds):
                for name, url in targets.items():
                    result = load(url, args.duration, args.connections)
                    if name not in best or result.rps > best[name].rps:
                        best[name] = result
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=30)

    for name, result in best.items():
        print(f"{name:<18}: {result.rps:>9,.0f} req/s  p99 {result.p99_ms:6.2f} ms")
    base_rps, trivial, health = (best[name].rps for name in targets)
    tool = f"{best['bare Litestar'].tool}, {args.connections} connections, "
    tool += f"best of {args.rounds}x{args.duration}s"
    print(f"/healthz / service trivial   : {health / trivial:>7.1%}")
    print(f"service trivial / bare       : {trivial / base_rps:>7.1%}")
    print(f"/healthz / bare Litestar     : {health / base_rps:>7.1%}  ({tool})")


if __name__ == "__main__":
    main()
