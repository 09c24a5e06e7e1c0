"""The client's lean HTTP/1.1 pool against a real socket server scripted per test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from unittest.mock import ANY

import httpx
import pytest

from market_data_store.client.http1 import (
    MAX_HEADER_BYTES,
    Headers,
    Http1Pool,
    HttpError,
    ProtocolError,
    lean_pool,
)


@dataclass
class Request:
    connection: int
    line: bytes
    headers: dict[str, str]
    body: bytes


Reply = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]
"""Writes the answer to a request; False: close the connection after it."""


def answer(
    status: int = 202,
    body: bytes = b'{"ok":true}',
    headers: tuple[tuple[str, str], ...] = (),
    *,
    close: bool = False,
) -> Reply:
    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        return not close

    return reply


def raw(data: bytes, *, keep: bool = False) -> Reply:
    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(data)
        await writer.drain()
        return keep

    return reply


@dataclass
class Server:
    """Answers each request with the next of ``replies`` (the last one repeated)."""

    replies: list[Reply]
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    read_body: bool = True
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                line, *lines = head[:-4].split(b"\r\n")
                headers = {}
                for text in lines:
                    name, _, value = text.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                size = int(headers.get("content-length", "0"))
                body = await reader.readexactly(size) if self.read_body else b""
                request = Request(number, line, headers, body)
                self.requests.append(request)
                reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
                if not await reply(request, writer):
                    return
        except asyncio.CancelledError:
            return  # the test is over (a reply that never comes)
        finally:
            self.open_now -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.closed.set()


@contextlib.asynccontextmanager
async def serving(*replies: Reply, read_body: bool = True) -> AsyncIterator[Server]:
    server = Server(list(replies) or [answer()], read_body=read_body)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


@contextlib.asynccontextmanager
async def pool_for(
    server: Server, *, max_connections: int = 2, max_body: int = 1024
) -> AsyncIterator[Http1Pool]:
    pool = Http1Pool(server.url, max_connections=max_connections, max_body=max_body)
    try:
        yield pool
    finally:
        await pool.aclose()


HEADERS = {"content-type": "application/msgpack", "accept": "application/json"}


async def post(
    pool: Http1Pool, body: bytes = b"abc", **kwargs: float
) -> tuple[int, Headers, bytes]:
    return await pool.post("/v1/bars", body, {"wait": "commit"}, HEADERS, **kwargs)


async def test_keep_alive_connections_are_reused() -> None:
    reply = answer(
        201, b'{"accepted":1}', (("Retry-After", "3"), ("X-Twice", "a"), ("x-twice", "b"))
    )
    async with serving(reply) as server, pool_for(server) as pool:
        for i in range(3):
            status, headers, content = await post(pool, b"body %d" % i)
            assert (status, content) == (201, b'{"accepted":1}')
            assert headers.get("retry-after") == headers.get("RETRY-AFTER") == "3"
            assert headers.get("x-twice") == "a, b"
            assert headers.get("missing") is None
        assert pool.connects == server.connections == 1
    first = server.requests[0]
    assert first.line == b"POST /v1/bars?wait=commit HTTP/1.1"
    assert first.headers["host"] == f"127.0.0.1:{server.port}"
    assert first.headers["content-length"] == "6"
    assert first.headers["content-type"] == "application/msgpack"
    assert [r.body for r in server.requests] == [b"body 0", b"body 1", b"body 2"]


async def test_a_large_body_and_the_path_under_the_base_url() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: written in two pieces, no copy
    async with serving() as server:
        pool = Http1Pool(f"{server.url}/store/", max_connections=1, max_body=100)
        try:
            status, _, _ = await pool.post("/v1/bars", body, None, {})
        finally:
            await pool.aclose()
    assert status == 202
    assert server.requests[0].line == b"POST /store/v1/bars HTTP/1.1"
    assert server.requests[0].body == body
    assert server.requests[0].headers["user-agent"] == "market-data-store-client"


async def test_connection_close_is_honoured() -> None:
    async with (
        serving(answer(close=True, headers=(("Connection", "close"),)), answer()) as server,
        pool_for(server) as pool,
    ):
        assert (await post(pool))[0] == 202
        assert (await post(pool))[0] == 202
        assert pool.connects == server.connections == 2


async def test_a_chunked_answer_with_a_content_length_too_is_read_chunked_not_reused() -> None:
    both = raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        keep=True,
    )
    async with serving(both, answer()) as server, pool_for(server) as pool:
        assert (await post(pool))[2] == b"hello"
        assert (await post(pool))[0] == 202
        assert pool.connects == 2


async def test_an_http_1_0_answer_without_keep_alive_is_not_reused() -> None:
    one_o = raw(b"HTTP/1.0 202 Accepted\r\nContent-Length: 2\r\n\r\nok", keep=True)
    async with serving(one_o, answer()) as server, pool_for(server) as pool:
        assert (await post(pool))[2] == b"ok"
        assert (await post(pool))[0] == 202
        assert pool.connects == 2


async def test_a_chunked_answer_with_extensions_and_trailers_then_reuse() -> None:
    chunked = raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n",
        keep=True,
    )
    async with serving(chunked, answer()) as server, pool_for(server) as pool:
        status, _, content = await post(pool)
        assert (status, content) == (200, b"hello world")
        assert (await post(pool))[0] == 202
        assert pool.connects == 1


@pytest.mark.parametrize(
    "reply",
    [
        answer(200, b"x" * 5000),
        raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" + b"x" * 5000,
            keep=True,
        ),
        raw(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 5000),  # to the end of the connection
    ],
    ids=["content-length", "chunked", "until-close"],
)
async def test_an_answer_over_the_limit_is_cut_and_its_connection_closed(reply: Reply) -> None:
    async with serving(reply, answer()) as server, pool_for(server, max_body=1024) as pool:
        assert await post(pool) == (200, ANY, b"x" * 1024)
        await asyncio.wait_for(server.closed.wait(), 5)  # the cut connection was closed
        assert (await post(pool))[0] == 202
        assert pool.connects == 2


async def test_the_server_closing_mid_answer_is_an_error_and_the_connection_is_dropped() -> None:
    cut = raw(b"HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\nonly ten..")
    async with (
        serving(answer(), cut, answer()) as server,
        pool_for(server, max_connections=1) as pool,
    ):
        assert (await post(pool))[0] == 202
        with pytest.raises(HttpError, match="middle of the answer") as info:
            await post(pool)
        assert isinstance(info.value, OSError)  # the sender's transport error
        assert (await post(pool))[0] == 202
        assert pool.connects == 2  # not the broken one


async def test_a_chunked_answer_cut_mid_chunk_is_an_error() -> None:
    cut = raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc")
    async with serving(cut) as server, pool_for(server) as pool:
        with pytest.raises(HttpError):
            await post(pool)


async def test_a_timeout_abandons_the_connection() -> None:
    async def never(request: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(30)
        return False

    async with serving(never, never, answer()) as server, pool_for(server) as pool:
        with pytest.raises(TimeoutError):
            await post(pool, timeout=0.2)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):  # the sender's way
                await post(pool)
        assert (await post(pool))[0] == 202
        assert pool.connects == 3  # neither timed-out connection was reused


@pytest.mark.parametrize(
    "garbage",
    [
        b"SMTP ready\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 101 Switching\r\n\r\n",
    ],
)
async def test_garbage_is_a_protocol_error_and_the_connection_is_dropped(garbage: bytes) -> None:
    async with serving(raw(garbage, keep=True), answer()) as server, pool_for(server) as pool:
        with pytest.raises(ProtocolError) as info:
            await post(pool)
        assert isinstance(info.value, OSError)
        assert (await post(pool))[0] == 202
        assert pool.connects == 2


async def test_a_head_over_the_limit_is_refused() -> None:
    huge = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 10) + b"\r\n\r\n"
    async with serving(raw(huge, keep=True)) as server, pool_for(server) as pool:
        with pytest.raises(ProtocolError, match="over"):
            await post(pool)


async def test_interim_answers_are_skipped() -> None:
    early = raw(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        keep=True,
    )
    async with serving(early) as server, pool_for(server) as pool:
        status, headers, content = await post(pool)
        assert (status, dict(headers), content) == (201, {"content-length": "2"}, b"ok")
        assert pool.connects == 1


async def test_an_early_answer_to_a_body_not_read_is_returned() -> None:
    """A 413 sent before the body was read, then the connection reset (closed with the
    body unread): the answer counts (as with httpx), the connection is not reused."""

    async def too_large(request: Request, writer: asyncio.StreamWriter) -> bool:
        await answer(413, b'{"detail":"too large"}', (("Connection", "close"),))(request, writer)
        await asyncio.sleep(0.3)  # the client reads the answer while it is still sending
        return False

    async with serving(too_large, answer(), read_body=False) as server, pool_for(server) as pool:
        status, _, content = await post(pool, b"x" * (16 * 1024 * 1024))
        assert (status, content) == (413, b'{"detail":"too large"}')
        assert pool.connects == 1


async def test_a_kept_alive_connection_the_server_closed_is_replaced_without_an_error() -> None:
    async with serving(answer(close=True), answer()) as server, pool_for(server) as pool:
        assert (await post(pool))[0] == 202  # no "Connection: close", but closed after it
        await asyncio.wait_for(server.closed.wait(), 5)
        assert (await post(pool))[0] == 202
        assert pool.connects == 2


async def test_a_kept_alive_connection_closed_as_it_is_reused_is_replaced_once() -> None:
    hang_up = raw(b"")  # closes the connection without answering
    async with serving(answer(), hang_up, answer()) as server, pool_for(server) as pool:
        assert (await post(pool))[0] == 202
        assert (await post(pool))[0] == 202  # sent again on a new connection
        assert pool.connects == 2
        assert len(server.requests) == 3


async def test_a_new_connection_closed_without_an_answer_is_an_error() -> None:
    async with serving(raw(b""), answer()) as server, pool_for(server) as pool:
        with pytest.raises(HttpError, match="closed the connection"):
            await post(pool)
        assert len(server.requests) == 1  # not sent again


async def test_answers_without_a_body() -> None:
    no_content = raw(b"HTTP/1.1 204 No Content\r\n\r\n", keep=True)
    gzip_to_the_end = raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz")
    async with serving(no_content, gzip_to_the_end, answer()) as server, pool_for(server) as pool:
        assert (await post(pool))[::2] == (204, b"")
        assert (await post(pool))[::2] == (200, b"zzz")  # not chunked: to the end
        assert (await post(pool))[0] == 202
        assert pool.connects == 2


async def test_connections_are_bounded() -> None:
    async def slow(request: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.05)
        return await answer()(request, writer)

    async with serving(slow) as server, pool_for(server, max_connections=2) as pool:
        results = await asyncio.gather(*(post(pool) for _ in range(6)))
    assert [r[0] for r in results] == [202] * 6
    assert server.most_open == 2
    assert pool.connects == 2


def test_it_runs_on_uvloop_too() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def exchange() -> list[int]:
        chunked = raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", keep=True
        )
        async with serving(answer(), chunked, answer()) as server, pool_for(server) as pool:
            statuses = [(await post(pool, b"x" * size))[0] for size in (10, 200_000, 10)]
            return [*statuses, pool.connects]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(exchange()) == [202, 200, 202, 1]


async def test_refused_connections_and_a_closed_pool_are_transport_errors() -> None:
    async with serving() as server:
        url = server.url
    pool = Http1Pool(url, max_connections=1, max_body=10)
    with pytest.raises(ConnectionRefusedError):
        await pool.post("/", b"", None, {})
    await pool.aclose()
    with pytest.raises(HttpError, match="closed"):
        await pool.post("/", b"", None, {})


async def test_bad_request_headers_are_refused() -> None:
    async with serving() as server, pool_for(server) as pool:
        with pytest.raises(ValueError, match="invalid header"):
            await pool.post("/", b"", None, {"x-evil": "a\r\nHost: elsewhere"})


# -- when the pool is used -----------------------------------------------------------------


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("url", "env", "lean"),
    [
        ("http://store:8081", {}, True),
        ("http://store:8081/prefix", {}, True),
        ("https://store:8081", {}, False),
        ("http://user:pw@store:8081", {}, False),
        ("http://store:8081?x=1", {}, False),
        ("http://store:8081", {"HTTP_PROXY": "http://proxy:3128"}, False),
        ("http://store:8081", {"ALL_PROXY": "http://proxy:3128"}, False),
        ("http://store:8081", {"HTTPS_PROXY": "http://proxy:3128"}, True),  # not for http://
        ("http://store:8081", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": "other,store"}, True),
        ("http://a.store.lan", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": ".store.lan"}, True),
        ("http://a.store.lan", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": "store.lan"}, True),
        ("http://store.lan", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": ".store.lan"}, False),
        ("http://mystore", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": "store"}, False),
        ("http://store:8081", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": "*"}, True),
        ("http://[::1]:8081", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": "::1"}, True),
        ("http://10.0.0.1", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": "10.0.0.0/8"}, False),
    ],
)
def test_the_pool_is_used_only_where_httpx_would_make_a_plain_request(
    no_proxy_env: pytest.MonkeyPatch, url: str, env: dict[str, str], lean: bool
) -> None:
    for name, value in env.items():
        no_proxy_env.setenv(name, value)
    assert (lean_pool(url, None, max_connections=1, max_body=1) is not None) is lean
    if lean and env:  # httpx agrees: no proxy for it either
        client = httpx.AsyncClient()
        assert client._transport_for_url(httpx.URL(url)) is client._transport
    transport = httpx.MockTransport(lambda request: httpx.Response(202))
    assert lean_pool(url, transport, max_connections=1, max_body=1) is None
