"""Slow, oversized and too many clients, on real sockets against the real service.

Time bounds here are generous upper limits that prove "closed, not held forever";
nothing asserts how fast the service is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from market_data_store.server import TransportStats
from tests.support.service import RunningService, running_service, service_settings

BOUND = 15.0  # seconds: "closed, not held forever"


def port_of(svc: RunningService) -> int:
    return int(svc.base_url.rsplit(":", 1)[1])


def stats_of(svc: RunningService) -> TransportStats:
    stats: TransportStats = svc.server.transport_stats  # type: ignore[attr-defined]
    return stats


@contextlib.asynccontextmanager
async def connection(
    svc: RunningService,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(svc))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes; fails if it holds the connection."""
    return await asyncio.wait_for(reader.read(), BOUND)


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response[9:12])


def problem_of(response: bytes) -> dict[str, object]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), head
    problem: dict[str, object] = json.loads(body)
    return problem


async def one_request(svc: RunningService, request: bytes) -> bytes:
    """Send ``request`` on a new connection; the whole answer (it must close)."""
    async with connection(svc) as (reader, writer):
        writer.write(request)
        return await read_to_end(reader)


@pytest.fixture
async def svc(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    settings = service_settings(
        database_url,
        str(tmp_path),
        MDS_SERVER_READ_TIMEOUT="0.5",
        MDS_SERVER_MIN_BODY_RATE="1000",
    )
    async with running_service(settings) as service:
        yield service


async def test_stalled_headers_get_408_and_close(svc: RunningService) -> None:
    async with connection(svc) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-slow: ")  # never finished
        response = await read_to_end(reader)
    assert status_of(response) == 408
    assert b"connection: close" in response.lower()
    assert "headers" in str(problem_of(response)["detail"])
    assert problem_of(response)["instance"] == "/healthz"
    assert stats_of(svc).header_timeouts == 1


async def test_headers_trickled_in_are_ended_by_the_deadline(svc: RunningService) -> None:
    """Slowloris on headers: a byte every 0.1 s is progress, but the headers' deadline
    counts from the first byte."""
    async with connection(svc) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        reading = asyncio.create_task(read_to_end(reader))
        with contextlib.suppress(OSError):
            while not reading.done():
                writer.write(b"x-a: b\r\n")
                await writer.drain()
                await asyncio.sleep(0.1)
        response = await reading
    assert status_of(response) == 408


async def test_a_connection_that_sends_nothing_is_closed_without_answer(
    svc: RunningService,
) -> None:
    async with connection(svc) as (reader, _):
        assert await read_to_end(reader) == b""


async def test_stalled_body_gets_408_and_close(svc: RunningService) -> None:
    async with connection(svc) as (reader, writer):
        writer.write(
            b"POST /v1/bars HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n[{"
        )
        response = await read_to_end(reader)
    assert status_of(response) == 408
    assert "no progress" in str(problem_of(response)["detail"])
    assert stats_of(svc).body_timeouts == 1


async def test_slowloris_body_is_ended(svc: RunningService) -> None:
    """2 bytes every 0.05 s never stalls for read_timeout, but stays far below
    min_body_rate: the body's deadline ends it."""
    async with connection(svc) as (reader, writer):
        writer.write(
            b"POST /v1/bars HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
            b"content-length: 100000\r\n\r\n"
        )
        reading = asyncio.create_task(read_to_end(reader))
        with contextlib.suppress(OSError):
            while not reading.done():
                writer.write(b"  ")
                await writer.drain()
                await asyncio.sleep(0.05)
        response = await reading
    assert status_of(response) == 408
    assert "slower than 1000 bytes/s" in str(problem_of(response)["detail"])


async def test_requests_in_time_are_served_on_a_kept_alive_connection(
    svc: RunningService,
) -> None:
    """A body sent in pieces (faster than the limits) and several requests on one
    connection spread over more than read_timeout: nothing is refused."""
    async with connection(svc) as (reader, writer):
        for _ in range(3):
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            await asyncio.sleep(0.3)
        body = b"[]" + b" " * 2000
        writer.write(
            b"POST /v1/bars HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        )
        for i in range(0, len(body), 500):
            writer.write(body[i : i + 500])
            await asyncio.sleep(0.1)
        response = await read_to_end(reader)
    assert status_of(response) != 408, response


async def test_oversize_headers_get_431_and_close(svc: RunningService) -> None:
    filler = b"".join(b"x-pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(100))  # ~100 KB
    response = await one_request(svc, b"GET /healthz HTTP/1.1\r\nhost: t\r\n" + filler + b"\r\n")
    assert status_of(response) == 431
    assert "65536" in str(problem_of(response)["detail"])
    assert stats_of(svc).oversize_headers == 1
    # operators see it: the guard's counts are exported at scrape time
    families = text_string_to_metric_families((await svc.client.get("/metrics")).text)
    samples = {(s.name, s.labels.get("reason")): s.value for f in families for s in f.samples}
    assert samples[("mds_http_connections_refused_total", "oversize_headers")] == 1
    assert samples[("mds_http_connections_refused_total", "header_timeout")] == 0
    assert samples[("mds_http_connections", None)] >= 1  # the scrape's own


async def test_one_huge_header_gets_431(svc: RunningService) -> None:
    """50 MB in one header value: refused after the first 64 KiB, the rest discarded."""
    async with connection(svc) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-big: ")
        reading = asyncio.create_task(read_to_end(reader))
        with contextlib.suppress(OSError):
            for _ in range(50):
                if reading.done():
                    break
                writer.write(b"a" * 1_000_000)
                await writer.drain()
        response = await reading
    assert status_of(response) == 431


async def test_headers_below_the_limit_and_a_large_body_pass(svc: RunningService) -> None:
    """The limit counts request line and headers only: 60 KB of headers pass, and so
    does a body far above the limit arriving in the same reads."""
    filler = b"".join(b"x-pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(60))
    response = await one_request(
        svc, b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n" + filler + b"\r\n"
    )
    assert status_of(response) == 200
    body = b"[]" + b" " * 300_000
    response = await one_request(
        svc,
        b"POST /v1/bars HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body),
    )
    assert status_of(response) not in (408, 431, 500), response


async def test_connection_cap_refuses_new_connections_but_answers_probes(
    database_url: str, tmp_path: Path
) -> None:
    settings = service_settings(
        database_url,
        str(tmp_path),
        MDS_SERVER_MAX_CONNECTIONS="3",
        MDS_FEEDBACK_SSE_MAX_STREAMS="2",
    )
    async with running_service(settings) as svc:
        stats = stats_of(svc)
        held = [await asyncio.open_connection("127.0.0.1", port_of(svc)) for _ in range(3)]
        try:
            for reader, writer in held:  # each one served: the server counts it
                writer.write(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
                assert head.startswith(b"HTTP/1.1 200"), head
            assert stats.open_connections == 3

            refused = await one_request(svc, b"GET /nope HTTP/1.1\r\nhost: t\r\n\r\n")
            assert status_of(refused) == 503
            assert b"retry-after: 1" in refused.lower()
            assert problem_of(refused)["status"] == 503
            for probe in (b"/healthz", b"/readyz", b"/health"):
                answer = await one_request(svc, b"GET %s HTTP/1.1\r\nhost: t\r\n\r\n" % probe)
                assert status_of(answer) == 200, answer  # served, then closed
            assert stats.over_capacity == 4

            reader, writer = held.pop()  # a slot frees when its connection closes
            writer.close()
            for _ in range(int(BOUND / 0.01)):
                if stats.open_connections == 2:
                    break
                await asyncio.sleep(0.01)
            assert stats.open_connections == 2
            served = await one_request(
                svc, b"GET /nope HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
            )
            assert status_of(served) == 404
        finally:
            for _, writer in held:
                writer.close()


@contextlib.asynccontextmanager
async def capped_service(
    database_url: str, tmp_path: Path, cap: int, **env: str
) -> AsyncIterator[RunningService]:
    settings = service_settings(
        database_url,
        str(tmp_path),
        MDS_SERVER_MAX_CONNECTIONS=str(cap),
        MDS_FEEDBACK_SSE_MAX_STREAMS=str(cap - 1),
        **env,
    )
    async with running_service(settings) as svc:
        yield svc


async def wait_for_open_connections(stats: TransportStats, count: int) -> None:
    for _ in range(int(BOUND / 0.01)):
        if stats.open_connections == count:
            return
        await asyncio.sleep(0.01)
    assert stats.open_connections == count


async def test_clients_that_never_read_do_not_hold_the_cap(
    database_url: str, tmp_path: Path
) -> None:
    """Pipelined requests for a large document, never reading the answers: the
    service blocks writing, and the write-stall deadline (read_timeout without the
    client taking any of the buffered answer) ends the connection, freeing its slot."""
    async with capped_service(database_url, tmp_path, 3, MDS_SERVER_READ_TIMEOUT="0.5") as svc:
        loop = asyncio.get_running_loop()
        stats = stats_of(svc)
        request = b"GET /schema/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 300
        hogs = []
        try:
            for _ in range(3):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.setblocking(False)
                hogs.append(sock)
                await loop.sock_connect(sock, ("127.0.0.1", port_of(svc)))
                with contextlib.suppress(TimeoutError, OSError):
                    await asyncio.wait_for(loop.sock_sendall(sock, request), 2)
            await wait_for_open_connections(stats, 0)  # all three ended: slots free
            assert stats.write_timeouts == 3
            served = await one_request(
                svc, b"GET /nope HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
            )
            assert status_of(served) == 404
        finally:
            for sock in hogs:
                sock.close()


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (
            b"GET /healthz HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "Duplicate Content-Length",
        ),
        (
            b"POST /v1/bars HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n"
            b"transfer-encoding: chunked\r\n\r\n",
            "Transfer-Encoding can't be present with Content-Length",
        ),
        (
            b"POST /v1/bars HTTP/1.1\r\nhost: t\r\ncontent-length: +5\r\n\r\n[] []",
            "Invalid character in Content-Length",
        ),
        (b"FOO /healthz HTTP/1.1\r\nhost: t\r\n\r\n", "Invalid method encountered"),
        (b"GET /healthz HTTP/1.1\r\nhost: t\r\nbad header\r\n\r\n", None),
    ],
)
async def test_requests_the_parser_refuses_get_a_400_problem(
    svc: RunningService, request_bytes: bytes, reason: str | None
) -> None:
    response = await one_request(svc, request_bytes)
    assert status_of(response) == 400, response
    assert b"connection: close" in response.lower()
    problem = problem_of(response)
    assert set(problem) == {"type", "title", "status", "detail", "instance"}
    assert problem["status"] == 400
    assert problem["title"] == "Bad Request"
    if reason is not None:
        assert reason in str(problem["detail"])


async def test_upgrade_requests_are_logged_once_per_interval(
    svc: RunningService, caplog: pytest.LogCaptureFixture
) -> None:
    """Served as plain HTTP (no WebSocket support); the warning is not one line per
    request."""
    caplog.set_level(logging.WARNING)
    for _ in range(20):
        response = await one_request(
            svc,
            b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: upgrade, close\r\n"
            b"upgrade: websocket\r\n\r\n",
        )
        assert status_of(response) == 200, response
    lines = [r for r in caplog.records if "upgrade" in r.getMessage().lower()]
    assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]
    lines = [r for r in caplog.records if "websocket" in r.getMessage().lower()]
    assert len(lines) <= 2, [r.getMessage() for r in lines]


async def test_headers_pipelined_behind_a_body_in_the_same_read_are_counted(
    svc: RunningService,
) -> None:
    """One write: a request with a body, then one with ~100 KB of headers. The second
    must get 431 even though its head arrives in the read that ends the first body."""
    filler = b"".join(b"x-pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(100))
    first = (
        b"POST /nope HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        b"content-length: 2\r\n\r\n[]"
    )
    second = b"GET /healthz HTTP/1.1\r\nhost: t\r\n" + filler + b"\r\n"
    response = await one_request(svc, first + second)
    assert stats_of(svc).oversize_headers == 1
    head, _, rest = response.partition(b"\r\n\r\n")
    assert status_of(head) == 404, response[:300]
    assert b"HTTP/1.1 200" not in rest
    assert b"HTTP/1.1 431" in rest


async def test_an_over_cap_client_sending_a_body_reads_its_503(
    database_url: str, tmp_path: Path
) -> None:
    """The refusal does not wait for the body, and the connection is not closed under
    the body still arriving (which would reset it and lose the answer)."""
    async with capped_service(database_url, tmp_path, 2) as svc:
        stats = stats_of(svc)
        held = [await asyncio.open_connection("127.0.0.1", port_of(svc)) for _ in range(2)]
        try:
            for reader, writer in held:
                writer.write(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
            assert stats.open_connections == 2
            body = b"[" + b" " * 2_000_000 + b"]"
            for _ in range(3):
                async with connection(svc) as (reader, writer):
                    writer.write(
                        b"POST /v1/bars HTTP/1.1\r\nhost: t\r\ncontent-type: application/json"
                        b"\r\ncontent-length: %d\r\n\r\n" % len(body)
                    )
                    await writer.drain()
                    await asyncio.sleep(0.05)  # the refusal is written meanwhile
                    writer.write(body)
                    with contextlib.suppress(OSError):
                        await writer.drain()
                    response = await read_to_end(reader)
                assert status_of(response) == 503, response
                assert b"retry-after: 1" in response.lower()
                problem = problem_of(response)
                assert (problem["status"], problem["instance"], problem["retry_after"]) == (
                    503,
                    "/v1/bars",
                    1,
                )
        finally:
            for _, writer in held:
                writer.close()
