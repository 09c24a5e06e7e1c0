"""Retention: rows older than their table's period deleted, for every tenant at once.

One apply goes table by table. Where TimescaleDB made the table a hypertable, the
chunks wholly older than the cutoff are dropped first (``drop_chunks``, their rows
counted just before), provided their locks are had within ``DROP_LOCK_TIMEOUT``;
what is left (the chunk the cutoff falls in, or every old row of a plain table) is
deleted in batches of at most ``batch_rows`` rows, each batch its own short
transaction:

    DELETE FROM t WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM t WHERE <time> < $cutoff LIMIT $n FOR UPDATE SKIP LOCKED))

``SKIP LOCKED``: a row a writer holds is passed over (the next apply takes it), so the
apply never waits for a writer, and a writer waits for the apply at most one batch
(only when it touches a row of that batch: an old one). The outer ``DELETE`` repeats
the time condition, so whatever it matches is old (on a hypertable a ``ctid`` names
rows in several chunks). On a plain table each batch starts where the last one ended
(``ctid >``, a TID range scan): one apply reads the table once, not its dead rows
again at every batch.

Batches go on until one finds fewer than ``batch_rows`` rows (the table is done), or
one waits for a lock more than ``DROP_LOCK_TIMEOUT`` or runs past the deadline (the
table is not done: the next apply goes on with it), or ``max_seconds`` have passed
since the apply began (checked after each batch: an apply
always makes progress; tables not reached are reported not complete, and the next
apply begins with the table after the last one worked on: round robin, so one table
that outlasts ``max_seconds`` does not starve the others). Every statement
is bounded by ``statement_timeout``. Deletes run as the pool's user, the tables'
owner, whom row-level security does not apply to: every tenant's rows go.

One apply at a time: a second one in this process, or in another replica (a
session-level advisory lock on the apply's connection), is refused with
``RetentionBusyError`` rather than queued behind the first.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from .errors import StorageError
from .facts import FACT_TABLES
from .pool import connection
from .types import DbConnection, DbPool

log = logging.getLogger(__name__)

TIME_COLUMNS: dict[str, tuple[str, str]] = {
    "bars": ("ts", "timestamptz"),
    **{kind: (t.time, t.sql_type(t.time)) for kind, t in FACT_TABLES.items()},
}
"""Each table retention knows: its time column and that column's SQL type."""
TABLES = tuple(TIME_COLUMNS)

LOCK_KEY = 0x6D64_735F_7265_74  # "mds_ret": the advisory lock of an apply, per database
DROP_LOCK_TIMEOUT = 1.0
"""Seconds ``drop_chunks`` may wait for its locks; beyond, the batches delete those rows."""

_PERIOD = re.compile(r"([1-9][0-9]{0,5})([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def period_of(keep: str) -> timedelta:
    """``"365d"`` as a ``timedelta``: a count (1-999999) and a unit (s, m, h, d, w);
    ``ValueError`` otherwise."""
    match = _PERIOD.fullmatch(keep)
    if match is None:
        raise ValueError(f"retention {keep!r} is not a count and a unit (s, m, h, d, w)")
    return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


@dataclass(frozen=True)
class RetentionRule:
    """Keep ``table``'s rows of the last ``keep`` (e.g. ``"365d"``, by its time column)."""

    table: str
    keep: str
    period: timedelta = field(init=False)

    def __post_init__(self) -> None:
        if self.table not in TIME_COLUMNS:
            raise ValueError(f"no retention for table {self.table!r} (one of {', '.join(TABLES)})")
        object.__setattr__(self, "period", period_of(self.keep))

    @property
    def column(self) -> str:
        return TIME_COLUMNS[self.table][0]

    @property
    def is_date(self) -> bool:
        return TIME_COLUMNS[self.table][1] == "date"

    def cutoff(self, now: datetime) -> datetime:
        """Rows before this go: ``now`` minus the period (a date column: from midnight
        UTC of that day, so a day partly within the period is kept)."""
        try:
            cutoff = now.astimezone(UTC) - self.period
        except OverflowError:
            return _EARLIEST
        if self.is_date:
            return datetime.combine(cutoff.date(), datetime.min.time(), UTC)
        return cutoff


@dataclass(frozen=True)
class TableRetention:
    """What one apply did to one table: rows before ``cutoff`` deleted (``deleted``;
    dropped chunks' rows included); ``complete`` when none is left but rows a writer
    held at that moment."""

    table: str
    keep: str
    cutoff: datetime
    deleted: int
    complete: bool


@dataclass(frozen=True)
class RetentionResult:
    tables: tuple[TableRetention, ...]

    @property
    def complete(self) -> bool:
        return all(t.complete for t in self.tables)


@dataclass
class RetentionStats:
    """Rows deleted since start, by table (every table from the start)."""

    deleted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))


class RetentionBusyError(StorageError):
    """Another apply is running, in this process or in another replica of the same
    database: this call deleted nothing; try again once that one has ended."""


class Retention:
    """Applies ``rules`` on ``pool`` (``apply``); ``stats`` counts what it deleted."""

    def __init__(
        self,
        pool: DbPool,
        rules: Sequence[RetentionRule],
        *,
        batch_rows: int,
        max_seconds: float,
        acquire_timeout: float,
        statement_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if len({r.table for r in rules}) != len(rules):
            raise ValueError("one retention rule per table")
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        self.rules = tuple(rules)
        self.stats = RetentionStats()
        self._pool = pool
        self._batch_rows = batch_rows
        self._max_seconds = max_seconds
        self._acquire_timeout = acquire_timeout
        self._statement_timeout = f"{max(1, round(statement_timeout * 1000))}ms"
        self._statement_seconds = statement_timeout
        self._clock = clock
        self._now = now
        self._running = asyncio.Lock()
        self._first = 0  # the rule an apply begins with

    async def apply(self) -> RetentionResult:
        """Delete what every rule no longer keeps (see the module's docstring).
        ``RetentionBusyError`` when another apply runs; ``DatabaseUnavailableError``
        when the database cannot be used (batches committed before stay deleted)."""
        if not self.rules:
            return RetentionResult(())
        if self._running.locked():
            raise RetentionBusyError("a retention apply is already running in this replica")
        async with self._running:
            deadline = self._clock() + self._max_seconds
            now = self._now()
            async with connection(self._pool, timeout=self._acquire_timeout) as conn:
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                    raise RetentionBusyError(
                        "another replica is applying retention to this database"
                    )
                try:
                    return await self._apply(conn, now, deadline)
                finally:
                    await _unlock(conn)

    async def _apply(self, conn: DbConnection, now: datetime, deadline: float) -> RetentionResult:
        hypertables = await _hypertables(conn)
        done: dict[str, TableRetention] = {}
        # round robin: begin after the last table the previous apply worked on, so a
        # table that outlasts max_seconds does not keep the others from their turn
        n = len(self.rules)
        for index in [(self._first + i) % n for i in range(n)]:
            rule = self.rules[index]
            cutoff = rule.cutoff(now)
            if done and self._clock() >= deadline:
                done[rule.table] = TableRetention(rule.table, rule.keep, cutoff, 0, False)
                continue
            self._first = (index + 1) % n
            value: date | datetime = cutoff.date() if rule.is_date else cutoff
            deleted = 0
            if rule.table in hypertables:
                deleted = await self._drop_chunks(conn, rule, value)
            more, complete = await self._delete(conn, rule, value, deadline)
            deleted += more
            if deleted:
                log.info("retention: %d row(s) of %s before %s deleted", deleted, rule.table, value)
            done[rule.table] = TableRetention(rule.table, rule.keep, cutoff, deleted, complete)
        return RetentionResult(tuple(done[rule.table] for rule in self.rules))

    async def _drop_chunks(self, conn: DbConnection, rule: RetentionRule, cutoff: Any) -> int:
        """Drop the chunks wholly before ``cutoff``: their rows' count (0 when their locks
        were not had in time; the batches then delete those rows)."""
        older = f"older_than => $2::{TIME_COLUMNS[rule.table][1]}"
        try:
            async with conn.transaction():
                await _bound(conn, self._statement_timeout, DROP_LOCK_TIMEOUT)
                chunks = await conn.fetch(
                    f"SELECT c::text FROM show_chunks($1::text::regclass, {older}) AS c",
                    rule.table,
                    cutoff,
                )
                rows = 0
                for (chunk,) in chunks:  # regclass text: already quoted where needed
                    rows += await conn.fetchval(f"SELECT count(*) FROM {chunk}")
                if chunks:
                    await conn.execute(
                        f"SELECT drop_chunks($1::text::regclass, {older})", rule.table, cutoff
                    )
        except asyncpg.LockNotAvailableError:
            log.info("retention: chunks of %s busy; deleting their rows in batches", rule.table)
            return 0
        self.stats.deleted[rule.table] += rows
        return rows

    async def _delete(
        self, conn: DbConnection, rule: RetentionRule, cutoff: Any, deadline: float
    ) -> tuple[int, bool]:
        """Batches until one finds fewer than ``batch_rows`` rows (True) or the deadline
        passed (False): the rows deleted, and whether the table is done."""
        plain = await conn.fetchval(_PLAIN, rule.table)
        sql = _batch(rule.table, rule.column)
        after: tuple[int, int] = (0, 0)  # no row has this ctid: every row is after it
        deleted = 0
        while True:
            # a batch waits for a lock at most DROP_LOCK_TIMEOUT and runs no later than
            # a moment past the deadline: a table another session holds (an index
            # build, LOCK TABLE) ends this table's turn, not the whole apply
            left = max(0.0, deadline - self._clock()) + DROP_LOCK_TIMEOUT
            timeout = f"{max(1, round(min(self._statement_seconds, left) * 1000))}ms"
            try:
                async with conn.transaction():
                    await _bound(conn, timeout, DROP_LOCK_TIMEOUT)
                    row = await conn.fetchrow(sql, cutoff, self._batch_rows, after)
            except (asyncpg.LockNotAvailableError, asyncpg.QueryCanceledError) as exc:
                log.info("retention: %s not done this time (%s)", rule.table, type(exc).__name__)
                return deleted, False
            assert row is not None  # an aggregate's one row
            found, gone, last = row
            deleted += gone
            self.stats.deleted[rule.table] += gone
            if found < self._batch_rows:
                return deleted, True
            if self._clock() >= deadline:
                return deleted, False
            if plain:
                after = last


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _batch(table: str, column: str) -> str:
    t, c = _ident(table), _ident(column)
    return f"""
WITH doomed AS MATERIALIZED (
    SELECT ctid FROM {t} WHERE ctid > $3::tid AND {c} < $1 LIMIT $2 FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM doomed)) AND {c} < $1
    RETURNING 1
)
SELECT (SELECT count(*) FROM doomed), (SELECT count(*) FROM gone), (SELECT max(ctid) FROM doomed)
"""


# one heap, no children (not a hypertable, not partitioned or inherited): its ctids
# name its rows alone, in the order a TID range scan reads them
_PLAIN = """
SELECT c.relkind = 'r' AND NOT EXISTS (SELECT FROM pg_inherits WHERE inhparent = c.oid)
FROM pg_class c WHERE c.oid = to_regclass($1)
"""


async def _bound(conn: DbConnection, statement_timeout: str, lock_timeout: float = 0) -> None:
    """This transaction's statements end after ``statement_timeout``; lock waits after
    ``lock_timeout`` seconds (0: as long as the statement may run)."""
    await conn.execute(
        "SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true)",
        statement_timeout,
        f"{round(lock_timeout * 1000)}ms",
    )


async def _hypertables(conn: DbConnection) -> set[str]:
    """The tables of this schema TimescaleDB made hypertables (none without it: its
    catalog is read only where the extension is installed)."""
    if not await conn.fetchval(
        "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')"
    ):
        return set()
    rows = await conn.fetch(
        "SELECT hypertable_name FROM timescaledb_information.hypertables "
        "WHERE hypertable_schema = current_schema() AND hypertable_name = ANY($1::text[])",
        list(TABLES),
    )
    return {row[0] for row in rows}


async def _unlock(conn: DbConnection) -> None:
    """Release the apply's advisory lock; on a broken connection it ended with the
    session (and the pool's reset of a returned connection releases it too)."""
    try:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        log.warning("retention: advisory lock not released (%s); the session's end does", exc)


__all__ = [
    "TABLES",
    "TIME_COLUMNS",
    "Retention",
    "RetentionBusyError",
    "RetentionResult",
    "RetentionRule",
    "RetentionStats",
    "TableRetention",
    "period_of",
]
