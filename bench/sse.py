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

Then the baseline, the plainest Litestar broadcast (this file with
``--baseline-server``: per subscriber an ``asyncio.Queue`` registered in a set and
a ``ServerSentEvent`` over an async generator that JSON-encodes each event it
takes from its queue), served by uvicorn as the service is (httptools, uvloop,
no access log, lifespan on), goes through steps 2 and 3 with the same client
processes: after a snapshot event, each round publishes soft and hard at once,
then ok after the service's median hard -> ok delay in step 3 (its ``ts`` is
``time.time()`` at publish), and the next round starts ``ROUND_GAP`` after the
control stream got the ok, as with the service.

Prints one table: the service's figures, the targets (every subscriber gets every
event, p99 < 100 ms to all, crossing -> client p50 < 5 ms, < 50 KiB per idle
subscriber), the baseline's figures and the ratios service / baseline (p50, p99,
max latency, RSS per idle subscriber). Absolute figures depend on the machine
(and on the clients sharing its cores with the server): compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import uvloop

if TYPE_CHECKING:
    from litestar import Litestar

T = TypeVar("T")

STREAM = "/v1/feedback/stream"
INSTANCE = "bench-sse"
CAPACITY, HIGH, LOW, BATCH = 1000, 800, 500, 100
BARS_PER_ROUND = 900  # > HIGH: soft, hard, then ok once drained to LOW
T0 = datetime(2024, 1, 2, tzinfo=UTC)

# targets (from the issue)
TARGET_P99_MS = 100.0
TARGET_SINGLE_P50_MS = 5.0
TARGET_KIB = 50.0  # server RSS per idle subscriber

READY_TIMEOUT = 60.0
CONNECT_TIMEOUT = 30.0  # one batch of connections, until every response head is in
ROUND_TIMEOUT = 30.0  # one POST until its `ok` reached the control stream
ROUND_GAP = 0.25  # pause between rounds: the previous round's frames reach every client
SETTLE = 1.0  # idle time before reading RSS
DELIVERY_TIMEOUT = 15.0  # clients waiting for the last event before they report
CLIENT_TIMEOUT = 120.0  # a client process from start to its report
SHUTDOWN_TIMEOUT = 30.0
BASELINE_GRACE = 5  # the baseline's uvicorn timeout_graceful_shutdown
DEFAULT_OK_DELAY = 0.03  # baseline hard -> ok when the service gave none (it failed)


# -- reading a stream -------------------------------------------------------------


class Received(NamedTuple):
    id: int
    ts: float  # the event's ts: when the server crossed the watermark
    at: float  # time.time() when the frame's last byte was read
    level: str


class SseParser:
    """Incremental: the HTTP/1.1 response head, a chunked body, SSE messages (LF or CRLF)."""

    def __init__(self) -> None:
        self.status = 0
        self.events: list[Received] = []
        self.keepalives = 0
        self.other: list[str] = []  # events other than `feedback` (e.g. reset)
        self.ended = False  # last chunk seen
        self._raw = b""
        self._text = b""
        self._chunked = False

    def feed(self, data: bytes, at: float) -> None:
        raw = self._raw + data
        if not self.status:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                self._raw = raw
                return
            status_line, *headers = raw[:end].decode("latin-1").split("\r\n")
            self.status = int(status_line.split()[1])
            self._chunked = any(
                h.lower().replace(" ", "") == "transfer-encoding:chunked" for h in headers
            )
            raw = raw[end + 4 :]
        if self.status != 200:
            self._raw = b""
            return
        if self._chunked:
            parts, pos = [], 0
            while not self.ended:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(raw[pos:eol].split(b";")[0], 16)
                if size == 0:
                    self.ended = True
                    break
                if len(raw) < eol + 2 + size + 2:
                    break
                parts.append(raw[eol + 2 : eol + 2 + size])
                pos = eol + 4 + size
            self._raw = raw[pos:]
            text = self._text + b"".join(parts)
        else:
            self._raw = b""
            text = self._text + raw
        # Litestar's ServerSentEvent (the baseline) ends lines with CRLF, the service with LF;
        # a CR left at the end of the rest joins its LF on the next call
        *messages, self._text = text.replace(b"\r\n", b"\n").split(b"\n\n")
        for message in messages:
            self._message(message, at)

    def _message(self, block: bytes, at: float) -> None:
        event = event_id = data = None
        for line in block.split(b"\n"):
            name, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if not name:
                self.keepalives += value.strip() == b"keepalive"
            elif name == b"event":
                event = value.decode()
            elif name == b"id":
                event_id = int(value)
            elif name == b"data":
                data = value
        if event == "feedback" and event_id is not None and data is not None:
            body = json.loads(data)
            self.events.append(Received(event_id, float(body["ts"]), at, body["level"]))
        elif event is not None:
            self.other.append(event)


class Stream(asyncio.Protocol):
    """One subscriber on a raw socket: stores what arrives with its arrival time,
    parses later (``parse``) so that reading stays as cheap as it can be."""

    def __init__(self, host: str, port: int, *, notify: bool = False) -> None:
        self.request = (
            f"GET {STREAM} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        ).encode()
        self.parser = SseParser()
        self.transport: asyncio.Transport | None = None
        self.head: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.changed = asyncio.Event() if notify else None
        self._segments: list[tuple[float, bytes]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self._segments.append((time.time(), data))
        if not self.head.done():
            self.parse()
            if self.parser.status:
                self.head.set_result(self.parser.status)
        if self.changed is not None:
            self.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.head.done():
            self.head.set_result(0)
        if self.changed is not None:
            self.changed.set()

    def parse(self) -> SseParser:
        for at, data in self._segments:
            self.parser.feed(data, at)
        self._segments.clear()
        return self.parser

    def last_id(self) -> int:
        events = self.parse().events
        return events[-1].id if events else 0

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_stream(host: str, port: int, *, notify: bool = False) -> Stream:
    stream = Stream(host, port, notify=notify)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await loop.create_connection(lambda: stream, host, port)
            await stream.head
    except (OSError, TimeoutError):
        stream.close()
        stream.closed = True
    return stream


# -- client processes -------------------------------------------------------------


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


async def run_client(port: int, subscribers: int, batch: int) -> None:
    """Hold ``subscribers`` streams. Protocol on stdin/stdout, one JSON line each:
    out ``{"connected", "statuses"}`` once connected; in ``{"last_id"}``; out the
    events every stream got, once each has ``last_id`` (or after DELIVERY_TIMEOUT)."""
    raise_fd_limit(subscribers + 256)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    streams: list[Stream] = []
    for lo in range(0, subscribers, batch):
        n = min(batch, subscribers - lo)
        streams += await asyncio.gather(*(open_stream("127.0.0.1", port) for _ in range(n)))
    statuses: dict[str, int] = {}
    for s in streams:
        key = str(s.parser.status)
        statuses[key] = statuses.get(key, 0) + 1
    print(json.dumps({"connected": statuses.get("200", 0), "statuses": statuses}), flush=True)

    line = await asyncio.wait_for(stdin.readline(), CLIENT_TIMEOUT)
    last_id = int(json.loads(line)["last_id"]) if line else 0
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while time.monotonic() < deadline:
        if all(s.closed or s.last_id() >= last_id for s in streams):
            break
        await asyncio.sleep(0.05)
    report = []
    for s in streams:
        parser = s.parse()
        report.append(
            {
                "status": parser.status,
                "closed": s.closed,  # the server ended it (or it never opened)
                "other": parser.other,
                "events": [list(e) for e in parser.events],
            }
        )
        s.close()
    print(json.dumps({"streams": report}), flush=True)


@dataclass
class Client:
    proc: asyncio.subprocess.Process
    connected: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


async def start_clients(port: int, shares: list[int], batch: int) -> list[Client]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--client",
            "--port",
            str(port),
            "--subscribers",
            str(n),
            "--connect-batch",
            str(batch),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 28,
        )
        for n in shares
    ]
    clients = [Client(p) for p in procs]

    async def hello(client: Client) -> None:
        assert client.proc.stdout is not None
        line = await client.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client process exited with {await client.proc.wait()}")
        report = json.loads(line)
        client.connected, client.statuses = report["connected"], report["statuses"]

    try:
        async with asyncio.timeout(CONNECT_TIMEOUT * (max(shares) // batch + 2)):
            await asyncio.gather(*(hello(c) for c in clients))
    except BaseException:
        await stop_clients(clients)
        raise
    return clients


async def collect(clients: list[Client], last_id: int) -> list[dict[str, Any]]:
    """Every stream's report, once the clients saw ``last_id`` (or gave up waiting)."""
    command = json.dumps({"last_id": last_id}).encode() + b"\n"
    streams: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(DELIVERY_TIMEOUT + 30):
            outputs = await asyncio.gather(*(c.proc.communicate(command) for c in clients))
        for out, _ in outputs:
            streams += json.loads(out)["streams"]
    finally:
        await stop_clients(clients)
    return streams


async def stop_clients(clients: list[Client]) -> None:
    for c in clients:
        if c.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                c.proc.kill()
            await c.proc.wait()


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


def ok_delay(events: list[Received]) -> float | None:
    """The median delay from a `hard` to the `ok` that follows it (``ts`` to ``ts``)."""
    delays = [
        b.ts - a.ts for a, b in itertools.pairwise(events) if (a.level, b.level) == ("hard", "ok")
    ]
    return statistics.median(delays) if delays else None


# -- the baseline: the plainest Litestar broadcast ---------------------------------

BaselineItem = tuple[int, dict[str, Any]]  # (id, event)
BASELINE_SHAPES = {  # level: (queue_size, reason), as the service's bars queue sends them
    "soft": (LOW + 1, None),
    "hard": (HIGH, None),
    "ok": (LOW, "queue_recovered"),
}


def baseline_event(level: str, queue_size: int, reason: str | None) -> dict[str, Any]:
    """The service's event JSON (Core's FeedbackEvent + reason, utilization), ts now."""
    return {
        "coordinator_id": f"{INSTANCE}/bars",
        "queue_size": queue_size,
        "capacity": CAPACITY,
        "level": level,
        "source": "store",
        "ts": time.time(),
        "reason": reason,
        "utilization": round(queue_size / CAPACITY, 4),
    }


def baseline_app() -> Litestar:
    """``GET /v1/feedback/stream``, ``POST /publish``, ``GET /healthz``; the process ends
    by itself if the bench goes away without stopping it."""
    from litestar import Litestar, get, post  # here: not for the client processes
    from litestar.response import ServerSentEvent, ServerSentEventMessage

    queues: set[asyncio.Queue[BaselineItem]] = set()
    latest: list[BaselineItem] = [(0, baseline_event("ok", 0, "service_started"))]

    async def messages(queue: asyncio.Queue[BaselineItem]) -> AsyncIterator[ServerSentEventMessage]:
        try:
            while True:
                seq, event = await queue.get()
                yield ServerSentEventMessage(data=json.dumps(event), event="feedback", id=seq)
        finally:
            queues.discard(queue)

    @get(STREAM, sync_to_thread=False)
    def stream() -> ServerSentEvent:
        queue: asyncio.Queue[BaselineItem] = asyncio.Queue()
        queue.put_nowait(latest[-1])  # the snapshot: the latest event
        queues.add(queue)
        return ServerSentEvent(messages(queue))

    @post("/publish", status_code=200)
    async def publish(data: dict[str, Any]) -> dict[str, int]:
        """``{"steps": [[level, delay], ...]}``: each level published ``delay`` s after
        the previous one (at once when 0)."""
        for level, delay in data["steps"]:
            if delay:
                await asyncio.sleep(delay)
            item = (latest[-1][0] + 1, baseline_event(level, *BASELINE_SHAPES[level]))
            latest[-1] = item
            for queue in queues:
                queue.put_nowait(item)
        return {"last_id": latest[-1][0]}

    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, int]:
        return {"subscribers": len(queues)}

    parent = os.getppid()

    def watch_parent() -> None:  # once a second
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            asyncio.get_running_loop().call_later(1, watch_parent)

    return Litestar(
        [stream, publish, healthz],
        on_startup=[watch_parent],
        openapi_config=None,
        logging_config=None,  # the basicConfig of serve_baseline
        signature_namespace={"ServerSentEvent": ServerSentEvent},
    )


def serve_baseline(port: int) -> None:
    """uvicorn as ``market_data_store.server.build_server`` sets it up."""
    import uvicorn

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    config = uvicorn.Config(
        baseline_app(),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=BASELINE_GRACE,
        log_config=None,
    )
    # uvicorn re-raises SIGTERM once shut down: let the process end with 0 (as the service)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    uvicorn.Server(config).run()


# -- figures ----------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest rank; ``values`` sorted."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))]


@dataclass
class Delivery:
    subscribers: int = 0  # meant to be open
    opened: int = 0
    complete: int = 0  # got every published event
    missing: int = 0  # (subscriber, event) pairs never received
    duplicates: int = 0
    out_of_order: int = 0
    ended_early: int = 0  # streams the server closed
    latencies_ms: list[float] = field(default_factory=list)
    by_level: dict[str, list[float]] = field(default_factory=dict)
    by_event: dict[int, list[float]] = field(default_factory=dict)

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def spread(self) -> str:
        """Per event, the first and the last subscriber reached: median over events
        (worst event)."""
        first = sorted(min(v) for v in self.by_event.values())
        last = sorted(max(v) for v in self.by_event.values())
        return (
            f"{percentile(first, 50):.1f} ({first[-1] if first else float('nan'):.1f})"
            f" / {percentile(last, 50):.1f} ({last[-1] if last else float('nan'):.1f})"
        )

    def levels(self, q: float) -> str:
        """Percentile ``q`` per level, soft / hard / ok, e.g. ``3.1 / 3.2 / 1.0``."""
        return " / ".join(
            f"{percentile(self.by_level.get(level, []), q):.1f}" for level in ("soft", "hard", "ok")
        )


def delivery(streams: Iterable[dict[str, Any]], published: list[Received], wanted: int) -> Delivery:
    ids = {e.id for e in published}
    d = Delivery(subscribers=wanted)
    for s in streams:
        if s["status"] != 200:
            continue
        d.opened += 1
        d.ended_early += s["closed"]
        got = [Received(*e) for e in s["events"] if e[0] in ids]
        seen = {e.id for e in got}
        d.complete += seen == ids
        d.missing += len(ids - seen)
        d.duplicates += len(got) - len(seen)
        d.out_of_order += sum(a.id >= b.id for a, b in itertools.pairwise(got))
        for e in got:
            ms = (e.at - e.ts) * 1000
            d.latencies_ms.append(ms)
            d.by_level.setdefault(e.level, []).append(ms)
            d.by_event.setdefault(e.id, []).append(ms)
    d.latencies_ms.sort()
    for values in d.by_level.values():
        values.sort()
    d.missing += (wanted - d.opened) * len(ids)
    return d


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def server_log_problems(path: Path) -> list[str]:
    return [
        line
        for line in path.read_text(errors="replace").splitlines()
        if " WARNING " in line or " ERROR " in line or "Traceback" in line
    ]


# -- orchestration ----------------------------------------------------------------


@dataclass
class Fanout:
    """Steps 2 and 3 on one server: memory per idle subscriber, then the rounds to all."""

    many: Delivery
    events: list[Received]
    clients: list[Client]
    open_during: int
    rss_before: int
    rss_after: int
    problems: list[str] = field(default_factory=list)  # server log warnings/errors, exit

    def kib_per_subscriber(self) -> float:
        return (self.rss_after - self.rss_before) / max(self.open_during, 1) / 1024

    def refused(self) -> str:
        statuses: dict[str, int] = {}
        for client in self.clients:
            for status, count in client.statuses.items():
                statuses[status] = statuses.get(status, 0) + count
        return ", ".join(
            f"{'connect failed' if k == '0' else 'HTTP ' + k}: {v}"
            for k, v in sorted(statuses.items())
            if k != "200"
        )


@dataclass
class Results:
    service: Fanout
    single: Delivery
    single_events: list[Received]
    counters: dict[str, float]
    baseline: Fanout
    baseline_ok_delay: float  # the pause between hard and ok the baseline was asked for


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
        command = [sys.executable, __file__, "--baseline-server", "--port", str(port)]
        with log_path.open("wb") as log, server_process(command, log) as server:
            baseline = in_loop(measure_baseline(args, port, server, delay), log_path)
        baseline.problems = problems_of(server, log_path)
    return Results(service, single, single_events, counters, baseline, delay)


def in_loop(coro: Coroutine[Any, Any, T], log_path: Path) -> T:
    """Run ``coro`` on uvloop; on failure, show the end of the server's log."""
    try:
        return uvloop.run(coro)
    except BaseException:
        sys.stderr.write(log_path.read_text(errors="replace")[-4000:])
        raise


def ratio(service: float, baseline: float) -> str:
    if not baseline > 0 or math.isnan(service):
        return "-"
    return f"{service / baseline:.2f}x"


def report(args: argparse.Namespace, r: Results) -> None:
    svc, base, one, n = r.service, r.baseline, r.single, args.subscribers
    rows: list[tuple[str, str, str, str, str]] = []

    def row(name: str, service: str, target: str = "", baseline: str = "", times: str = "") -> None:
        rows.append((name, service, target, baseline, times))

    def both(name: str, value: Callable[[Fanout], str], target: str = "") -> None:
        row(name, value(svc), target, value(base))

    def ms(value: float) -> str:
        return f"{value:.1f} ms"

    def delay(f: Fanout) -> str:
        d = ok_delay(f.events)
        return "-" if d is None else ms(d * 1000)

    def every(f: Fanout) -> bool:
        return f.many.complete == n and len(f.events) > 0

    p99 = svc.many.pct(99)
    kib = svc.kib_per_subscriber()
    single_p50 = one.pct(50)
    both("subscribers (client processes)", lambda f: f"{n:,} ({args.clients})")
    both("streams opened / open per /healthz", lambda f: f"{f.many.opened:,} / {f.open_during:,}")
    both("streams refused", lambda f: f.refused() or "none")
    both(
        "events published (rounds x levels)",
        lambda f: f"{len(f.events)} ({args.rounds} x {'/'.join(e.level for e in f.events[:3])})",
    )
    both("hard -> ok in a round, median", delay)
    both(
        "subscribers that got every event",
        lambda f: f"{f.many.complete:,} / {n:,}",
        f"all: {verdict(every(svc))}",
    )
    both(
        "missing / duplicate / out-of-order",
        lambda f: f"{f.many.missing} / {f.many.duplicates} / {f.many.out_of_order}",
    )
    both("streams ended by the server", lambda f: f"{f.many.ended_early}")
    for name, q, target in (
        ("delivery latency p50", 50, ""),
        ("delivery latency p99", 99, f"< {TARGET_P99_MS:g} ms: {verdict(p99 < TARGET_P99_MS)}"),
        ("delivery latency max", 100, ""),
    ):
        s, b = svc.many.pct(q), base.many.pct(q)
        row(name, ms(s), target, ms(b), ratio(s, b))
    both("per event first / last, median (worst)", lambda f: f"{f.many.spread()} ms")
    both("p50 soft / hard / ok", lambda f: f"{f.many.levels(50)} ms")
    both("p99 soft / hard / ok", lambda f: f"{f.many.levels(99)} ms")
    both(
        "server RSS before / after (idle)",
        lambda f: f"{f.rss_before / 2**20:.1f} / {f.rss_after / 2**20:.1f} MiB",
    )
    row(
        "server RSS per idle subscriber",
        f"{kib:.1f} KiB",
        f"< {TARGET_KIB:g} KiB: {verdict(kib < TARGET_KIB)}",
        f"{base.kib_per_subscriber():.1f} KiB",
        ratio(kib, base.kib_per_subscriber()),
    )
    row(
        "crossing->client, 1 subscriber p50",
        f"{single_p50:.2f} ms",
        f"< {TARGET_SINGLE_P50_MS:g} ms: {verdict(single_p50 < TARGET_SINGLE_P50_MS)}",
    )
    row("crossing->client p50 soft / hard / ok", f"{one.levels(50)} ms")
    row("crossing->client p99 / max", f"{one.pct(99):.2f} / {one.pct(100):.2f} ms")
    row("crossing->client events, complete", f"{len(one.latencies_ms)}, {one.complete == 1}")
    c = r.counters
    row(
        "server: conflated / dropped slow, timeout",
        f"{c.get('conflated', 0):.0f} / {c.get('dropped:slow', 0):.0f}, "
        f"{c.get('dropped:send_timeout', 0):.0f}",
    )
    both("server log warnings/errors", lambda f: f"{len(f.problems)}")

    head = ("", "service", "target", "baseline", "service/baseline")
    widths = [max(len(cells[i]) for cells in [*rows, head]) for i in range(5)]
    for i, (name, service, target, baseline, times) in enumerate([head, *rows]):
        sep = ":" if i else " "
        print(
            f"{name:<{widths[0]}} {sep} {service:>{widths[1]}}  {target:<{widths[2]}}"
            f"  {baseline:>{widths[3]}}  {times:>{widths[4]}}".rstrip()
        )
    print(
        f"targets (service): every subscriber gets every event: {verdict(every(svc))}; "
        f"p99 < {TARGET_P99_MS:g} ms: {verdict(p99 < TARGET_P99_MS)}; "
        f"crossing->client p50 < {TARGET_SINGLE_P50_MS:g} ms: "
        f"{verdict(single_p50 < TARGET_SINGLE_P50_MS)}; "
        f"< {TARGET_KIB:g} KiB per idle subscriber: {verdict(kib < TARGET_KIB)}"
    )
    print(
        "baseline: the plainest Litestar broadcast (a Queue per subscriber, ServerSentEvent "
        "over an async generator, JSON encoded per subscriber) on uvicorn httptools/uvloop, "
        f"same clients, rounds of soft+hard then ok {r.baseline_ok_delay * 1000:.1f} ms later; "
        "measured after the service, in this run"
    )
    for label, f in (("service", svc), ("baseline", base)):
        for line in f.problems[:10]:
            print(f"  {label} log: {line}")


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
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        uvloop.run(run_client(args.port, args.subscribers, args.connect_batch))
        return
    if args.baseline_server:
        serve_baseline(args.port)
        return
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
