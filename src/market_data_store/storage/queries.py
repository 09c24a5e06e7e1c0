"""Reads, each as the reader role for one tenant: pages, latest rows, exports.

A read runs in a transaction of its own that first becomes the database's reader role
(``reader_role``) with ``app.tenant_id`` set to its tenant (``SET LOCAL``, in one
statement): row-level security then shows it that tenant's rows and no other, whatever
its SQL says (the policy of migration 0004). Its SQL names the tenant as well, for the
primary key's index."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from .errors import DatabaseUnavailableError, StorageError, translated
from .reads import (
    Format,
    ReadQuery,
    ReadShape,
    Statement,
    latest_statement,
    order_values,
    statements,
)

if TYPE_CHECKING:
    from .types import DbConnection, DbPool

_AS_READER = "SELECT set_config('role', $1, true), set_config('app.tenant_id', $2, true)"


async def _reader_role(conn: DbConnection) -> str:
    """This database's reader role (one per database: roles are cluster-wide), as
    migration 0004 recorded it; a schema that predates it cannot be read (permanent
    ``DatabaseUnavailableError``: 503 until it is migrated)."""
    try:
        name = await conn.fetchval("SELECT name FROM mds_reader_role")
    except asyncpg.UndefinedTableError:
        name = None
    if not isinstance(name, str):
        raise DatabaseUnavailableError(
            "the database schema predates tenants (migration 0004 is not applied): "
            "run `mds-store migrate`, or start with database.auto_migrate = true",
            permanent=True,
        )
    return name


class StoredBar(msgspec.Struct, frozen=True):
    """A stored bar: Core ``Bar`` fields plus the provider. Prices are PostgreSQL's
    own text of the numeric (exact, plain notation): no Decimal is built per value
    only to be turned back into text for JSON."""

    provider: str
    symbol: str
    resolution: str
    ts: datetime
    open: str
    high: str
    low: str
    close: str
    volume: str
    delayed: bool


class TenantReads:
    """Reads on the shared pool, each as the reader role for one tenant, never on more
    connections at once than ``max_concurrent`` (every reader of the store shares one:
    readers cannot take the writers' connections). A read that cannot get one within
    ``acquire_timeout``, or whose database fails, raises ``DatabaseUnavailableError``;
    a value the database refuses, ``InvalidQueryError``. A schema without a reader role
    (migration 0004 not applied: ``database.auto_migrate = false``) is
    ``DatabaseUnavailableError`` (permanent) until it is migrated."""

    def __init__(self, pool: DbPool, *, max_concurrent: int, acquire_timeout: float) -> None:
        self._pool = pool
        self._role: str | None = None  # read once, at the first read
        self._slots = asyncio.Semaphore(max(1, max_concurrent))
        self._timeout = acquire_timeout

    @asynccontextmanager
    async def transaction(self, tenant: str, *, share: bool = True) -> AsyncIterator[DbConnection]:
        """A connection in a read-only transaction as ``tenant``'s reader; ``share``: on
        the readers' share (False: the caller bounds its own use, as exports do)."""
        with translated():
            if share:
                async with asyncio.timeout(self._timeout):
                    await self._slots.acquire()
            try:
                async with (
                    self._pool.acquire(timeout=self._timeout) as conn,
                    conn.transaction(readonly=True),
                ):
                    if self._role is None:
                        self._role = await _reader_role(conn)
                    await conn.execute(_AS_READER, self._role, tenant)
                    yield conn
            finally:
                if share:
                    self._slots.release()


class ExportsBusyError(DatabaseUnavailableError):
    """As many exports as allowed are streaming (``max_exports``): nothing was started;
    try again shortly."""


@dataclass(frozen=True)
class Page:
    """A page of rows (the provider, then the shape's columns); ``after`` the last
    row's order values when the limit cut the read short (more may follow)."""

    rows: list[tuple[Any, ...]]
    after: tuple[str, ...] | None


_EXPORT_QUEUE = 8  # chunks of COPY output waiting for the client (each up to ~64 KiB)
_JOIN_BYTES = 1 << 18  # chunks waiting are sent as one, up to this


class ExportStoppedError(StorageError):
    """The export was stopped before its end (the service is stopping): what was sent
    is a prefix of it; resume it from the last row received."""


class Export:
    """A running export: COPY output relayed through a queue that holds at most
    ``_EXPORT_QUEUE`` chunks (the COPY waits for room: a client that stops reading
    stops it). Iterate ``chunks()`` once; its end, or ``close()``, stops the COPY and
    frees the slot and the connection. A failure after the first chunk ends the
    iteration with the ``StorageError`` (the answer is then cut short)."""

    def __init__(self) -> None:
        # unbounded for the end and for failures, which never wait; chunks take room
        self._queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        self._room = asyncio.Semaphore(_EXPORT_QUEUE)
        self._task: asyncio.Task[None] | None = None
        self._first: bytes | BaseException | None = None

    async def put(self, data: bytes | bytearray) -> None:  # asyncpg hands bytearrays
        await self._room.acquire()
        self._queue.put_nowait(bytes(data))

    def end(self, outcome: BaseException | None) -> None:
        self._queue.put_nowait(outcome)

    async def get(self) -> bytes | BaseException | None:
        return self._taken(await self._queue.get())

    def _get_nowait(self) -> bytes | BaseException | None:
        return self._taken(self._queue.get_nowait())

    def _taken(self, item: bytes | BaseException | None) -> bytes | BaseException | None:
        if isinstance(item, bytes):  # a chunk gives its room back
            self._room.release()
        return item

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            item = self._first
            while item is not None:
                if isinstance(item, BaseException):
                    raise item
                parts = [item]
                size = len(item)
                follows: bytes | BaseException | None = None
                ended = False
                while size < _JOIN_BYTES and not self._queue.empty():
                    more = self._get_nowait()
                    if not isinstance(more, bytes):  # the end, or a failure: after these
                        follows, ended = more, True
                        break
                    parts.append(more)
                    size += len(more)
                yield b"".join(parts) if len(parts) > 1 else item
                item = follows if ended else await self.get()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class Reader:
    """Every read of every kind (``reads.ReadShape``), as the reader role for one
    tenant (``TenantReads``). Pages and latest rows on the readers' share of the pool;
    exports on connections of their own, at most ``max_exports`` at once (beyond:
    ``ExportsBusyError``), each bounded by ``export_timeout`` in all."""

    def __init__(
        self,
        pool: DbPool,
        *,
        max_concurrent: int,
        acquire_timeout: float,
        max_exports: int,
        export_timeout: float,
    ) -> None:
        self.reads = TenantReads(
            pool, max_concurrent=max_concurrent, acquire_timeout=acquire_timeout
        )
        self._exports = max(1, max_exports)
        self._exporting = 0
        self._export_timeout = export_timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    async def page(self, shape: ReadShape, query: ReadQuery) -> Page:
        """``query``'s rows (at most ``query.limit``), as one page: ``after`` is set only
        when more rows follow (one more is read to know)."""
        plan = statements(shape, query, "rows")
        most = None if query.limit is None else query.limit + 1
        records: list[asyncpg.Record] = []
        if plan:
            async with self.reads.transaction(query.tenant) as conn:
                for statement in plan:
                    left = None if most is None else most - len(records)
                    if left == 0:
                        break
                    records += await conn.fetch(statement.sql, *statement.args[:-1], left)
        after = None
        if most is not None and len(records) == most:
            records.pop()
            after = order_values(shape, dict(records[-1].items()))
        return Page([tuple(r.values()) for r in records], after)

    async def latest(self, shape: ReadShape, query: ReadQuery) -> list[tuple[Any, ...]]:
        """The newest row of each of ``query.symbols`` that has one, in their order."""
        statement = latest_statement(shape, query)
        async with self.reads.transaction(query.tenant) as conn:
            records = await conn.fetch(statement.sql, *statement.args)
        return [tuple(r.values()) for r in records]

    async def export(self, shape: ReadShape, query: ReadQuery, fmt: Format) -> Export:
        """Start exporting ``query`` in ``fmt`` (``csv``: a header row first): returns
        once the first chunk is there (or the export ended), so that a database that
        cannot be used raises here, before anything is answered."""
        if self._stopped:
            raise ExportsBusyError("the service is stopping")
        if self._exporting >= self._exports:
            raise ExportsBusyError(f"{self._exports} export(s) already streaming")
        plan = statements(shape, query, fmt)
        export = Export()
        self._exporting += 1  # given back by the task, however it ends
        export._task = task = asyncio.create_task(self._copy(export, plan, query, fmt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            first = await export.get()
        except BaseException:  # cancelled while waiting: nobody will read it
            await export.close()
            raise
        if isinstance(first, BaseException):
            await export.close()
            raise first
        export._first = first  # None: no rows, and no header (NDJSON): an empty body
        return export

    def stop(self) -> None:
        """Stop every export streaming (each client sees its answer cut short) and
        refuse new ones: the service is stopping."""
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()

    async def _copy(
        self, export: Export, plan: list[Statement], query: ReadQuery, fmt: Format
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._export_timeout
        try:
            with translated():
                async with asyncio.timeout_at(deadline):
                    async with self.reads.transaction(query.tenant, share=False) as conn:
                        left = query.limit
                        for n, statement in enumerate(plan):
                            if left == 0:
                                break
                            options: dict[str, Any] = (
                                {"format": "csv", "header": n == 0}
                                if fmt == "csv"
                                else {"format": "csv", "quote": "\x01", "delimiter": "\x02"}
                            )
                            status = await conn.copy_from_query(
                                statement.sql,
                                *statement.args[:-1],
                                left,
                                output=export.put,
                                # not the pool's command_timeout: the client's pace counts
                                timeout=max(0.001, deadline - loop.time()),
                                **options,
                            )
                            if left is not None:
                                left -= int(status.rsplit(" ", 1)[-1])
            export.end(None)
        except asyncio.CancelledError:
            export.end(ExportStoppedError("the export was stopped (the service is stopping)"))
            raise
        except Exception as exc:
            export.end(exc)
        finally:
            self._exporting -= 1
