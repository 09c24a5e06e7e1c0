"""The merge path's round trips: one query (COPY into the staging table, then the upsert,
as ``BarsSink`` writes now) against BEGIN, COPY, upsert, COMMIT (as it wrote before),
in the same run.

    .venv/bin/python bench/merge_query.py [--bars 100000] [--batches 100,1000,5000]
                                          [--repeat 6] [--truncate]

One connection, new bars of 16 symbols (five batches of one, then the next: what a
store with many producers writes), every batch staged and merged (the fast path off,
as ``database.copy_fast_path = false`` and every batch after a conflict). Into
``DATABASE_URL`` with ``--truncate`` (its ``bars`` table emptied before each run), else
an embedded PostgreSQL started for the run. The two forms alternate which goes first
(drift hits both alike; an even ``--repeat``), on uvloop as the service runs; prints
the median rows/s of each and of their ratio. One connection and an idle event loop:
what the round trips cost the database and the driver alone, not the wait for a busy
loop that a service adds to each (a remote database would add more).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import uvloop

from market_data_store.storage import BarRow, apply_migrations
from market_data_store.storage.bars_sink import (
    _MERGE,
    _STAGE_AND_MERGE,
    COLUMNS,
    STAGING,
    _count,
    _source,
    copy_then,
    encode_csv,
    prepare_connection,
)
from market_data_store.storage.embedded import EmbeddedPostgres

T0 = datetime(2024, 1, 2, tzinfo=UTC)
SYMBOLS = 16
RUN = 5  # batches of one symbol before the next


def payloads(bars: int, per_batch: int) -> list[bytes]:
    """``bars`` new bars as CSV batches of ``per_batch``, symbols taking turns."""
    received = datetime.now(UTC)
    minute = [0] * SYMBOLS
    out: list[bytes] = []
    for i in range(bars // per_batch):
        s = (i // RUN) % SYMBOLS
        rows = []
        for _ in range(per_batch):
            m, minute[s] = minute[s], minute[s] + 1
            p = f"{100 + m % 60}.25"
            ts = T0 + timedelta(minutes=m)
            rows.append(BarRow("bench", f"SYM{s:02d}", "1m", ts, p, p, p, p, "1000", False,
                               received))  # fmt: skip
        out.append(encode_csv(rows))
    return out


async def write(url: str, batches: list[bytes], one_query: bool) -> float:
    """Rows/s merging ``batches`` on one connection."""
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn)
        await conn.execute("TRUNCATE bars")
        await prepare_connection(conn)
        rows = 0
        started = time.perf_counter()
        for payload in batches:
            if one_query:
                status = await copy_then(conn, _STAGE_AND_MERGE, payload)
            else:
                async with conn.transaction():
                    await conn.copy_to_table(
                        STAGING, source=_source(payload), columns=COLUMNS, format="csv"
                    )
                    status = await conn.execute(_MERGE)
            rows += _count(status)
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    return rows / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--batches", default="100,1000,5000", help="rows per batch")
    parser.add_argument("--repeat", type=int, default=6)
    parser.add_argument(
        "--truncate", action="store_true", help="with DATABASE_URL: allow emptying its bars table"
    )
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if url and not args.truncate:
        sys.exit(
            "bench/merge_query.py empties the bars table of DATABASE_URL; pass --truncate if "
            "that is what you want, or unset DATABASE_URL to run on an embedded PostgreSQL"
        )
    sizes = [int(b) for b in args.batches.split(",")]
    results: dict[int, tuple[list[float], list[float]]] = {b: ([], []) for b in sizes}
    with tempfile.TemporaryDirectory(prefix="mds-bench-") as tmp:
        embedded = None
        if not url:
            embedded = EmbeddedPostgres(Path(tmp) / "pgdata")
            url = asyncio.run(embedded.start())
        try:
            for size in sizes:
                batches = payloads(args.bars, size)
                before, now = results[size]
                for round_ in range(args.repeat):
                    first = round_ % 2 == 0  # which form goes first alternates
                    for one_query in (first, not first):
                        rate = uvloop.run(write(url, batches, one_query))
                        (now if one_query else before).append(rate)
        finally:
            if embedded is not None:
                asyncio.run(embedded.stop())
    print(f"{args.bars:,} new bars, {SYMBOLS} symbols, staged + merged on one connection; "
          f"median of {args.repeat} rounds")  # fmt: skip
    print(f"{'rows/batch':>10} {'BEGIN..COMMIT':>14} {'one query':>10} {'ratio':>6} (min-max)")
    for size in sizes:
        before, now = results[size]
        ratios = [n / b for b, n in zip(before, now, strict=True)]
        median = statistics.median
        print(f"{size:>10,} {median(before):>14,.0f} {median(now):>10,.0f} "
              f"{median(ratios):>6.2f} ({min(ratios):.2f}-{max(ratios):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
