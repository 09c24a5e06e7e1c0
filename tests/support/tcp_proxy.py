"""A real TCP proxy in front of PostgreSQL, to cause real network faults.

``cut()`` closes every connection and refuses new ones (the database "goes
away"); ``hang()`` keeps connections open but stops forwarding bytes (a hung
database); ``restore()`` forwards again. The service under test talks to the
proxy exactly as it would to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit, urlunsplit

_SERVER_KEYS = frozenset({"host", "hostaddr", "port"})


def upstream_of(url: str) -> tuple[str, int] | str:
    """(host, port) or a unix socket path for a PostgreSQL URL (pgserver uses sockets)."""
    parts = urlsplit(url)
    host_q = parse_qs(parts.query).get("host", [None])[0]
    port = parts.port or 5432
    if host_q and host_q.startswith("/"):
        return f"{host_q}/.s.PGSQL.{port}"
    return (parts.hostname or "127.0.0.1", port)


class TcpProxy:
    def __init__(self, upstream: tuple[str, int] | str) -> None:
        self.upstream = upstream
        self.mode = "pass"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    def url_for(self, url: str) -> str:
        """``url`` rewritten to go through the proxy (TCP on 127.0.0.1): the query is kept
        but for what would name another server (``host=``, ``hostaddr=``, ``port=``)."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        query = "&".join(
            p for p in parts.query.split("&") if p and p.partition("=")[0] not in _SERVER_KEYS
        )
        netloc = f"{userinfo}127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._pipes):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def cut(self) -> None:
        self.mode = "cut"
        self._flowing.set()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def hang(self) -> None:
        self.mode = "hang"
        self._flowing.clear()

    def restore(self) -> None:
        self.mode = "pass"
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            writer.transport.abort()
            return
        try:
            if isinstance(self.upstream, str):
                up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()
                if self.mode == "cut":
                    break
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()
            self._writers.discard(dst)
