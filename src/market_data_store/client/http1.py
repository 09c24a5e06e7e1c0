"""A lean HTTP/1.1 connection pool for the one request the senders make.

``POST /v1/bars`` with a MessagePack body, an answer of a few hundred bytes: httpx
spends far more CPU on each such request (its request and response models, httpcore's
state machines, h11) than the exchange itself takes. ``Http1Pool`` writes the request
head and body straight to an asyncio transport and reads the status line, the headers
and a body delimited by ``Content-Length``, chunked, or the end of the connection. An
answer that came before the connection was reset (a 413 sent before the body was
read) is still read, as httpx does.

Bounded: the status line and headers at most ``max_header_bytes``; at most
``max_body`` bytes of a body are read (the connection is then closed, the body cut);
at most ``max_connections`` connections, each carrying one request at a time; the
whole attempt under the caller's ``asyncio.timeout``. A connection is reused only
after a complete exchange both sides kept alive; one that failed, timed out, was
cut or half read is closed, never reused. A kept-alive connection that the server
closed while it was idle (found when it fails before a byte of the answer came)
is replaced by a new one once (the store's writes are idempotent).

Used only where httpx would make the same plain request: ``http://`` with no
custom transport, no proxy from the environment, no credentials in the URL
(``lean_pool``); otherwise the sender keeps httpx.

Every failure is an ``OSError`` (``ConnectionError``): the sender's transport error.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Iterator, Mapping
from typing import cast
from urllib.parse import urlencode, urlsplit

MAX_HEADER_BYTES = 64 * 1024
"""Most bytes of an answer's status line and headers (and of a chunk-size line)."""
KEEPALIVE_EXPIRY = 4.0
"""An idle connection older than this is closed, not reused (servers close idle
connections after 5 s by default: uvicorn's ``timeout_keep_alive``)."""
USER_AGENT = "market-data-store-client"
_ONE_WRITE = 64 * 1024  # bodies up to this size go out with the head in one write
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but tab
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class HttpError(ConnectionError):
    """A request got no complete answer: the connection failed or was closed, or the
    answer was not HTTP/1.x (for the sender, a transport error like httpx's)."""


class ProtocolError(HttpError):
    """What came back is not a well-formed HTTP/1.x answer."""


class _Stale(Exception):
    """The connection failed before a byte of the answer arrived (if it was a
    kept-alive one, the server may have closed it while it was idle)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Headers(Mapping[str, str]):
    """An answer's headers: names case-insensitive, repeated ones joined with ``, ``."""

    __slots__ = ("_items",)

    def __init__(self, items: dict[str, str] | None = None) -> None:
        self._items = items if items is not None else {}  # lower-case names

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class _Closed(Exception):
    """The connection ended (``eof``) before what was needed arrived."""

    def __init__(self, got_some: bool) -> None:
        super().__init__("the connection ended")
        self.got_some = got_some


class _Connection(asyncio.Protocol):
    """One socket: the bytes received so far, readable even after the connection
    ended or was reset (an answer sent before a reset is still read)."""

    def __init__(self, pause_above: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False  # nothing more will come (closed, reset or finished)
        self.error: Exception | None = None  # how the connection was lost, if not cleanly
        self.idle_since = 0.0
        self._pause_above = pause_above
        self._reading_paused = False
        self._writing_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()
        if len(self.buffer) > self._pause_above and not self._reading_paused:
            assert self.transport is not None
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- for the pool
    def reusable(self, now: float) -> bool:
        """Idle for less than ``KEEPALIVE_EXPIRY``, still open, nothing unread."""
        return (
            now - self.idle_since < KEEPALIVE_EXPIRY
            and not self.eof
            and not self.buffer  # nothing the server sent unasked
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # nothing left to send: no lingering close

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        """Until the transport's buffer is under its high-water mark; how the connection
        was lost, if it was."""
        if self._writing_paused and not self.eof:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        if self.error is not None:
            error = self.error
            raise error if isinstance(error, OSError) else HttpError(str(error))

    def unsent(self) -> int:
        assert self.transport is not None
        return self.transport.get_write_buffer_size()

    async def read_until(self, separator: bytes, limit: int) -> bytes:
        """The bytes up to and with ``separator``; ``ProtocolError`` when there are more
        than ``limit`` before it, ``_Closed`` when the connection ends first."""
        start = 0
        while True:
            found = self.buffer.find(separator, start)
            if found >= 0:
                if found > limit:
                    break
                end = found + len(separator)
                chunk = bytes(self.buffer[:end])
                del self.buffer[:end]
                return chunk
            if len(self.buffer) > limit:
                break
            start = max(0, len(self.buffer) - len(separator) + 1)
            await self._more()
        raise ProtocolError(f"a line or head of the answer is over {limit} bytes")

    async def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._more()
        chunk = bytes(self.buffer[:size])
        del self.buffer[:size]
        return chunk

    async def read_some(self, most: int) -> bytes:
        """Up to ``most`` bytes; b"" at the end of the connection."""
        while not self.buffer:
            if self.eof:
                return b""
            await self._more()
        chunk = bytes(self.buffer[:most])
        del self.buffer[:most]
        return chunk

    async def _more(self) -> None:
        if self.eof:
            raise _Closed(bool(self.buffer))
        if self._reading_paused:
            assert self.transport is not None
            self._reading_paused = False
            self.transport.resume_reading()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Http1Pool:
    """At most ``max_connections`` kept-alive HTTP/1.1 connections to the host of
    ``base_url`` (``http://`` only), for ``post``."""

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int,
        max_body: int,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"an http:// URL with a host is needed, not {base_url!r}")
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.host = url.hostname
        self.port = url.port or 80
        self.max_body = max_body
        self.max_header_bytes = max_header_bytes
        self._authority = url.netloc.encode("ascii")
        self._prefix = url.path.rstrip("/")
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []  # most recently used last
        self._busy: set[_Connection] = set()
        self._heads: dict[object, bytes] = {}
        self._closed = False
        self.connects = 0
        """Connections opened so far (tests and the benchmark read it)."""

    async def post(
        self,
        path: str,
        body: bytes,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
        timeout: float | None = None,
    ) -> tuple[int, Headers, bytes]:
        """``POST path?params`` with ``body`` and ``headers`` (a Content-Length is
        added; a Host and a User-Agent unless given): the status, headers and body
        (at most ``max_body`` bytes) of the answer. ``HttpError`` (an ``OSError``)
        when there is no complete answer; ``TimeoutError`` after ``timeout`` s (the
        whole exchange) if given."""
        head = self._head(path, params, headers) + b"%d\r\n\r\n" % len(body)
        if timeout is None:
            return await self._post(head, body)
        async with asyncio.timeout(timeout):
            return await self._post(head, body)

    async def aclose(self) -> None:
        """Close every connection (one in use is closed where it is; requests after
        this fail with ``HttpError``)."""
        self._closed = True
        connections = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        for conn in connections:
            conn.close()
        if connections:
            await asyncio.sleep(0)  # the transports' connection_lost callbacks run

    # -- one request -------------------------------------------------------------------

    async def _post(self, head: bytes, body: bytes) -> tuple[int, Headers, bytes]:
        async with self._slots:
            for _ in range(2):  # a stale kept-alive connection is replaced once
                conn, reused = await self._connection()
                self._busy.add(conn)
                keep = False
                try:
                    status, headers, content, keep = await self._exchange(conn, head, body)
                except _Stale as stale:
                    if reused:
                        continue  # the server closed it while idle: a new one
                    raise _transport_error(stale.cause) from stale.cause
                finally:
                    self._busy.discard(conn)
                    if keep and not self._closed:
                        conn.idle_since = time.monotonic()
                        self._idle.append(conn)
                    else:
                        conn.close()
                return status, headers, content
            raise AssertionError("unreachable: a new connection is never stale")

    async def _connection(self) -> tuple[_Connection, bool]:
        if self._closed:
            raise HttpError("the connection pool is closed")
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable(now):
                return conn, True
            conn.close()
        pause_above = self.max_header_bytes + self.max_body + 65536
        _, conn = await asyncio.get_running_loop().create_connection(
            lambda: _Connection(pause_above), self.host, self.port
        )
        self.connects += 1
        return conn, False

    async def _exchange(
        self, conn: _Connection, head: bytes, body: bytes
    ) -> tuple[int, Headers, bytes, bool]:
        """The answer and whether the connection may be kept; ``_Stale`` when it
        failed before a byte of the answer came."""
        sent: OSError | None = None
        try:
            if len(body) <= _ONE_WRITE:
                conn.write(head + body)
            else:  # no copy of a large body
                conn.write(head)
                conn.write(body)
            await conn.drain()
        except OSError as exc:
            sent = exc  # the server may have answered before it stopped reading (413)
        answered = False
        try:
            block = await conn.read_until(b"\r\n\r\n", self.max_header_bytes)
            answered = True
            status, version, headers = _parse_head(block)
            while 100 <= status < 200:  # interim answers (100 Continue unasked): skipped
                if status == 101:
                    raise ProtocolError("the server switched protocols (101)")
                block = await conn.read_until(b"\r\n\r\n", self.max_header_bytes)
                status, version, headers = _parse_head(block)
            content, complete = await self._read_body(conn, status, headers)
        except _Closed as closed:
            if not (answered or closed.got_some):
                cause = sent or conn.error or HttpError("the server closed the connection")
                raise _Stale(cause) from None
            raise HttpError("the connection closed in the middle of the answer") from None
        connection = headers.get("connection", "").lower()
        keep = (
            complete
            and sent is None
            and not conn.eof
            and conn.unsent() == 0  # the body was all taken
            and (
                "close" not in _tokens(connection)
                if version == b"1"
                else "keep-alive" in _tokens(connection)
            )
        )
        return status, Headers(headers), content, keep

    async def _read_body(
        self, conn: _Connection, status: int, headers: dict[str, str]
    ) -> tuple[bytes, bool]:
        """The body (at most ``max_body`` bytes) and whether it was read to its end
        and the connection left at the next answer."""
        if status in (204, 304):
            return b"", True
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if _tokens(coding.lower())[-1:] != ["chunked"]:
                return await self._to_the_end(conn)
            content, complete = await self._chunked(conn)
            # with a Content-Length too, the framing is in doubt: not reused (RFC 9112 6.3)
            return content, complete and "content-length" not in headers
        length = headers.get("content-length")
        if length is None:
            return await self._to_the_end(conn)
        size = _content_length(length)
        if size > self.max_body:
            return await conn.read_exactly(self.max_body), False
        return await conn.read_exactly(size), True

    async def _to_the_end(self, conn: _Connection) -> tuple[bytes, bool]:
        """A body delimited by the end of the connection (never reused)."""
        content = bytearray()
        while len(content) < self.max_body:
            piece = await conn.read_some(self.max_body - len(content))
            if not piece:
                break
            content += piece
        return bytes(content), False

    async def _chunked(self, conn: _Connection) -> tuple[bytes, bool]:
        content = bytearray()
        limit = self.max_header_bytes
        while True:
            line = await conn.read_until(b"\r\n", limit)
            size_text = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                raise ProtocolError(f"bad chunk size line {line[:40]!r}")
            size = int(size_text, 16)
            if size == 0:
                break
            room = self.max_body - len(content)
            if size > room:  # cut: the rest is never read, the connection closed
                content += await conn.read_exactly(room)
                return bytes(content), False
            content += await conn.read_exactly(size)
            if await conn.read_exactly(2) != b"\r\n":
                raise ProtocolError("a chunk does not end with CRLF")
        trailers = 0
        while True:  # trailer fields, ignored (bounded like the head)
            line = await conn.read_until(b"\r\n", limit)
            if line == b"\r\n":
                return bytes(content), True
            trailers += len(line)
            if trailers > limit:
                raise ProtocolError(f"the answer's trailers are over {limit} bytes")

    # -- the request head ----------------------------------------------------------------

    def _head(
        self, path: str, params: Mapping[str, str] | None, headers: Mapping[str, str]
    ) -> bytes:
        """The request head up to the Content-Length value (cached: the senders send
        the same path, query and headers every time)."""
        key = (path, tuple(params.items()) if params else None, tuple(headers.items()))
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) >= 64:
                self._heads.clear()
            head = self._heads[key] = _request_head(
                self._authority, self._prefix + path, params, headers
            )
        return head


def _request_head(
    authority: bytes, target: str, params: Mapping[str, str] | None, headers: Mapping[str, str]
) -> bytes:
    if params:
        target = f"{target}?{urlencode(params)}"
    lines = [b"POST " + target.encode("ascii") + b" HTTP/1.1"]
    given = {name.lower() for name in headers}
    if "host" not in given:
        lines.append(b"Host: " + authority)
    if "user-agent" not in given:
        lines.append(b"User-Agent: " + USER_AGENT.encode())
    for name, value in headers.items():
        raw = name.encode("ascii")
        if not _TOKEN.fullmatch(raw) or _BAD_VALUE.search(value):
            raise ValueError(f"invalid header {name!r}: {value!r}")
        if name.lower() in ("content-length", "transfer-encoding", "connection"):
            continue  # the pool's to say
        lines.append(raw + b": " + value.strip().encode("latin-1"))
    lines.append(b"Content-Length: ")
    return b"\r\n".join(lines)


def _parse_head(block: bytes) -> tuple[int, bytes, dict[str, str]]:
    """The status, the minor HTTP version and the headers (lower-case names) of an
    answer's head (``block`` ends with the empty line)."""
    lines = block[:-4].split(b"\r\n")
    first = lines[0]
    parts = first.split(b" ", 2)
    if (
        len(parts) < 2
        or len(parts[0]) != 8
        or not parts[0].startswith(b"HTTP/1.")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise ProtocolError(f"not an HTTP/1.x answer: {first[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise ProtocolError(f"bad header line in the answer: {line[:80]!r}")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return int(parts[1]), parts[0][7:], headers


def _content_length(value: str) -> int:
    sizes = {v.strip() for v in value.split(",")}  # repeated, equal values are allowed
    if len(sizes) != 1:
        raise ProtocolError(f"conflicting Content-Length values: {value!r}")
    size = sizes.pop()
    if not size.isdigit() or not size.isascii():
        raise ProtocolError(f"bad Content-Length: {value[:40]!r}")
    if len(size) > 18:  # beyond any body (and int() of 5,000 digits raises ValueError)
        raise ProtocolError(f"Content-Length of {len(size)} digits")
    return int(size)


def _tokens(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


def _transport_error(exc: BaseException) -> OSError:
    return exc if isinstance(exc, OSError) else HttpError(str(exc))


# -- when to use it ----------------------------------------------------------------------


def lean_pool(
    base_url: str, transport: object | None, *, max_connections: int, max_body: int
) -> Http1Pool | None:
    """The pool for ``base_url``, or None where httpx must make the request: a custom
    ``transport``, not ``http://``, credentials or a query in the URL, a non-ASCII
    host, or a proxy from the environment (``HTTP_PROXY``/``ALL_PROXY``, unless
    ``NO_PROXY`` names the host: as httpx reads them)."""
    if transport is not None:
        return None
    url = urlsplit(base_url)
    host = url.hostname
    if (
        url.scheme != "http"
        or not host
        or not url.netloc.isascii()
        or url.username is not None
        or url.query
        or url.fragment
        or _proxied(host)
    ):
        return None
    try:
        _ = url.port  # a bad port raises
    except ValueError:
        return None
    return Http1Pool(base_url, max_connections=max_connections, max_body=max_body)


def _proxied(host: str) -> bool:
    """Whether httpx (``trust_env``) would send a request to ``host`` through a proxy.
    In doubt, yes: only a ``NO_PROXY`` entry that certainly names the host counts."""
    proxies = urllib.request.getproxies()
    if not (proxies.get("http") or proxies.get("all")):
        return False
    host = host.lower()
    for entry in proxies.get("no", "").split(","):
        name = entry.strip().lower()
        if name == "*":
            return False
        if not name or "://" in name or "/" in name:
            continue
        if name.startswith("."):
            if host.endswith(name):
                return False
        elif host == name.strip("[]") or host.endswith("." + name):
            return False
    return True
