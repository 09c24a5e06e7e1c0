"""The subscribers of bench/sse.py: SSE streams on raw asyncio sockets, in client processes.

    .venv/bin/python bench/sse_client.py --port PORT --subscribers N [--connect-batch 50]

is one client process (``start_clients`` starts them): it holds ``--subscribers``
streams of ``STREAM`` (raw sockets on uvloop), connected ``--connect-batch`` at a time,
and talks to the bench over stdin/stdout (``run_client``). A stream stores what arrives
with its arrival time and parses it later (``SseParser``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import uvloop

STREAM = "/v1/feedback/stream"
CONNECT_TIMEOUT = 30.0  # one batch of connections, until every response head is in
DELIVERY_TIMEOUT = 15.0  # clients waiting for the last event before they report
CLIENT_TIMEOUT = 120.0  # a client process from start to its report


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--subscribers", type=int, required=True)
    parser.add_argument("--connect-batch", type=int, default=50, help="connections opened at once")
    args = parser.parse_args()
    uvloop.run(run_client(args.port, args.subscribers, args.connect_batch))


if __name__ == "__main__":
    main()
