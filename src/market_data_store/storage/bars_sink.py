"""Writes batches of bars: optimistic COPY into ``bars``, else staging and one upsert.

Market data is append-mostly, so a batch is first copied (CSV text, prices as
the decimal strings received: no float or Decimal encoding on the hot path)
straight into ``bars``: one statement, atomic on its own. Only when that meets a
unique violation (some keys exist already) is the batch written the idempotent
way: COPY into a per-connection temporary table, then ``INSERT ... SELECT ... ON
CONFLICT DO UPDATE`` in one transaction. The merge keeps the most recently
*accepted* version of a bar (``received_at``) and skips rows whose values did not
change. Either way a batch lands whole or not at all. Any other error of the
fast COPY (a CHECK, a bad value) is raised as it is: the writer isolates the
poison rows by bisection, as for the merge.

After a conflict the sink skips the fast path for a number of batches that
doubles with each further conflict (1, 2, 4... up to 64) and resets on a fast
success. The batch that then tries again first looks up its first key (one
index probe): if that exists, it counts as a conflict without a COPY sent only to
fail. A replay of existing bars pays one failed COPY (failing at its first key)
and a lookup per 64 batches; a stream of new bars pays nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

from .rows import BarRow
from .types import DbPool

log = logging.getLogger(__name__)

STAGING = "bars_staging"
# The CSV's columns, in ``bars`` and in the staging table alike: when the store
# accepted this version is both ``ingested_at`` (of a new key) and ``updated_at``.
COLUMNS = (
    "tenant_id",
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
    "ingested_at",
    "updated_at",
)
MAX_SKIPPED_BATCHES = 64

_EXISTS = """
SELECT EXISTS (SELECT FROM bars WHERE tenant_id = $1 AND provider = $2 AND symbol = $3
                                 AND resolution = $4 AND ts = $5)
"""

_CREATE_STAGING = f"""
CREATE TEMP TABLE IF NOT EXISTS {STAGING} (
    tenant_id text, provider text, symbol text, resolution text, ts timestamptz,
    open numeric, high numeric, low numeric, close numeric, volume numeric,
    delayed boolean, ingested_at timestamptz, updated_at timestamptz
) ON COMMIT DELETE ROWS
"""

_MERGE = f"""
INSERT INTO bars AS b (tenant_id, provider, symbol, resolution, ts, open, high, low, close,
                       volume, delayed, ingested_at, updated_at)
SELECT tenant_id, provider, symbol, resolution, ts, open, high, low, close, volume,
       delayed, ingested_at, updated_at
FROM {STAGING}
ORDER BY provider, symbol, resolution, ts, tenant_id  -- locked in key order: no deadlocks
ON CONFLICT (tenant_id, provider, symbol, resolution, ts) DO UPDATE
SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, delayed = EXCLUDED.delayed, updated_at = EXCLUDED.updated_at
WHERE EXCLUDED.updated_at >= b.updated_at
  AND (b.open, b.high, b.low, b.close, b.volume, b.delayed)
      IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close,
                        EXCLUDED.volume, EXCLUDED.delayed)
"""

if not callable(getattr(asyncpg.Connection, "_copy_in", None)):  # pragma: no cover
    # an asyncpg beyond the versions allowed: fail at start, not in every merge
    raise ImportError("this asyncpg has no Connection._copy_in, which copy_then needs")

# One query: COPY into the staging table, then the merge (see ``copy_then``).
_STAGE_AND_MERGE = f"COPY {STAGING} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT csv);\n{_MERGE}"


async def prepare_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Pool ``init`` hook: create this connection's staging table once."""
    await conn.execute(_CREATE_STAGING)


@dataclass
class SinkStats:
    rows_received: int = 0
    rows_written: int = 0  # inserted or changed; unchanged duplicates are not rewritten
    copied_batches: int = 0  # written by the fast path (COPY straight into bars)
    merged_batches: int = 0  # written by staging + upsert
    conflicts: int = 0  # batches the fast path found meeting existing keys (then merged)
    failed_copies: int = 0  # of which found by a COPY that failed


class BarsSink:
    """The coordinator's sink for ``BarRow`` batches (satisfies ``Sink[BarRow]``).

    Its pool must set up each connection with ``prepare_connection`` (``open_pool(...,
    init=prepare_connection)``): the merge path writes through a per-connection
    staging table."""

    def __init__(self, pool: DbPool, *, fast_path: bool = True) -> None:
        self._pool = pool
        self.stats = SinkStats()
        self._fast_path = fast_path
        self._skip = 0  # batches still to merge without trying the fast path
        self._penalty = 0  # what the next conflict sets ``_skip`` to (doubling)

    async def write(self, batch: Sequence[BarRow]) -> None:
        if not batch:
            return
        async with self._pool.acquire() as conn:
            payload = encode_csv(batch) if await self._fast_path_due(conn, batch) else None
            written = None if payload is None else await self._copy(conn, payload)
            if written is None:
                # A key twice in one batch fails the fast COPY like an existing key
                # does: only the merge, which may not touch a row twice, needs
                # latest_versions (which returns the batch itself when no key repeats).
                rows = latest_versions(batch)
                if payload is None or rows is not batch:
                    payload = encode_csv(rows)
                written = _count(await copy_then(conn, _STAGE_AND_MERGE, payload))
                self.stats.merged_batches += 1
        self.stats.rows_received += len(batch)
        self.stats.rows_written += written

    async def _fast_path_due(
        self, conn: PoolConnectionProxy[asyncpg.Record], batch: Sequence[BarRow]
    ) -> bool:
        """Whether this batch tries the fast path (not while skipping after conflicts;
        when retrying after them, only if its first key is new)."""
        if not self._fast_path:
            return False
        if self._skip > 0:
            self._skip -= 1
            return False
        if self._penalty and await conn.fetchval(_EXISTS, *_key(batch[0])):
            self._conflict()  # still meeting existing keys: no COPY sent only to fail
            return False
        return True

    async def _copy(self, conn: PoolConnectionProxy[asyncpg.Record], payload: bytes) -> int | None:
        """The fast path: rows written, or None when the batch must be merged."""
        try:
            status = await conn.copy_to_table(
                "bars", source=_source(payload), columns=COLUMNS, format="csv"
            )
        except asyncpg.UniqueViolationError:
            self.stats.failed_copies += 1
            self._conflict()
            return None
        self._penalty = 0
        self.stats.copied_batches += 1
        return _count(status)

    def _conflict(self) -> None:
        self.stats.conflicts += 1
        self._penalty = min(max(1, 2 * self._penalty), MAX_SKIPPED_BATCHES)
        self._skip = self._penalty


async def copy_then(conn: object, statement: str, payload: bytes) -> str:
    """Run ``statement``: a ``COPY ... FROM STDIN`` (fed ``payload``) and the statements
    after it, as one query, on a connection in no transaction; the status of the last
    (``INSERT 0 n``).

    The statements of one query are one implicit transaction: all land or none does,
    a staging table ``ON COMMIT DELETE ROWS`` is empty again after either, and the
    connection is left idle (after an error or a cancellation too). asyncpg sends the
    query, the data and the COPY's end without waiting: one round trip where BEGIN,
    COPY, the merge and COMMIT took four (1.1-1.2x the rows/s of 100-row batches,
    ``bench/merge_query.py``). One ``command_timeout`` now bounds the whole query, not
    each statement. asyncpg has no public call for a COPY followed by more statements:
    ``_copy_in`` is the one ``copy_to_table`` ends in, taking the statement as it is
    (the same in asyncpg 0.29 to 0.32, the versions allowed)."""
    connection = cast(Any, conn)
    assert not connection.is_in_transaction(), "copy_then is its own transaction"
    status: str = await connection._copy_in(statement, _source(payload), None)
    return status


def _key(row: BarRow) -> tuple[str, str, str, str, datetime]:
    return row.tenant, row.provider, row.symbol, row.resolution, row.ts


def _count(status: str) -> int:
    """Rows of a command status (``COPY 5000``, ``INSERT 0 5000``)."""
    return int(status.rsplit(" ", 1)[-1])


def _source(payload: bytes) -> AsyncIterator[bytes]:
    """COPY data: a buffer goes out as one message (PostgreSQL takes up to 1 GiB);
    beyond 64 MiB, in chunks. (asyncpg would read a file object in a thread pool.)
    asyncpg documents buffers as a source, its type stubs omit them (hence the cast);
    a memoryview, as ``bytes`` would be taken for a file name."""
    if len(payload) > 1 << 26:
        return _chunks(payload)
    return cast(AsyncIterator[bytes], memoryview(payload))


async def _chunks(payload: bytes, size: int = 1 << 20) -> AsyncIterator[bytes]:
    view = memoryview(payload)
    for start in range(0, len(view), size):
        yield bytes(view[start : start + size])


def latest_versions(batch: Sequence[BarRow]) -> Sequence[BarRow]:
    """One row per key (a single INSERT may not touch a row twice): the latest accepted."""
    latest: dict[tuple[str, str, str, str, datetime], BarRow] = {}
    for row in batch:
        key = _key(row)
        kept = latest.get(key)
        if kept is None or row.received_at >= kept.received_at:
            latest[key] = row
    return batch if len(latest) == len(batch) else list(latest.values())


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def encode_csv(rows: Sequence[BarRow]) -> bytes:
    """CSV in ``COLUMNS`` order (``received_at`` twice). Text is quoted only when it
    must be (or is empty, which unquoted CSV would read as NULL).

    Every line is first written plain; the whole text is then checked at once (each
    line holds at least its 12 separators and its terminator, so exact totals mean
    no field holds either; no quote, no carriage return, no empty field). Only when
    that fails is each line checked, and the lines that need it quoted."""
    lines = _plain_lines(rows)
    text = "".join(lines)
    if (
        text.count(",") == 12 * len(lines)
        and text.count("\n") == len(lines)
        and '"' not in text
        and "\r" not in text
        and ",," not in text
        and "\n," not in text
        and not text.startswith(",")
    ):
        return text.encode()
    for index, (line, row) in enumerate(zip(lines, rows, strict=True)):
        if (
            line.count(",") != 12
            or '"' in line
            or "\r" in line
            or line.count("\n") != 1
            or ",," in line
            or line[0] == ","
        ):
            lines[index] = _slow_line(row)
    return "".join(lines).encode()


def _plain_lines(rows: Sequence[BarRow]) -> list[str]:
    lines: list[str] = []
    append = lines.append
    last_received: datetime | None = None
    tails = ("", "")  # ",f,<received>,<received>\n" and ",t,...": one per request
    last_ts: datetime | None = None
    ts = ""
    for r in rows:
        if r.received_at is not last_received:  # one request shares one timestamp
            last_received = r.received_at
            stamp = r.received_at.isoformat()
            tails = (f",f,{stamp},{stamp}\n", f",t,{stamp},{stamp}\n")
        if r.ts != last_ts:  # bars of many symbols often share a timestamp
            last_ts = r.ts
            ts = r.ts.isoformat()
        append(
            f"{r.tenant},{r.provider},{r.symbol},{r.resolution},{ts},{r.open},{r.high},"
            f"{r.low},{r.close},{r.volume}{tails[r.delayed]}"
        )
    return lines


def _slow_line(r: BarRow) -> str:
    stamp = r.received_at.isoformat()
    fields = (
        r.tenant,
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
    )
    return ",".join(_quote(f) for f in fields) + f",{stamp},{stamp}\n"
