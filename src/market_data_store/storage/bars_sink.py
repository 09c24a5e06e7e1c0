"""Writes batches of bars: CSV COPY into a staging table, then one idempotent upsert.

COPY cannot do ``ON CONFLICT``, so each batch is copied (CSV text, prices as the
decimal strings received: no float or Decimal encoding on the hot path) into a
per-connection temporary table and merged with ``INSERT ... SELECT ... ON
CONFLICT DO UPDATE``. The merge keeps the most recently *accepted* version of a
bar (``received_at``) and skips rows whose values did not change. Copy and
merge share one transaction: a batch lands whole or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from .pool import DbPool

from .rows import BarRow

log = logging.getLogger(__name__)

STAGING = "bars_staging"
COLUMNS = (
    "provider",
    "symbol",
    "resolution",
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "delayed",
    "received_at",
)

_CREATE_STAGING = f"""
CREATE TEMP TABLE IF NOT EXISTS {STAGING} (
    provider text, symbol text, resolution text, ts timestamptz,
    open numeric, high numeric, low numeric, close numeric, volume numeric,
    delayed boolean, received_at timestamptz
) ON COMMIT DELETE ROWS
"""

_MERGE = f"""
INSERT INTO bars AS b (provider, symbol, resolution, ts, open, high, low, close, volume,
                       delayed, ingested_at, updated_at)
SELECT provider, symbol, resolution, ts, open, high, low, close, volume,
       delayed, received_at, received_at
FROM {STAGING}
ON CONFLICT (provider, symbol, resolution, ts) DO UPDATE
SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, delayed = EXCLUDED.delayed, updated_at = EXCLUDED.updated_at
WHERE EXCLUDED.updated_at >= b.updated_at
  AND (b.open, b.high, b.low, b.close, b.volume, b.delayed)
      IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close,
                        EXCLUDED.volume, EXCLUDED.delayed)
"""


async def prepare_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Pool ``init`` hook: create this connection's staging table once."""
    await conn.execute(_CREATE_STAGING)


@dataclass
class SinkStats:
    rows_received: int = 0
    rows_written: int = 0  # inserted or changed; unchanged duplicates are not rewritten


class BarsSink:
    """The coordinator's sink for ``BarRow`` batches (satisfies ``Sink[BarRow]``)."""

    def __init__(self, pool: DbPool) -> None:
        self._pool = pool
        self.stats = SinkStats()

    async def write(self, batch: Sequence[BarRow]) -> None:
        if not batch:
            return
        rows = latest_versions(batch)
        payload = encode_csv(rows)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.copy_to_table(
                STAGING, source=_chunks(payload), columns=COLUMNS, format="csv"
            )
            status = await conn.execute(_MERGE)
        self.stats.rows_received += len(batch)
        self.stats.rows_written += int(status.rsplit(" ", 1)[-1])


async def _chunks(payload: bytes, size: int = 1 << 20) -> AsyncIterator[bytes]:
    """COPY data as an async iterator: asyncpg reads file objects in a thread pool."""
    view = memoryview(payload)
    for start in range(0, len(view), size):
        yield bytes(view[start : start + size])


def latest_versions(batch: Sequence[BarRow]) -> Sequence[BarRow]:
    """One row per key (a single INSERT may not touch a row twice): the latest accepted."""
    latest: dict[tuple[str, str, str, datetime], BarRow] = {}
    for row in batch:
        key = (row.provider, row.symbol, row.resolution, row.ts)
        kept = latest.get(key)
        if kept is None or row.received_at >= kept.received_at:
            latest[key] = row
    return batch if len(latest) == len(batch) else list(latest.values())


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def encode_csv(rows: Sequence[BarRow]) -> bytes:
    """CSV in ``COLUMNS`` order. Text is quoted only when it must be (or is empty,
    which unquoted CSV would read as NULL)."""
    out: list[str] = []
    append = out.append
    last_received: datetime | None = None
    received = ""
    last_ts: datetime | None = None
    ts = ""
    for r in rows:
        if r.received_at is not last_received:  # one request shares one timestamp
            last_received = r.received_at
            received = r.received_at.isoformat()
        if r.ts != last_ts:  # bars of many symbols often share a timestamp
            last_ts = r.ts
            ts = r.ts.isoformat()
        line = (
            f"{r.provider},{r.symbol},{r.resolution},{ts},{r.open},{r.high},"
            f"{r.low},{r.close},{r.volume},{'t' if r.delayed else 'f'},{received}\n"
        )
        if (
            line.count(",") != 10
            or '"' in line
            or "\r" in line
            or line.count("\n") != 1
            or ",," in line
            or line[0] == ","
        ):
            line = _slow_line(r, received)
        append(line)
    return "".join(out).encode()


def _slow_line(r: BarRow, received: str) -> str:
    fields = (
        r.provider,
        r.symbol,
        r.resolution,
        r.ts.isoformat(),
        r.open,
        r.high,
        r.low,
        r.close,
        r.volume,
        "t" if r.delayed else "f",
        received,
    )
    return ",".join(_quote(f) for f in fields) + "\n"
