"""SSE fan-out: delivery latency and completeness to many subscribers, memory per stream,
against the plainest Litestar broadcast measured in the same run.

    .venv/bin/python bench/sse.py [--subscribers 1000] [--clients 4] [--rounds 10]
                                  [--port PORT] [--database-url URL]

Starts ``mds-store serve`` (one process) on a throwaway database of the
machine's PostgreSQL (created through ``--admin-url``, dropped at the end;
``--database-url`` or ``DATABASE_URL`` use that database instead), with a small
bars queue (capacity 1000, high watermark 800, low 500, one worker, batches of
100), so that each round - one POST of 900 bars - publishes exactly three level
changes: soft, hard, then ok (queue_recovered) once the worker drained it.
The bench keeps one control stream of its own: it tells when a round is over
and which event ids were published.

1. crossing -> client: one subscriber (one client process), ``--rounds`` rounds;
   latency is each event's ``ts`` (``time.time()`` when the queue crossed the
   watermark, in the server) to the client reading the frame (``time.time()``
   again: same machine, same clock);
2. server RSS (``VmRSS``) with the control stream alone, then with
   ``--subscribers`` idle ones more, held by ``--clients`` processes (raw asyncio
   sockets on uvloop; one process alone would be the bottleneck), connected in
   batches of ``--connect-batch`` per client (uvicorn's backlog is 2048);
3. ``--rounds`` rounds to all of them: latency over every (subscriber, event) pair,
   per level, per event (when the first and the last subscriber got it), and how
   many subscribers received every event published after they connected.

Then the baseline, the plainest Litestar broadcast (``bench/sse_baseline.py``:
per subscriber an ``asyncio.Queue`` registered in a set and a ``ServerSentEvent``
over an async generator that JSON-encodes each event it takes from its queue),
served by uvicorn as the service is (httptools, uvloop, no access log, lifespan
on), goes through steps 2 and 3 with the same client processes: after a snapshot
event, each round publishes soft and hard at once, then ok after the service's
median hard -> ok delay in step 3 (its ``ts`` is ``time.time()`` at publish), and
the next round starts ``ROUND_GAP`` after the control stream got the ok, as with
the service.

Prints one table: the service's figures, the targets (every subscriber gets every
event, p99 < 100 ms to all, crossing -> client p50 < 5 ms, < 50 KiB per idle
subscriber), the baseline's figures and the ratios service / baseline (p50, p99,
max latency, RSS per idle subscriber). Absolute figures depend on the machine
(and on the clients sharing its cores with the server): compare the ratios.

This file runs the servers and the rounds; the client processes are
``bench/sse_client.py``, the figures and the table ``bench/sse_figures.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import uvloop
from sse_client import (
    Received,
    Stream,
    collect,
    open_stream,
    raise_fd_limit,
    start_clients,
    stop_clients,
)
from sse_figures import Delivery, Fanout, Results, delivery, ok_delay, report

T = TypeVar("T")

INSTANCE = "bench-sse"
CAPACITY, HIGH, LOW, BATCH = 1000, 800, 500, 100
BARS_PER_ROUND = 900  # > HIGH: soft, hard, then ok once drained to LOW
T0 = datetime(2024, 1, 2, tzinfo=UTC)

READY_TIMEOUT = 60.0
ROUND_TIMEOUT = 30.0  # one POST until its `ok` reached the control stream
ROUND_GAP = 0.25  # pause between rounds: the previous round's frames reach every client
SETTLE = 1.0  # idle time before reading RSS
SHUTDOWN_TIMEOUT = 30.0
BASELINE = Path(__file__).with_name("sse_baseline.py")
DEFAULT_OK_DELAY = 0.03  # baseline hard -> ok when the service gave none (it failed)


# -- the servers ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def server_env(database_url: str, tmp: str, subscribers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDS_")}
    env.update(
        {
            "DATABASE_URL": database_url,
            "MDS_CONFIG": "",
            "MDS_SERVER_INSTANCE_ID": INSTANCE,
            "MDS_COORDINATOR_CAPACITY": str(CAPACITY),
            "MDS_COORDINATOR_HIGH_WATERMARK": str(HIGH),
            "MDS_COORDINATOR_LOW_WATERMARK": str(LOW),
            "MDS_COORDINATOR_WORKERS": "1",
            "MDS_COORDINATOR_BATCH_SIZE": str(BATCH),
            "MDS_COORDINATOR_DEAD_LETTER_PATH": f"{tmp}/dlq.ndjson",
            "MDS_FEEDBACK_SSE_MAX_STREAMS": str(max(10_000, subscribers + 100)),
            # every subscriber connects from loopback: one client address for the cap
            "MDS_FEEDBACK_SSE_MAX_STREAMS_PER_CLIENT": str(max(10_000, subscribers + 100)),
        }
    )
    return env


@contextlib.contextmanager
def server_process(
    command: list[str], log: IO[bytes], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, SIGTERMed on the way out (killed if it does not end in time)."""
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_ready(http: httpx.AsyncClient, proc: subprocess.Popen[bytes], path: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if (await http.get(path, timeout=1)).status_code == 200:
                return
        await asyncio.sleep(0.2)
    raise RuntimeError("server did not become ready")


async def subscribers_open(http: httpx.AsyncClient) -> int:
    health = (await http.get("/healthz", timeout=5)).json()
    if "subscribers" in health:  # the baseline
        return int(health["subscribers"])
    for component in health["components"]:
        if component["name"] == "feedback":
            return int(component["details"]["subscribers"])
    raise RuntimeError("no feedback component in /healthz")


async def wait_subscribers(http: httpx.AsyncClient, wanted: int, timeout: float = 10) -> int:
    for _ in range(round(timeout / 0.1)):
        if (n := await subscribers_open(http)) == wanted:
            return n
        await asyncio.sleep(0.1)
    return await subscribers_open(http)


async def fanout_counters(http: httpx.AsyncClient) -> dict[str, float]:
    """The fan-out's own counters from /metrics (conflated, dropped by reason...)."""
    out: dict[str, float] = {}
    for line in (await http.get("/metrics", timeout=5)).text.splitlines():
        if line.startswith("mds_feedback_sse_"):
            name = line.split("{")[0].removeprefix("mds_feedback_sse_").removesuffix("_total")
            reason = re.search(r'reason="(\w+)"', line)
            out[f"{name}:{reason[1]}" if reason else name] = float(line.rsplit(" ", 1)[1])
    return out


class Rounds:
    """Rounds of level changes (soft, hard, ok); each is over once its `ok` reached
    the control stream."""

    def __init__(self, http: httpx.AsyncClient, control: Stream) -> None:
        self.http = http
        self.control = control
        self.done = 0

    async def publish(self) -> None:
        raise NotImplementedError

    async def run(self, n: int) -> list[Received]:
        """``n`` rounds; the events the control stream got meanwhile."""
        start = self.control.last_id()
        for _ in range(n):
            before = self.control.last_id()
            await self.publish()
            self.done += 1
            await self.wait_recovered(after=before)
            await asyncio.sleep(ROUND_GAP)
        return [e for e in self.control.parse().events if e.id > start]

    async def wait_recovered(self, after: int) -> None:
        """Until the control stream got an `ok` with an id above ``after``."""
        control, changed = self.control, self.control.changed
        assert changed is not None
        async with asyncio.timeout(ROUND_TIMEOUT):
            while not any(e.id > after and e.level == "ok" for e in control.parse().events):
                if control.closed:
                    raise RuntimeError("the control stream ended")
                changed.clear()
                await changed.wait()


class ServiceRounds(Rounds):
    """POSTs that each make the queue go soft, hard and back to ok."""

    def body(self) -> bytes:
        first = self.done * BARS_PER_ROUND
        bars = [
            {"symbol": "SSE", "ts": (T0 + timedelta(minutes=first + i)).isoformat(),
             "open": "1", "high": "1", "low": "1", "close": "1", "volume": "1",
             "resolution": "1m"}
            for i in range(BARS_PER_ROUND)
        ]  # fmt: skip
        return json.dumps({"provider": "bench-sse", "bars": bars}).encode()

    async def publish(self) -> None:
        response = await self.http.post(
            "/v1/bars", content=self.body(), headers={"content-type": "application/json"}
        )
        if response.status_code != 202:
            raise RuntimeError(f"POST /v1/bars: {response.status_code} {response.text}")


class BaselineRounds(Rounds):
    """``POST /publish``: soft and hard at once, ok ``ok_delay`` later."""

    def __init__(self, http: httpx.AsyncClient, control: Stream, ok_delay: float) -> None:
        super().__init__(http, control)
        self.ok_delay = ok_delay

    async def publish(self) -> None:
        steps = [["soft", 0.0], ["hard", 0.0], ["ok", self.ok_delay]]
        response = await self.http.post("/publish", json={"steps": steps})
        if response.status_code != 200:
            raise RuntimeError(f"POST /publish: {response.status_code} {response.text}")


def server_log_problems(path: Path) -> list[str]:
    return [
        line
        for line in path.read_text(errors="replace").splitlines()
        if " WARNING " in line or " ERROR " in line or "Traceback" in line
    ]


# -- orchestration ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def control_stream(port: int) -> AsyncIterator[Stream]:
    """The bench's own stream: which events were published, when a round is over."""
    control = await open_stream("127.0.0.1", port, notify=True)
    try:
        if control.parser.status != 200:
            raise RuntimeError(f"control stream: HTTP {control.parser.status}")
        yield control
    finally:
        control.close()


async def fan_out(
    args: argparse.Namespace,
    http: httpx.AsyncClient,
    server: subprocess.Popen[bytes],
    rounds: Rounds,
) -> Fanout:
    """Steps 2 and 3; the control stream is the only one open when called."""
    await wait_subscribers(http, 1)
    await asyncio.sleep(SETTLE)
    rss_before = rss_bytes(server.pid)
    shares = [
        args.subscribers // args.clients + (i < args.subscribers % args.clients)
        for i in range(args.clients)
    ]
    clients = await start_clients(server_port(http), [n for n in shares if n], args.connect_batch)
    try:
        await asyncio.sleep(SETTLE)
        open_during = await subscribers_open(http) - 1  # minus the control stream
        rss_after = rss_bytes(server.pid)
        events = await rounds.run(args.rounds)
        streams = await collect(clients, rounds.control.last_id())
    finally:
        await stop_clients(clients)
    return Fanout(
        delivery(streams, events, args.subscribers), events, clients, open_during,
        rss_before, rss_after,
    )  # fmt: skip


def server_port(http: httpx.AsyncClient) -> int:
    port = http.base_url.port
    assert port is not None
    return port


async def measure_service(
    args: argparse.Namespace, port: int, server: subprocess.Popen[bytes]
) -> tuple[Fanout, Delivery, list[Received], dict[str, float]]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        await wait_ready(http, server, "/readyz")
        async with control_stream(port) as control:
            rounds = ServiceRounds(http, control)
            await rounds.run(1)  # warm-up (first connection, first writes...)

            # 1. crossing -> client, one subscriber
            single = await start_clients(port, [1], 1)
            try:
                single_events = await rounds.run(args.rounds)
                single_streams = await collect(single, control.last_id())
            finally:
                await stop_clients(single)
            one = delivery(single_streams, single_events, 1)

            # 2. and 3.
            many = await fan_out(args, http, server, rounds)
            counters = await fanout_counters(http)
    return many, one, single_events, counters


async def measure_baseline(
    args: argparse.Namespace, port: int, server: subprocess.Popen[bytes], delay: float
) -> Fanout:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        await wait_ready(http, server, "/healthz")
        async with control_stream(port) as control:
            rounds = BaselineRounds(http, control, delay)
            await rounds.run(1)  # warm-up
            return await fan_out(args, http, server, rounds)


async def create_database(admin_url: str) -> tuple[str, str]:
    name = f"mds_bench_sse_{os.getpid()}"
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path=f"/{name}")), name


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def problems_of(proc: subprocess.Popen[bytes], log_path: Path) -> list[str]:
    problems = server_log_problems(log_path)
    if proc.returncode != 0:
        problems.append(f"server exited with {proc.returncode}")
    return problems


def run(args: argparse.Namespace) -> Results:
    """The service (on its database), then the baseline: one server at a time."""
    raise_fd_limit(args.subscribers + 1024)  # inherited by the servers and the clients
    with tempfile.TemporaryDirectory(prefix="mds-bench-sse-") as tmp:
        dropped: str | None = None
        url = args.database_url
        if not url:
            url, dropped = asyncio.run(create_database(args.admin_url))
        try:
            port = args.port or free_port()
            log_path = Path(tmp) / "service.log"
            command = [sys.executable, "-m", "market_data_store.cli", "serve", "--port", str(port)]
            with (
                log_path.open("wb") as log,
                server_process(command, log, server_env(url, tmp, args.subscribers)) as server,
            ):
                measured = in_loop(measure_service(args, port, server), log_path)
            service, single, single_events, counters = measured
            service.problems = problems_of(server, log_path)
        finally:
            if dropped:
                asyncio.run(drop_database(args.admin_url, dropped))

        delay = ok_delay(service.events)
        delay = DEFAULT_OK_DELAY if delay is None else delay
        port = free_port()
        log_path = Path(tmp) / "baseline.log"
        command = [sys.executable, str(BASELINE), "--port", str(port), *baseline_shape()]
        with log_path.open("wb") as log, server_process(command, log) as server:
            baseline = in_loop(measure_baseline(args, port, server, delay), log_path)
        baseline.problems = problems_of(server, log_path)
    return Results(service, single, single_events, counters, baseline, delay)


def baseline_shape() -> list[str]:
    """The baseline's arguments: its events are those of the service's bars queue."""
    return [
        "--coordinator-id", f"{INSTANCE}/bars",
        "--capacity", str(CAPACITY), "--high", str(HIGH), "--low", str(LOW),
    ]  # fmt: skip


def in_loop(coro: Coroutine[Any, Any, T], log_path: Path) -> T:
    """Run ``coro`` on uvloop; on failure, show the end of the server's log."""
    try:
        return uvloop.run(coro)
    except BaseException:
        sys.stderr.write(log_path.read_text(errors="replace")[-4000:])
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--rounds", type=int, default=10, help="3 level changes each")
    parser.add_argument("--port", type=int, default=0, help="the service's; default: a free port")
    parser.add_argument(
        "--connect-batch", type=int, default=50, help="connections a client opens at once"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="use this database (default: $DATABASE_URL, else a throwaway one)",
    )
    parser.add_argument(
        "--admin-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="where the throwaway database is created (and dropped)",
    )
    args = parser.parse_args()
    if args.subscribers < 1 or args.clients < 1 or args.rounds < 1:
        parser.error("--subscribers, --clients and --rounds must be at least 1")
    args.clients = min(args.clients, args.subscribers)
    # SIGTERM as Ctrl+C: the servers and clients are stopped, the database dropped
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        results = run(args)
    except (RuntimeError, TimeoutError, OSError, asyncpg.PostgresError) as exc:
        sys.exit(f"bench/sse.py: {type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench/sse.py: interrupted")
    report(args, results)


if __name__ == "__main__":
    main()
