"""Slow, oversized and too many clients, on real sockets against the real service.

Time bounds here are generous upper limits that prove "closed, not held forever";
nothing asserts how fast the service is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from market_data_store.http_protocol import TransportStats
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
