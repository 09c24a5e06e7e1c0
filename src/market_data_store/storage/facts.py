"""The other kinds of market data: options, quotes, trades, fundamentals and news.

Each kind is one table (migration 0005) described once here (``FactTable``): its value
columns in order, its natural key, the column reads range over. Every row also holds
``tenant_id`` and ``provider`` (both in the key: the tenant last, as in ``bars``) and
``ingested_at``/``updated_at`` (when the store accepted the version). Reads of every
kind are ``reads.py``'s.

A row travels as a ``FactRow``: its kind, tenant, provider and value columns as the
text COPY's text format reads (``\\N`` for NULL, backslashes doubled; ingest checks that
no value holds a tab, newline or other control character), so writing a batch is one
join per row and one COPY. ``FactSink`` writes them the way ``BarsSink`` writes bars:
an optimistic COPY straight into the table; on a key that exists, COPY into a
per-connection staging table and one ``INSERT ... ON CONFLICT DO UPDATE`` that keeps
the most recently accepted version and skips unchanged rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from .bars_sink import SinkStats, _count, _source, copy_then
from .types import DbPool

log = logging.getLogger(__name__)

NULL = "\\N"
"""A NULL in COPY's text format (what a ``FactRow`` holds for an absent value)."""
MAX_SKIPPED_BATCHES = 64


@dataclass(frozen=True)
class FactTable:
    """One kind's table: ``columns`` (name, SQL type) after ``tenant_id`` and ``provider``,
    in the order a ``FactRow`` holds them; ``key`` the natural key's columns (tenant and
    provider are always part of it); reads range over ``time`` and filter by ``symbol``
    (a text column, or a text[] column that must contain the symbol)."""

    kind: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    time: str
    symbol: str
    order: tuple[str, ...]
    """The primary key's columns after the provider, the tenant left out: what reads
    are ordered by (news: its time index, then the article)."""
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(name for name, _ in self.columns))
        assert set(self.key) <= set(self.names)
        assert self.time in self.names
        assert set(self.order) <= set(self.names)

    @property
    def staging(self) -> str:
        return f"{self.kind}_staging"

    def sql_type(self, name: str) -> str:
        return dict(self.columns)[name]


def _numbers(*names: str) -> tuple[tuple[str, str], ...]:
    return tuple((name, "numeric") for name in names)


OPTIONS = FactTable(
    "options",
    (
        ("symbol", "text"),
        ("expiry", "timestamptz"),
        ("strike", "numeric"),
        ("option_type", "text"),
        ("ts", "timestamptz"),
        *_numbers("bid", "ask", "last"),
        ("volume", "bigint"),
        ("open_interest", "bigint"),
        *_numbers("implied_volatility", "delta", "gamma", "theta", "vega"),
        ("delayed", "boolean"),
    ),
    key=("symbol", "expiry", "option_type", "strike", "ts"),
    time="ts",
    symbol="symbol",
    order=("symbol", "ts", "expiry", "option_type", "strike"),
)
QUOTES = FactTable(
    "quotes",
    (
        ("symbol", "text"),
        ("timestamp", "timestamptz"),
        *_numbers("bid", "ask", "last"),
        ("bid_size", "bigint"),
        ("ask_size", "bigint"),
        ("volume", "bigint"),
        ("delayed", "boolean"),
    ),
    key=("symbol", "timestamp"),
    time="timestamp",
    symbol="symbol",
    order=("symbol", "timestamp"),
)
TRADES = FactTable(
    "trades",
    (
        ("symbol", "text"),
        ("ts", "timestamptz"),
        ("trade_id", "text"),
        ("price", "numeric"),
        ("size", "bigint"),
        ("exchange", "text"),
        ("conditions", "text[]"),
    ),
    key=("symbol", "ts", "trade_id"),
    time="ts",
    symbol="symbol",
    order=("symbol", "ts", "trade_id"),
)
FUNDAMENTALS = FactTable(
    "fundamentals",
    (
        ("symbol", "text"),
        ("asof", "date"),
        *_numbers("total_assets", "total_liabilities", "net_income", "eps"),
    ),
    key=("symbol", "asof"),
    time="asof",
    symbol="symbol",
    order=("symbol", "asof"),
)
NEWS = FactTable(
    "news",
    (
        ("article_id", "text"),
        ("symbols", "text[]"),
        ("title", "text"),
        ("url", "text"),
        ("published_at", "timestamptz"),
        ("sentiment_score", "numeric"),
    ),
    key=("article_id",),
    time="published_at",
    symbol="symbols",
    order=("published_at", "article_id"),
)
FACT_TABLES: dict[str, FactTable] = {
    t.kind: t for t in (OPTIONS, QUOTES, TRADES, FUNDAMENTALS, NEWS)
}


class FactRow(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One row of a kind's table, validated: ``values`` are its columns (``FactTable
    .columns``, in order) as COPY text (``NULL`` for an absent value). An array on the
    wire and in dead letters (a bar is an object: the two never read as each other)."""

    kind: str
    tenant: str
    provider: str
    values: tuple[str, ...]
    received_at: datetime

    def columns(self) -> dict[str, str | None]:
        """The values by column name, as text (None for NULL): for people to read."""
        names = FACT_TABLES[self.kind].names if self.kind in FACT_TABLES else ()
        return {
            name: None if value == NULL else value.replace("\\\\", "\\")
            for name, value in zip(names, self.values, strict=False)
        }


def copy_text(value: str) -> str:
    """``value`` as a field of COPY's text format (it holds no control character)."""
    return value.replace("\\", "\\\\") if "\\" in value else value


def _ident(name: str) -> str:
    return f'"{name}"'


def _all_columns(table: FactTable) -> tuple[str, ...]:
    return ("tenant_id", "provider", *table.names, "ingested_at", "updated_at")


def _key_columns(table: FactTable) -> tuple[str, ...]:
    return ("provider", *table.key, "tenant_id")  # the primary key's order


def _merge(table: FactTable) -> str:
    columns = ", ".join(map(_ident, _all_columns(table)))
    key = ", ".join(map(_ident, _key_columns(table)))
    values = [name for name in table.names if name not in table.key]
    assignments = ", ".join(f"{_ident(n)} = EXCLUDED.{_ident(n)}" for n in values)
    # compared as text: a correction of a decimal's spelling (1.5 -> 1.50) is a change
    old = ", ".join(f"t.{_ident(n)}::text" for n in values)
    new = ", ".join(f"EXCLUDED.{_ident(n)}::text" for n in values)
    # one version per key (a single INSERT may not touch a row twice): the latest accepted
    return f"""
INSERT INTO {table.kind} AS t ({columns})
SELECT DISTINCT ON ({key}) {columns} FROM {table.staging}
ORDER BY {key}, updated_at DESC
ON CONFLICT ({key}) DO UPDATE
SET {assignments}, updated_at = EXCLUDED.updated_at
WHERE EXCLUDED.updated_at >= t.updated_at
  AND ({old}) IS DISTINCT FROM ({new})
"""


def _create_staging(table: FactTable) -> str:
    columns = ", ".join(
        f"{_ident(name)} {sql}"
        for name, sql in (
            ("tenant_id", "text"),
            ("provider", "text"),
            *table.columns,
            ("ingested_at", "timestamptz"),
            ("updated_at", "timestamptz"),
        )
    )
    return f"CREATE TEMP TABLE IF NOT EXISTS {table.staging} ({columns}) ON COMMIT DELETE ROWS"


def _stage_and_merge(table: FactTable) -> str:
    columns = ", ".join(map(_ident, _all_columns(table)))
    copy = f"COPY {table.staging} ({columns}) FROM STDIN"
    return f"{_create_staging(table)};\n{copy};\n{_merge(table)}"


@dataclass
class _Plan:
    """One table's statements and its fast-path state."""

    table: FactTable
    columns: tuple[str, ...]
    stage_and_merge: str
    """One query (``copy_then``): create the staging table if this connection has none,
    COPY into it, merge."""
    skip: int = 0  # batches still to merge without trying the fast path
    penalty: int = 0  # what the next conflict sets ``skip`` to (doubling)


def encode_rows(rows: Sequence[FactRow]) -> bytes:
    """COPY text of ``rows`` (one kind): tenant, provider, values, received_at twice."""
    lines: list[str] = []
    append = lines.append
    last_received: datetime | None = None
    tail = ""
    last_owner: tuple[str, str] | None = None
    head = ""
    for r in rows:
        if r.received_at is not last_received:  # one request shares one timestamp
            last_received = r.received_at
            stamp = r.received_at.isoformat()
            tail = f"\t{stamp}\t{stamp}\n"
        if last_owner is None or r.provider is not last_owner[1] or r.tenant is not last_owner[0]:
            last_owner = (r.tenant, r.provider)
            head = f"{r.tenant}\t{copy_text(r.provider)}\t"
        append(head + "\t".join(r.values) + tail)
    return "".join(lines).encode()


class FactSink:
    """Writes ``FactRow`` batches (any mix of kinds: each kind's rows in one COPY, kinds
    in the order they first appear). ``stats`` adds up over all the kinds."""

    def __init__(self, pool: DbPool, *, fast_path: bool = True) -> None:
        self._pool = pool
        self._fast_path = fast_path
        self.stats = SinkStats()
        self._plans = {
            kind: _Plan(table, _all_columns(table), _stage_and_merge(table))
            for kind, table in FACT_TABLES.items()
        }

    async def write(self, batch: Sequence[FactRow]) -> None:
        if not batch:
            return
        groups: dict[str, list[FactRow]] = {}
        for row in batch:
            groups.setdefault(row.kind, []).append(row)
        written = 0
        async with self._pool.acquire() as conn:
            for kind, rows in groups.items():
                written += await self._write(conn, self._plans[kind], rows)
        self.stats.rows_received += len(batch)
        self.stats.rows_written += written

    async def _write(self, conn: Any, plan: _Plan, rows: list[FactRow]) -> int:
        payload = encode_rows(rows)
        if self._fast_path and plan.skip == 0:
            try:
                status = await conn.copy_to_table(
                    plan.table.kind, source=_source(payload), columns=plan.columns
                )
            except asyncpg.UniqueViolationError:
                self.stats.failed_copies += 1
                self.stats.conflicts += 1
                plan.penalty = min(max(1, 2 * plan.penalty), MAX_SKIPPED_BATCHES)
                plan.skip = plan.penalty
            else:
                plan.penalty = 0
                self.stats.copied_batches += 1
                return _count(status)
        elif plan.skip > 0:
            plan.skip -= 1
        status = await copy_then(conn, plan.stage_and_merge, payload)
        self.stats.merged_batches += 1
        return _count(status)
