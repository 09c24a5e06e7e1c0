"""server/protocol.py: the probe reserve. Beyond ``max_connections`` at most
``probe_reserve`` connections are open; a new one takes the place of the oldest not
serving a probe (closed at once, without an answer), or is itself closed at once when
every place serves a probe. Real sockets against uvicorn with the guarded protocol and
a bare app (no database): whether the server closed a connection is read from the
socket (EOF), never timed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope

from market_data_store._util import ThrottledLog
from market_data_store.server import (
    PROBE_PATHS,
    TransportLimits,
    TransportStats,
    guarded_protocol,
    protocol,
)
from tests.support.waits import until

BOUND = 10.0  # seconds: "closed now", far below read_timeout
READ_TIMEOUT = 120.0  # nothing here is closed by a timer


@dataclass
class BareServer:
    port: int
    stats: TransportStats
    probes_held: asyncio.Event = field(default_factory=asyncio.Event)  # set: probes answer
    probes_in: int = 0  # probe requests the app received


@contextlib.asynccontextmanager
async def bare_server(max_connections: int, probe_reserve: int) -> AsyncIterator[BareServer]:
    """uvicorn with the guarded protocol: a probe is answered once ``probes_held`` is
    set, anything else at once."""
    stats = TransportStats()
    state = BareServer(0, stats)

    async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        assert scope["type"] == "http"
        if scope["path"] in PROBE_PATHS:
            state.probes_in += 1
            await state.probes_held.wait()
        body = b'{"ok":true}'
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    limits = TransportLimits(
        read_timeout=READ_TIMEOUT,
        min_body_rate=0,
        max_header_bytes=8192,
        max_connections=max_connections,
        probe_paths=PROBE_PATHS,
        probe_reserve=probe_reserve,
    )
    config = uvicorn.Config(
        app,
        http=guarded_protocol(limits, stats),
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state.port = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until(lambda: server.started, what="the server started")
    try:
        yield state
    finally:
        state.probes_held.set()
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


class Client:
    """One connection; what it reads, and whether the server closed it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, server: BareServer) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", server.port))

    async def closed_by_server(self) -> bytes:
        """Everything until EOF (fails if the server holds the connection)."""
        return await asyncio.wait_for(self.reader.read(), BOUND)

    def still_open(self) -> bool:
        return not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


@contextlib.asynccontextmanager
async def clients() -> AsyncIterator[list[Client]]:
    opened: list[Client] = []
    try:
        yield opened
    finally:
        for client in opened:
            client.close()


async def idle(server: BareServer, opened: list[Client], count: int) -> list[Client]:
    """``count`` connections that send nothing, each seen by the server."""
    new = []
    for _ in range(count):
        seen = server.stats.open_connections + server.stats.over_capacity
        client = await Client.connect(server)
        opened.append(client)
        new.append(client)
        await until(
            lambda seen=seen: server.stats.open_connections + server.stats.over_capacity > seen,
            what="the connection accepted",
        )
    return new


async def test_an_idle_connection_beyond_the_reserve_closes_the_oldest_at_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "_warnings", ThrottledLog(protocol.log))
    caplog.set_level(logging.WARNING, protocol.log.name)
    async with bare_server(max_connections=2, probe_reserve=3) as server, clients() as opened:
        admitted = await idle(server, opened, 2)
        reserved = await idle(server, opened, 3)
        assert (server.stats.open_connections, server.stats.reserve_open) == (2, 3)

        newer = await idle(server, opened, 2)
        for oldest in reserved[:2]:  # gave their places: closed, nothing written
            assert await oldest.closed_by_server() == b""
        await asyncio.sleep(0)  # the loop ran: nothing else was closed
        assert all(c.still_open() for c in [*admitted, reserved[2], *newer])
        assert server.stats.reserve_open == 3
        assert server.stats.reserve_closed == 2
        assert server.stats.over_capacity == 5
        (warning,) = [r.getMessage() for r in caplog.records]  # once per 10 s, with a count
        assert warning.startswith(
            "a connection beyond server.max_connections (2) closed without serving it, to"
            " keep the descriptors of the probes (3 such connections at most)"
        ), warning

        # a probe takes the place of the oldest idle one, and is answered
        server.probes_held.set()
        probe = await Client.connect(server)
        opened.append(probe)
        probe.writer.write(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        answer = await probe.closed_by_server()
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert b"connection: close" in answer.lower()
        assert await reserved[2].closed_by_server() == b""
        assert all(c.still_open() for c in [*admitted, *newer])


async def test_a_request_beyond_the_cap_is_still_refused_with_503() -> None:
    async with bare_server(max_connections=1, probe_reserve=2) as server, clients() as opened:
        await idle(server, opened, 1)
        client = await Client.connect(server)
        opened.append(client)
        client.writer.write(b"GET /v1/bars HTTP/1.1\r\nhost: t\r\n\r\n")
        answer = await client.closed_by_server()
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"retry-after: 1" in answer.lower()
        assert server.stats.reserve_closed == 0


async def test_probes_being_served_keep_their_places() -> None:
    """Every place serves a probe: a new connection is closed at once, the probes
    are answered."""
    async with bare_server(max_connections=1, probe_reserve=2) as server, clients() as opened:
        await idle(server, opened, 1)
        probes = [await Client.connect(server) for _ in range(2)]
        opened.extend(probes)
        for probe in probes:
            probe.writer.write(b"GET /readyz HTTP/1.1\r\nhost: t\r\n\r\n")
        await until(lambda: server.probes_in == 2, what="both probes in the app")

        late = await Client.connect(server)
        opened.append(late)
        assert await late.closed_by_server() == b""
        assert server.stats.reserve_closed == 1

        server.probes_held.set()
        for probe in probes:
            answer = await probe.closed_by_server()
            assert answer.startswith(b"HTTP/1.1 200"), answer
        await until(lambda: server.stats.reserve_open == 0, what="the places freed")
