"""Reads of the bars table."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING

import msgspec

from .errors import translated

if TYPE_CHECKING:
    from .types import DbPool

_SELECT_BARS = """
SELECT provider, symbol, resolution, ts, open::text, high::text, low::text, close::text,
       volume::text, delayed
FROM bars
WHERE provider = $1 AND symbol = $2 AND resolution = $3
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


class BarReader:
    """Reads bars on the shared pool, never on more connections at once than
    ``max_concurrent``, so readers cannot take the writers' connections. A read
    that cannot get one within ``acquire_timeout``, or whose database fails, raises
    ``DatabaseUnavailableError``; a value the database refuses, ``InvalidQueryError``."""

    def __init__(self, pool: DbPool, *, max_concurrent: int, acquire_timeout: float) -> None:
        self._pool = pool
        self._slots = asyncio.Semaphore(max(1, max_concurrent))
        self._timeout = acquire_timeout

    async def fetch(
        self,
        *,
        provider: str,
        symbol: str,
        resolution: str,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 1000,
    ) -> list[StoredBar]:
        """One provider's bars of one symbol and resolution in ``[start, end)``, oldest
        first (a range scan of the primary key)."""
        with translated():
            async with asyncio.timeout(self._timeout):
                await self._slots.acquire()
            try:
                async with self._pool.acquire(timeout=self._timeout) as conn:
                    records = await conn.fetch(
                        _SELECT_BARS, provider, symbol, resolution, start, end, limit
                    )
            finally:
                self._slots.release()
        return [StoredBar(*r.values()) for r in records]
