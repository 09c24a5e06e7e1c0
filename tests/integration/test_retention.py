"""Retention against a real PostgreSQL (no TimescaleDB here: the batched deletes):
old rows of every tenant go, recent ones and kinds without a rule stay, batches and
the deadline, rows a writer holds are passed over, writers never wait for an apply,
one apply at a time per database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from market_data_store.storage import (
    DbPool,
    Retention,
    RetentionBusyError,
    RetentionRule,
    apply_migrations,
    open_pool,
)
from market_data_store.storage.retention import TABLES
from tests.support.waits import until

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TENANTS = ("default", "alpha", "beta")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[DbPool]:
    p = await open_pool(database_url, min_size=1, max_size=4)
    async with p.acquire() as conn:
        await apply_migrations(conn)
    yield p
    await p.close()


def retention(pool: DbPool, *rules: RetentionRule, **options: float) -> Retention:
    settings: dict[str, float] = {
        "batch_rows": 1000,
        "max_seconds": 60.0,
        "acquire_timeout": 5.0,
        "statement_timeout": 30.0,
        **options,
    }
    return Retention(
        pool,
        rules,
        batch_rows=int(settings["batch_rows"]),
        max_seconds=settings["max_seconds"],
        acquire_timeout=settings["acquire_timeout"],
        statement_timeout=settings["statement_timeout"],
        now=lambda: NOW,
    )


async def add_bars(pool: DbPool, days_ago: list[int], tenant: str = "default") -> None:
    """One bar per entry, ``days_ago`` days before ``NOW`` (a minute per index apart)."""
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO bars (tenant_id, provider, symbol, resolution, ts, open, high, low, "
            "close, volume) VALUES ($1, 'p', 'AAPL', '1m', $2, 1, 1, 1, 1, 1)",
            [(tenant, NOW - timedelta(days=d, minutes=i)) for i, d in enumerate(days_ago)],
        )


async def add_fundamentals(pool: DbPool, dates: list[date], tenant: str = "default") -> None:
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO fundamentals (tenant_id, provider, symbol, asof, eps) "
            "VALUES ($1, 'p', 'AAPL', $2, 1)",
            [(tenant, d) for d in dates],
        )


async def add_quotes(pool: DbPool, days_ago: list[int]) -> None:
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO quotes (provider, symbol, \"timestamp\") VALUES ('p', 'AAPL', $1)",
            [(NOW - timedelta(days=d, minutes=i),) for i, d in enumerate(days_ago)],
        )


async def count(pool: DbPool, table: str, where: str = "true") -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {where}"))


async def test_old_rows_of_every_tenant_go_recent_ones_and_unruled_kinds_stay(
    pool: DbPool,
) -> None:
    for tenant in TENANTS:
        await add_bars(pool, [400, 366, 364, 1], tenant)
        await add_fundamentals(
            pool,
            [date(2015, 1, 1), date(2016, 2, 29), date(2016, 3, 1), date(2025, 12, 31)],
            tenant,
        )
    await add_quotes(pool, [4000, 1])
    apply = retention(pool, RetentionRule("bars", "365d"), RetentionRule("fundamentals", "10w"))
    result = await apply.apply()

    bars, fundamentals = result.tables
    assert (bars.table, bars.keep, bars.cutoff) == ("bars", "365d", NOW - timedelta(days=365))
    assert (bars.deleted, bars.complete) == (2 * len(TENANTS), True)
    # a date column: the cutoff's day from midnight UTC (2025-12-21 12:00 -> 2025-12-21)
    assert fundamentals.cutoff == datetime(2025, 12, 21, tzinfo=UTC)
    assert (fundamentals.deleted, fundamentals.complete) == (3 * len(TENANTS), True)
    assert result.complete
    for tenant in TENANTS:
        assert await count(pool, "bars", f"tenant_id = '{tenant}'") == 2
        assert await count(pool, "fundamentals", f"tenant_id = '{tenant}'") == 1
    assert await count(pool, "quotes") == 2  # no rule: untouched
    assert apply.stats.deleted == {
        "bars": 6, "options": 0, "quotes": 0, "trades": 0, "fundamentals": 9, "news": 0,
    }  # fmt: skip

    again = await apply.apply()  # nothing left to delete
    assert [(t.deleted, t.complete) for t in again.tables] == [(0, True), (0, True)]
    assert apply.stats.deleted["bars"] == 6


async def test_no_rule_is_an_empty_complete_result(pool: DbPool) -> None:
    await add_bars(pool, [4000])
    result = await retention(pool).apply()
    assert result.tables == ()
    assert result.complete
    assert await count(pool, "bars") == 1


async def test_batches_of_batch_rows_and_the_deadline_between_them(pool: DbPool) -> None:
    """``max_seconds=0``: every apply runs exactly one batch (the deadline is checked
    after each one), so each apply shows one batch's count; tables not reached are
    reported incomplete, and the next apply begins after the table the last one
    worked on (round robin: a table that outlasts the deadline starves no other)."""
    await add_bars(pool, [100] * 7 + [1])
    await add_quotes(pool, [100] * 2)
    apply = retention(
        pool, RetentionRule("bars", "30d"), RetentionRule("quotes", "30d"),
        batch_rows=3, max_seconds=0,
    )  # fmt: skip

    async def applied() -> list[tuple[int, bool]]:
        return [(t.deleted, t.complete) for t in (await apply.apply()).tables]

    first = await apply.apply()
    assert [(t.table, t.deleted, t.complete) for t in first.tables] == [
        ("bars", 3, False),
        ("quotes", 0, False),  # not reached
    ]
    assert not first.complete
    assert await count(pool, "bars") == 5
    # quotes' turn (2 found, fewer than a batch: done), bars not reached; results are
    # always in the rules' order
    assert await applied() == [(0, False), (2, True)]
    assert await applied() == [(3, False), (0, False)]  # bars, one batch
    assert await applied() == [(0, False), (0, True)]  # quotes: nothing left
    assert await applied() == [(1, True), (0, False)]  # bars: 1 found, done
    assert apply.stats.deleted == {**dict.fromkeys(TABLES, 0), "bars": 7, "quotes": 2}
    assert await count(pool, "bars") == 1
    assert await count(pool, "quotes") == 0
    unhurried = retention(pool, RetentionRule("bars", "30d"), RetentionRule("quotes", "30d"))
    assert (await unhurried.apply()).complete


async def test_many_batches_in_one_apply_count_every_row(pool: DbPool) -> None:
    await add_bars(pool, [100] * 50 + [1] * 5)
    apply = retention(pool, RetentionRule("bars", "30d"), batch_rows=7)
    result = await apply.apply()  # 7 full batches and one of 1
    assert [(t.deleted, t.complete) for t in result.tables] == [(50, True)]
    assert await count(pool, "bars") == 5


async def test_a_row_a_writer_holds_is_passed_over_not_waited_for(
    pool: DbPool, database_url: str
) -> None:
    await add_bars(pool, [100, 100, 100])
    writer = await asyncpg.connect(database_url)
    try:
        held = writer.transaction()
        await held.start()
        # a writer's upsert holds the oldest bar's row lock until it commits
        await writer.execute("UPDATE bars SET close = 1 WHERE ts = (SELECT min(ts) FROM bars)")
        apply = retention(pool, RetentionRule("bars", "30d"))
        result = await asyncio.wait_for(apply.apply(), 20)  # a guard, not a measure
        assert result.tables[0].deleted == 2
        assert await count(pool, "bars") == 1
        await held.commit()
    finally:
        await writer.close()
    assert (await apply.apply()).tables[0].deleted == 1  # the next apply takes it
    assert await count(pool, "bars") == 0


async def test_writers_never_wait_for_an_apply(pool: DbPool, database_url: str) -> None:
    """Each batch commits by itself: while an apply is held up on one table, the rows
    it deleted from another are gone for everyone, and writers re-insert those very
    keys and add new rows without waiting (their statement_timeout would end them)."""
    await add_bars(pool, [100] * 20)
    await add_quotes(pool, [100])
    blocker = await asyncpg.connect(database_url)
    writer = await asyncpg.connect(database_url)
    try:
        await writer.execute("SET statement_timeout = '3s'")
        held = blocker.transaction()
        await held.start()
        await blocker.execute("LOCK TABLE quotes IN SHARE MODE")  # the apply waits on quotes
        apply = retention(
            pool, RetentionRule("bars", "30d"), RetentionRule("quotes", "30d"), batch_rows=6
        )
        task = asyncio.create_task(apply.apply())

        async def waiting_on_quotes() -> bool:
            return bool(
                await writer.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted "
                    "AND relation = 'quotes'::regclass"
                )
            )

        await until(waiting_on_quotes, what="the apply waits for quotes")
        assert not task.done()
        assert await writer.fetchval("SELECT count(*) FROM bars") == 0  # committed
        await writer.execute(  # the deleted keys again, and a new bar: no wait
            "INSERT INTO bars (provider, symbol, resolution, ts, open, high, low, close, "
            "volume) SELECT 'p', 'AAPL', '1m', $1::timestamptz - make_interval(days => 100, "
            "mins => i), 1, 1, 1, 1, 1 FROM generate_series(0, 19) AS i "
            "UNION ALL SELECT 'p', 'AAPL', '1m', $1, 1, 1, 1, 1, 1",
            NOW,
        )
        await held.commit()
        result = await asyncio.wait_for(task, 20)
    finally:
        await blocker.close()
        await writer.close()
    assert [(t.table, t.deleted, t.complete) for t in result.tables] == [
        ("bars", 20, True),
        ("quotes", 1, True),
    ]


async def test_one_apply_at_a_time_in_a_process_and_across_replicas(
    pool: DbPool, database_url: str
) -> None:
    await add_quotes(pool, [100])
    blocker = await asyncpg.connect(database_url)
    other_replica = await open_pool(database_url, min_size=1, max_size=2)
    try:
        held = blocker.transaction()
        await held.start()
        await blocker.execute("LOCK TABLE quotes IN SHARE MODE")
        apply = retention(pool, RetentionRule("quotes", "30d"))
        task = asyncio.create_task(apply.apply())

        async def waiting() -> bool:
            return bool(
                await blocker.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted "
                    "AND relation = 'quotes'::regclass"
                )
            )

        await until(waiting, what="the apply waits for quotes")
        with pytest.raises(RetentionBusyError, match="in this replica"):
            await apply.apply()
        elsewhere = retention(other_replica, RetentionRule("quotes", "30d"))
        with pytest.raises(RetentionBusyError, match="another replica"):
            await elsewhere.apply()
        await held.commit()
        assert (await asyncio.wait_for(task, 20)).tables[0].deleted == 1
        # the lock is released: the other replica applies now
        assert (await elsewhere.apply()).complete
        assert (await apply.apply()).complete
    finally:
        await blocker.close()
        await other_replica.close()


async def test_a_table_held_by_another_session_ends_its_turn_not_the_apply(
    pool: DbPool, database_url: str
) -> None:
    await add_bars(pool, [100, 100])
    await add_quotes(pool, [100])
    other = await asyncpg.connect(database_url)
    try:
        held = other.transaction()
        await held.start()
        await other.execute("LOCK TABLE bars IN SHARE MODE")  # an index build, say
        apply = retention(
            pool, RetentionRule("bars", "30d"), RetentionRule("quotes", "30d"), max_seconds=10
        )
        result = await asyncio.wait_for(apply.apply(), 20)  # a guard, not a measure
        by_table = {t.table: t for t in result.tables}
        assert (by_table["bars"].deleted, by_table["bars"].complete) == (0, False)
        assert (by_table["quotes"].deleted, by_table["quotes"].complete) == (1, True)
        assert result.complete is False
        await held.rollback()
    finally:
        await other.close()
    again = await apply.apply()
    assert {t.table: t.deleted for t in again.tables} == {"bars": 2, "quotes": 0}
    assert again.complete
