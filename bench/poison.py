"""What poison rows cost the writers: a 20,000-bar ingest with k of them, against the same
ingest without (the baseline, measured in the same run).

    .venv/bin/python bench/poison.py [--bars 20000] [--poison 1,10,100] [--repeat 3] [--truncate]

Through the real ``WriteCoordinator`` (the service's shape: 4 workers, batches of
5,000, retries classified by ``is_retryable``, a dead-letter file) and ``BarsSink``
into PostgreSQL (``DATABASE_URL`` with ``--truncate``: its ``bars`` table is
emptied before each run; else an embedded PostgreSQL started for the run). The
poison rows are those of issue 8: a ``ts`` offset of +20:00, which PostgreSQL
refuses (``time zone displacement out of range``), spread evenly through the
ingest. Timed from the first submit until every bar is written or dead-lettered;
the best of ``--repeat`` runs is kept. Prints the sink writes (attempts, refused
ones included), the seconds, and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg

from market_data_store.coordinator import DeadLetterQueue, RetryPolicy, WriteCoordinator
from market_data_store.storage import (
    BarRow,
    BarsSink,
    apply_migrations,
    is_retryable,
    open_pool,
    prepare_connection,
)
from market_data_store.storage.embedded import EmbeddedPostgres

T0 = datetime(2024, 1, 2, tzinfo=UTC)
BEYOND = timezone(timedelta(hours=20))  # RFC 3339 allows it, PostgreSQL does not


class CountingSink:
    def __init__(self, inner: BarsSink) -> None:
        self.inner = inner
        self.writes = 0

    async def write(self, batch: Sequence[BarRow]) -> None:
        self.writes += 1
        await self.inner.write(batch)


def poisoned(ts: datetime) -> datetime:
    """``ts`` a second later at +20:00: a new instant, so the sink cannot reuse the
    UTC text of the row before (it prints one instant once, whatever its offset)."""
    return (ts + timedelta(seconds=1)).astimezone(BEYOND)


def make_bars(n: int, poison: int) -> list[BarRow]:
    bad = {i * n // poison + n // (2 * poison) for i in range(poison)} if poison else set()
    now = datetime.now(UTC)
    rows = []
    for i in range(n):
        ts = T0 + timedelta(minutes=i // 100)
        rows.append(
            BarRow(
                provider="bench", symbol=f"S{i % 100}", resolution="1m",
                ts=poisoned(ts) if i in bad else ts, open="1.10", high="1.30",
                low="1.00", close="1.20", volume=str(i), delayed=False, received_at=now,
            )
        )  # fmt: skip
    return rows


async def reset(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn)
        await conn.execute("TRUNCATE bars")
    finally:
        await conn.close()


async def run(url: str, rows: list[BarRow], tmp: Path) -> tuple[int, float, int]:
    """(sink writes, seconds, rows dead-lettered) of one ingest."""
    await reset(url)
    pool = await open_pool(url, min_size=4, max_size=4, init=prepare_connection)
    sink = CountingSink(BarsSink(pool))
    dlq = tmp / f"dlq-{time.monotonic_ns()}.ndjson"
    try:
        started = time.perf_counter()
        async with WriteCoordinator[BarRow](
            sink=sink, capacity=max(len(rows), 10_000), workers=4, batch_size=5000,
            retry_policy=RetryPolicy(classify_retryable=is_retryable),
            dead_letter_queue=DeadLetterQueue[BarRow](dlq),
        ) as coord:  # fmt: skip
            await coord.submit_many(rows)
            await coord.wait_idle()
            elapsed = time.perf_counter() - started
            dead = coord.stats.dead_lettered
    finally:
        await pool.close()
    return sink.writes, elapsed, dead


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bars", type=int, default=20_000)
    parser.add_argument(
        "--poison", default="1,10,100", help="poison rows per ingest, comma-separated"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--truncate", action="store_true", help="with DATABASE_URL: allow emptying its bars table"
    )
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if url and not args.truncate:
        sys.exit(
            "bench/poison.py empties the bars table of DATABASE_URL; pass --truncate if that "
            "is what you want, or unset DATABASE_URL to run on an embedded PostgreSQL"
        )
    ks = [0, *(int(k) for k in args.poison.split(","))]
    with tempfile.TemporaryDirectory(prefix="mds-bench-") as tmp:
        embedded = None
        if not url:
            embedded = EmbeddedPostgres(Path(tmp) / "pgdata")
            url = asyncio.run(embedded.start())
        try:
            best: dict[int, tuple[int, float, int]] = {}
            for _ in range(args.repeat):  # cases alternate within a round: drift hits all
                for k in ks:
                    writes, seconds, dead = asyncio.run(
                        run(url, make_bars(args.bars, k), Path(tmp))
                    )
                    assert dead == k, (dead, k)
                    if k not in best or seconds < best[k][1]:
                        best[k] = (writes, seconds, dead)
        finally:
            if embedded is not None:
                asyncio.run(embedded.stop())
    base = best[0][1]
    print(f"{args.bars:,} bars, 4 workers, batches of 5,000; best of {args.repeat}")
    print(f"{'poison':>7} {'writes':>7} {'seconds':>8} {'x baseline':>10}")
    for k in ks:
        writes, seconds, _ = best[k]
        print(f"{k:>7} {writes:>7} {seconds:>8.3f} {seconds / base:>10.2f}")


if __name__ == "__main__":
    main()
