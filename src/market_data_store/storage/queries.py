"""Reads of the bars table, each as the reader role for one tenant.

A read runs in a transaction of its own that first becomes the database's reader role
(``reader_role``) with ``app.tenant_id`` set to its tenant (``SET LOCAL``, in one
statement): row-level security then shows it that tenant's rows and no other, whatever
its SQL says (the policy of migration 0004). Its SQL names the tenant as well, for the
primary key's index."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg
import msgspec

from .errors import DatabaseUnavailableError, translated

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


_SELECT_BARS = """
SELECT provider, symbol, resolution, ts, open::text, high::text, low::text, close::text,
       volume::text, delayed
FROM bars
WHERE tenant_id = $7 AND provider = $1 AND symbol = $2 AND resolution = $3
  AND ($4::timestamptz IS NULL OR ts >= $4)
  AND ($5::timestamptz IS NULL OR ts < $5)
ORDER BY ts
LIMIT $6
"""


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

    async def fetch(self, tenant: str, query: str, *args: object) -> list[asyncpg.Record]:
        """``query``'s rows, run in a read-only transaction as ``tenant``'s reader."""
        with translated():
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
                    return await conn.fetch(query, *args)
            finally:
                self._slots.release()


class BarReader:
    """Reads bars (``TenantReads``: as the reader role, bounded, translated errors)."""

    def __init__(self, pool: DbPool, *, max_concurrent: int, acquire_timeout: float) -> None:
        self.reads = TenantReads(
            pool, max_concurrent=max_concurrent, acquire_timeout=acquire_timeout
        )

    async def fetch(
        self,
        *,
        tenant: str,
        provider: str,
        symbol: str,
        resolution: str,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 1000,
    ) -> list[StoredBar]:
        """``tenant``'s bars of one provider, symbol and resolution in ``[start, end)``,
        oldest first (a range scan of the primary key)."""
        records = await self.reads.fetch(
            tenant, _SELECT_BARS, provider, symbol, resolution, start, end, limit, tenant
        )
        return [StoredBar(*r.values()) for r in records]
