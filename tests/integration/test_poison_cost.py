"""What poison rows cost the writers with the real BarsSink and PostgreSQL: counted
writes. Poison rows are made by a CHECK constraint the test adds (a data error the
fast COPY meets at the row, SQLSTATE class 23)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from market_data_store.coordinator import (
    BoundedQueue,
    DeadLetterQueue,
    FeedbackBus,
    RetryPolicy,
    SinkWorker,
)
from market_data_store.storage import (
    BarRow,
    BarsSink,
    DbPool,
    apply_migrations,
    is_retryable,
    open_pool,
    prepare_connection,
)
from tests.support.bars import T0, rows

N = 5000


class CountingSink:
    def __init__(self, inner: BarsSink) -> None:
        self.inner = inner
        self.attempts = 0

    async def write(self, batch: Sequence[BarRow]) -> None:
        self.attempts += 1
        await self.inner.write(batch)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[DbPool]:
    p = await open_pool(database_url, min_size=1, max_size=2, init=prepare_connection)
    async with p.acquire() as conn:
        await apply_migrations(conn)
        await conn.execute("ALTER TABLE bars ADD CONSTRAINT no_666 CHECK (volume <> 666)")
    yield p
    await p.close()


@pytest.mark.parametrize(
    "poison", [{2500}, {0, 2500, N - 1}, {1000, 1001, 1002}], ids=["one", "spread", "adjacent"]
)
async def test_poison_rows_cost_about_log_n_writes_each(
    pool: DbPool, bus: FeedbackBus, tmp_path: Path, poison: set[int]
) -> None:
    q = BoundedQueue[BarRow](N, bus=bus)
    dlq = DeadLetterQueue[BarRow](tmp_path / "dlq.ndjson")
    sink = CountingSink(BarsSink(pool))
    worker = SinkWorker[BarRow](
        1, q, sink, batch_size=N, flush_interval=0.01,
        retry_policy=RetryPolicy(classify_retryable=is_retryable), dead_letters=dlq,
    )  # fmt: skip
    # distinct volumes from 1000 on; a poison row's is 666, which the CHECK refuses
    await q.put_many(
        rows(N, volume=lambda i: str(1000 + i), bad=poison, bad_fields={"volume": "666"})
    )
    worker.start()
    await asyncio.wait_for(q.join(), 60)
    await worker.stop()

    # one poison row in 5,000: 16 writes at most (halving both halves took 25 to 27)
    assert sink.attempts <= 1 + len(poison) * (math.ceil(math.log2(N)) + 2)
    async with pool.acquire() as conn:
        stored = await conn.fetch("SELECT volume FROM bars ORDER BY volume")
    good = [1000 + i for i in range(N) if i not in poison]
    assert [int(r["volume"]) for r in stored] == good  # each good row once
    records = await dlq.records()
    assert sorted(int(r.items[0].ts.timestamp() - T0.timestamp()) // 60 for r in records) == (
        sorted(poison)
    )
    assert all(len(r.items) == 1 and "no_666" in r.error for r in records)
