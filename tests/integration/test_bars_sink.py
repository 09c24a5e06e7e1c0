"""BarsSink against a real PostgreSQL: idempotent upsert, exact decimals, error classes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from market_data_store.storage import (
    BarsSink,
    DbPool,
    apply_migrations,
    is_retryable,
    open_pool,
    prepare_connection,
)
from market_data_store.storage.bars_sink import _STAGE_AND_MERGE, copy_then, encode_csv
from tests.support.bars import ACCEPTED, T0, row
from tests.support.waits import until


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[DbPool]:
    p = await open_pool(database_url, min_size=1, max_size=4, init=prepare_connection)
    async with p.acquire() as conn:
        await apply_migrations(conn)
    yield p
    await p.close()


async def stored(pool: DbPool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT * FROM bars ORDER BY provider, symbol, ts")


async def test_rows_land_with_exact_decimals(pool: DbPool) -> None:
    sink = BarsSink(pool)
    await sink.write([row(0, close="187.0200"), row(1, volume="0.000000000000000001")])
    first, second = await stored(pool)
    assert first["close"] == Decimal("187.0200")
    assert str(first["close"]) == "187.0200"  # the scale as sent, not a float
    assert second["volume"] == Decimal("0.000000000000000001")
    assert first["ts"] == T0
    assert first["ingested_at"] == first["updated_at"] == ACCEPTED
    assert sink.stats.rows_received == 2
    assert sink.stats.rows_written == 2


async def test_same_rows_twice_is_one_row_and_newer_values_win(pool: DbPool) -> None:
    sink = BarsSink(pool)
    await sink.write([row(0, close="187.00")])
    later = ACCEPTED + timedelta(seconds=5)
    await sink.write([row(0, close="187.20", received_at=later)])
    (only,) = await stored(pool)
    assert only["close"] == Decimal("187.20")
    assert only["ingested_at"] == ACCEPTED  # first seen
    assert only["updated_at"] == later  # version stored now


async def test_an_older_version_never_overwrites_a_newer_one(pool: DbPool) -> None:
    """A dead-letter replay or a slower worker must not roll a bar back."""
    sink = BarsSink(pool)
    await sink.write([row(0, close="187.20", received_at=ACCEPTED + timedelta(seconds=5))])
    await sink.write([row(0, close="187.00", received_at=ACCEPTED)])
    (only,) = await stored(pool)
    assert only["close"] == Decimal("187.20")


async def test_unchanged_rows_are_not_rewritten(pool: DbPool) -> None:
    sink = BarsSink(pool)
    await sink.write([row(0), row(1)])
    await sink.write([row(0, received_at=ACCEPTED + timedelta(seconds=1)), row(1)])
    assert sink.stats.rows_written == 2  # the second batch changed nothing
    assert sink.stats.rows_received == 4
    assert {r["updated_at"] for r in await stored(pool)} == {ACCEPTED}


async def test_duplicate_keys_inside_one_batch_keep_the_latest(pool: DbPool) -> None:
    sink = BarsSink(pool)
    await sink.write(
        [
            row(0, close="187.01"),
            row(0, close="187.03", received_at=ACCEPTED + timedelta(seconds=2)),
            row(0, close="187.02", received_at=ACCEPTED + timedelta(seconds=1)),
        ]
    )
    (only,) = await stored(pool)
    assert only["close"] == Decimal("187.03")


async def test_new_bars_take_the_fast_path(pool: DbPool) -> None:
    sink = BarsSink(pool)
    await sink.write([row(i) for i in range(10)])
    await sink.write([row(i) for i in range(10, 20)])
    assert (sink.stats.copied_batches, sink.stats.merged_batches, sink.stats.conflicts) == (2, 0, 0)
    assert sink.stats.rows_written == 20
    rows = await stored(pool)
    assert len(rows) == 20
    assert {(r["ingested_at"], r["updated_at"]) for r in rows} == {(ACCEPTED, ACCEPTED)}


async def test_a_mixed_batch_falls_back_to_the_merge_whole(pool: DbPool) -> None:
    """Existing keys (a unique violation inside the fast COPY) send the batch to the
    merge: new keys are inserted, newer versions win, older ones and unchanged ones
    are left alone, and nothing of the failed COPY remains."""
    sink = BarsSink(pool)
    await sink.write([row(0, close="187.00"), row(1), row(2, close="187.30")])
    later = ACCEPTED + timedelta(seconds=5)
    await sink.write(
        [
            row(3),  # new, before the conflicting key in the COPY
            row(0, close="187.10", received_at=later),  # existing, newer: wins
            row(1, received_at=later),  # existing, unchanged: not rewritten
            row(2, close="187.00", received_at=ACCEPTED - timedelta(seconds=5)),  # older
            row(4),  # new, after
        ]
    )
    assert (sink.stats.copied_batches, sink.stats.merged_batches, sink.stats.conflicts) == (1, 1, 1)
    assert sink.stats.rows_written == 3 + 3  # 3 copied; 2 new + 1 changed merged
    by_minute = {(r["ts"] - T0) // timedelta(minutes=1): r for r in await stored(pool)}
    assert sorted(by_minute) == [0, 1, 2, 3, 4]
    assert (by_minute[0]["close"], by_minute[0]["updated_at"]) == (Decimal("187.10"), later)
    assert by_minute[0]["ingested_at"] == ACCEPTED
    assert by_minute[1]["updated_at"] == ACCEPTED
    assert by_minute[2]["close"] == Decimal("187.30")


async def test_conflicts_make_the_sink_skip_the_fast_path_for_a_while(pool: DbPool) -> None:
    """A replay of existing bars pays a failed COPY once per growing number of
    batches (1, 2, 4... up to 64); a fast success resets it."""
    sink = BarsSink(pool)
    await sink.write([row(0)])
    attempts = []
    for i in range(12):  # each batch holds an existing key
        before = sink.stats.conflicts
        await sink.write([row(0, received_at=ACCEPTED + timedelta(seconds=i + 1)), row(100 + i)])
        attempts.append(sink.stats.conflicts - before)
    # tried at batches 0, 2, 5 (after skipping 1, then 2), 10 (after skipping 4)
    assert attempts == [1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    assert sink.stats.failed_copies == 1  # later tries looked up their first key instead
    assert sink.stats.merged_batches == 12
    for i in range(9):  # new keys only: tried again after the 8 skipped batches, then reset
        await sink.write([row(200 + i)])
    assert sink.stats.copied_batches == 1 + 2  # the first batch, then batches 8 and 9
    assert sink.stats.failed_copies == 1
    assert len(await stored(pool)) == 1 + 12 + 9


async def test_a_check_violation_in_the_fast_path_is_raised_not_merged(pool: DbPool) -> None:
    """A CHECK violation inside the fast COPY is the poison path's business (the writer
    bisects): raised as it is, non-retryable, not taken for a conflict."""
    sink = BarsSink(pool)
    with pytest.raises(asyncpg.CheckViolationError) as info:
        await sink.write([row(0), row(1, low="999")])
    assert not is_retryable(info.value)
    assert (sink.stats.conflicts, sink.stats.merged_batches) == (0, 0)
    assert await stored(pool) == []
    await sink.write([row(0)])  # the fast path is still on
    assert sink.stats.copied_batches == 1


async def test_a_conflict_and_a_check_violation_in_one_batch(pool: DbPool) -> None:
    sink = BarsSink(pool)
    await sink.write([row(0)])
    with pytest.raises(asyncpg.CheckViolationError):
        await sink.write([row(0, close="187.30", received_at=ACCEPTED + timedelta(seconds=1)),
                          row(1, low="999")])  # fmt: skip
    (only,) = await stored(pool)
    assert only["close"] == Decimal("187.02")


async def test_without_the_fast_path_every_batch_is_merged(pool: DbPool) -> None:
    sink = BarsSink(pool, fast_path=False)
    await sink.write([row(0), row(1)])
    assert (sink.stats.copied_batches, sink.stats.merged_batches) == (0, 1)
    assert len(await stored(pool)) == 2


async def test_a_failed_or_cancelled_merge_leaves_nothing_on_its_connection(
    database_url: str, pool: DbPool
) -> None:
    """The merge is one query (COPY into the staging table, then the upsert: one
    implicit transaction). Right after it fails, or is cancelled while PostgreSQL works
    on it, its connection has no transaction open and an empty staging table (checked
    on that connection before anything else runs on it), and the next batch on it
    writes its own rows, not the refused or abandoned ones."""
    conn = await asyncpg.connect(database_url)
    watch = await asyncpg.connect(database_url)
    try:
        await prepare_connection(conn)
        await watch.execute(
            """
            CREATE FUNCTION sleep_on_4242() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.volume = 4242 THEN PERFORM pg_sleep(30); END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER sleep_on_4242 BEFORE INSERT ON bars
                FOR EACH ROW EXECUTE FUNCTION sleep_on_4242();
            """
        )

        async def clean() -> bool:
            staged = await conn.fetchval("SELECT count(*) FROM bars_staging")
            return not conn.is_in_transaction() and staged == 0

        with pytest.raises(asyncpg.CheckViolationError):
            await copy_then(conn, _STAGE_AND_MERGE, encode_csv([row(0), row(1, low="999")]))
        assert await clean()

        merging = copy_then(conn, _STAGE_AND_MERGE, encode_csv([row(2), row(3, volume="4242")]))
        writing = asyncio.create_task(merging)

        async def sleeping() -> bool:
            return bool(await watch.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'PgSleep'",
                conn.get_server_pid(),
            ))  # fmt: skip

        await until(sleeping, what="the merge at work in PostgreSQL")
        writing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writing
        assert await clean()

        assert await copy_then(conn, _STAGE_AND_MERGE, encode_csv([row(4)])) == "INSERT 0 1"
        assert [r["ts"] for r in await stored(pool)] == [T0 + timedelta(minutes=4)]
    finally:
        await watch.execute(
            "DROP TRIGGER IF EXISTS sleep_on_4242 ON bars; DROP FUNCTION IF EXISTS sleep_on_4242"
        )
        await watch.close()
        await conn.close()


async def test_text_needing_csv_quoting_round_trips(pool: DbPool) -> None:
    sink = BarsSink(pool)
    odd = ["we,ird", 'quo"te', "multi\nline", ""]
    await sink.write([row(i, provider=p) for i, p in enumerate(odd)])
    assert sorted(r["provider"] for r in await stored(pool)) == sorted(odd)


async def test_bad_number_is_a_non_retryable_data_error_and_nothing_lands(pool: DbPool) -> None:
    sink = BarsSink(pool)
    with pytest.raises(asyncpg.DataError) as info:
        await sink.write([row(0), row(1, close="not-a-number")])
    assert not is_retryable(info.value)
    assert await stored(pool) == []  # the batch is all or nothing


@pytest.mark.parametrize(
    "bad",
    [
        {"low": "188"},  # low above open/close
        {"volume": "-1"},
        {"close": "187.0000000000000000001"},  # 19 decimals
        {"high": "1e25", "close": "1e24"},
    ],
)
async def test_the_table_itself_refuses_bars_outside_the_domain(
    pool: DbPool, bad: dict[str, Any]
) -> None:
    sink = BarsSink(pool)
    with pytest.raises(asyncpg.CheckViolationError) as info:
        await sink.write([row(0, **bad)])
    assert not is_retryable(info.value)
    assert await stored(pool) == []


async def test_lost_connection_is_retryable(pool: DbPool, database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        pid = conn.get_server_pid()
        async with pool.acquire() as killer:
            await killer.execute("SELECT pg_terminate_backend($1)", pid)
        lost = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
        with pytest.raises(lost) as info:
            await conn.fetchval("SELECT 1")
        assert is_retryable(info.value)
    finally:
        conn.terminate()


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (asyncpg.exceptions.SerializationError("could not serialize"), True),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), True),
        (asyncpg.exceptions.TooManyConnectionsError("too many clients"), True),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), True),
        (asyncpg.exceptions.QueryCanceledError("statement timeout"), True),
        (asyncpg.exceptions.ConnectionDoesNotExistError("closed"), True),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (asyncpg.exceptions.NumericValueOutOfRangeError("overflow"), False),
        (asyncpg.exceptions.NotNullViolationError("null"), False),
        (asyncpg.exceptions.InvalidTextRepresentationError("bad"), False),
        (asyncpg.exceptions.RaiseError("a trigger refused the row"), False),
        (asyncpg.exceptions.AssertError("a trigger's ASSERT"), False),
        (asyncpg.exceptions.ProgramLimitExceededError("index row size exceeds"), False),
        (ValueError("bug"), False),
    ],
)
def test_error_classification(exc: BaseException, retryable: bool) -> None:
    assert is_retryable(exc) is retryable


def test_csv_fast_path_output() -> None:
    out = encode_csv([row(0)]).decode()
    assert out == (
        "default,ibkr,AAPL,1m,2024-01-02T14:30:00+00:00,187.15,187.40,186.90,187.02,120034,f,"
        "2026-01-01T00:00:00+00:00,2026-01-01T00:00:00+00:00\n"
    )
    assert encode_csv([row(0, tenant="desk-a")]).decode().startswith("desk-a,ibkr,AAPL,")
