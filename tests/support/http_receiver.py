"""A real HTTP/1.1 endpoint on 127.0.0.1 that records what it receives.

For testing HTTP clients of the service (the feedback webhook) without mocks:
each request is recorded on arrival (method, path, headers, body, monotonic
time, connection number), then answered as programmed - a status, after an
optional delay, or never (``hang``); keeping the connection alive or closing it.

    async with HttpReceiver() as receiver:
        receiver.script(500, 200)  # first request 500, second 200, then the default
        ...                        # POST to receiver.url("/hook")
        (first, second) = await receiver.wait_for(2)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any

MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Reply:
    """How to answer one request."""

    status: int = 200
    body: bytes = b""
    delay: float = 0.0  # seconds before answering
    hang: bool = False  # never answer (until the receiver closes)
    close: bool = False  # close the connection after answering


@dataclass(frozen=True)
class Request:
    """One request as received."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    arrived: float  # time.monotonic() once the whole request was read
    connection: int  # 1 for the first connection accepted, 2 for the next...

    def json(self) -> Any:
        return json.loads(self.body)


class HttpReceiver:
    """An asyncio HTTP/1.1 server on 127.0.0.1, port chosen by the system."""

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or Reply()  # the answer once the script is used up
        self.requests: list[Request] = []
        self.port = 0
        self.connections = 0  # accepted so far
        self._script: deque[Reply] = deque()
        self._server: asyncio.Server | None = None
        self._arrived = asyncio.Event()
        self._closing = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, *replies: int | Reply) -> None:
        """Answer the next requests with these (a status or a ``Reply``), in order."""
        self._script.extend(Reply(r) if isinstance(r, int) else r for r in replies)

    def hang(self) -> None:
        """From now on, answer nothing (the script is dropped)."""
        self._script.clear()
        self.default = Reply(hang=True)

    def drop_connections(self) -> None:
        """Reset every open connection now (requests in progress get no answer)."""
        for writer in list(self._writers):
            writer.transport.abort()

    def bodies(self) -> list[Any]:
        return [r.json() for r in self.requests]

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Request]:
        """The first ``count`` requests, once they arrived (TimeoutError otherwise)."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.requests[:count]

    async def start(self) -> HttpReceiver:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening, end hung answers and drop every connection."""
        self._closing.set()
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> HttpReceiver:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            await self._serve(self.connections, reader, writer)
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ):
            pass  # the client went away or spoke nonsense: drop the connection
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.transport.abort()

    async def _serve(
        self, connection: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while not self._closing.is_set():
            line = await reader.readline()
            if not line:
                return  # the client closed the connection
            method, path, _version = line.decode("latin-1").split()
            headers: dict[str, str] = {}
            while (header := await reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = header.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await _read_body(reader, headers)
            self.requests.append(Request(method, path, headers, body, time.monotonic(), connection))
            self._arrived.set()
            reply = self._script.popleft() if self._script else self.default
            if reply.hang:
                await self._closing.wait()
                return
            if reply.delay:
                await asyncio.sleep(reply.delay)
            close = reply.close or headers.get("connection", "").lower() == "close"
            writer.write(_response(reply, close))
            await writer.drain()
            if close:
                return


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass  # trailers
        return b"".join(chunks)
    length = int(headers.get("content-length", "0"))
    if not 0 <= length <= MAX_BODY:
        raise ValueError(f"content-length {length}")
    return await reader.readexactly(length)


def _response(reply: Reply, close: bool) -> bytes:
    try:
        phrase = HTTPStatus(reply.status).phrase
    except ValueError:
        phrase = "Unknown"
    head = (
        f"HTTP/1.1 {reply.status} {phrase}\r\n"
        f"content-length: {len(reply.body)}\r\n"
        "content-type: text/plain\r\n"
        f"connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode("latin-1") + reply.body
