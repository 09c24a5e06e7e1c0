"""How long migration 0004 (tenants) takes on a table of N bars, how long a write
waits for it, and what the tenant costs every COPY after it.

    .venv/bin/python bench/migration.py [--rows 1000000] [--copy-rows 300000] [--rounds 3]

On a database of its own (``DATABASE_URL``'s server, a database made and dropped for
the run; an embedded PostgreSQL without it): the migrations before 0004, ``--rows``
bars (1,000 symbols of 1-minute bars, generated in SQL), then 0004 timed while a
writer COPYs a batch of 1,000 bars into the table every 50 ms from before it starts:
the longest a batch waited, and that every batch is there afterwards.

Then COPY, as the sink's fast path writes (CSV text, 5,000 rows a statement), of
``--copy-rows`` new bars into ``bars`` as 0.5.0's migrations left it and as 0004 leaves
it (the tenant one more column), alternating ``--rounds`` times: the best rows/s of
each, and their ratio (the baseline is the schema before 0004, same run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from market_data_store.storage import BarRow, apply_migrations, load_migrations
from market_data_store.storage.bars_sink import COLUMNS, encode_csv
from market_data_store.storage.embedded import EmbeddedPostgres

T0 = datetime(2024, 1, 2, tzinfo=UTC)

FILL = """
INSERT INTO bars (provider, symbol, resolution, ts, open, high, low, close, volume)
SELECT 'bench', 'S' || (i % 1000), '1m',
       timestamptz '2020-01-01T00:00:00Z' + (i / 1000) * interval '1 minute',
       1.5, 2.25, 1.25, 2, 1000
FROM generate_series(0, $1 - 1) AS i
"""


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def without_tenant(rows: list[BarRow]) -> list[bytes]:
    """The sink's CSV lines of ``rows`` as 0.5.0 wrote them (``COLUMNS[1:]``: no tenant)."""
    return [line.split(b",", 1)[1] for line in encode_csv(rows).splitlines(keepends=True)]


async def writer(url: str, stop: asyncio.Event, waits: list[float], batches: list[int]) -> None:
    """COPY 1,000 new bars every 50 ms, in the columns of the schema before 0004 (the
    table's default makes them the tenant ``default``'s after it)."""
    conn = await asyncpg.connect(url)
    received = datetime.now(UTC)
    try:
        n = 0
        while not stop.is_set():
            rows = [
                BarRow("writer", f"W{n}", "1m", T0 + timedelta(seconds=i),
                       "2", "2", "1", "1", "1", False, received)
                for i in range(1000)
            ]  # fmt: skip
            began = time.perf_counter()
            await conn.copy_to_table(
                "bars",
                source=memoryview(b"".join(without_tenant(rows))),  # type: ignore[arg-type]
                columns=COLUMNS[1:],
                format="csv",
            )
            waits.append(time.perf_counter() - began)
            batches.append(n)
            n += 1
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def run(server_url: str, rows: int) -> None:
    name = f"mds_migration_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    try:
        migrations = load_migrations()
        before = [m for m in migrations if m.version < "0004"]
        tenants = [m for m in migrations if m.version == "0004"]
        conn = await asyncpg.connect(url)
        try:
            await apply_migrations(conn, before)
            began = time.perf_counter()
            await conn.execute(FILL, rows)
            await conn.execute("VACUUM ANALYZE bars")
            print(f"filled {rows:,} bars in {time.perf_counter() - began:.1f} s")
            stop = asyncio.Event()
            waits: list[float] = []
            batches: list[int] = []
            task = asyncio.create_task(writer(url, stop, waits, batches))
            await asyncio.sleep(0.5)
            began = time.perf_counter()
            await apply_migrations(conn, tenants)
            took = time.perf_counter() - began
            await asyncio.sleep(0.5)
            stop.set()
            await task
            written = await conn.fetchval("SELECT count(*) FROM bars WHERE provider = 'writer'")
            default = await conn.fetchval("SELECT count(*) FROM bars WHERE tenant_id = 'default'")
        finally:
            await conn.close()
        print(f"migration 0004 on {rows:,} bars: {took:.2f} s")
        print(
            f"a writer COPYing 1,000 bars every 50 ms meanwhile: {len(batches)} batches, "
            f"longest wait {max(waits):.2f} s "
            f"(median {sorted(waits)[len(waits) // 2] * 1000:.1f} ms); "
            f"{written:,} of {len(batches) * 1000:,} bars stored; "
            f"{default:,} rows tenant 'default'"
        )
        if written != len(batches) * 1000:
            sys.exit("bars were lost")
    finally:
        await drop(server_url, admin, name)
        await admin.close()


async def copy_cost(server_url: str, rows: int, rounds: int) -> None:
    """COPY rows/s into bars before and after 0004, alternating; best of each."""
    received = datetime.now(UTC)
    symbols = 300
    bars = [
        BarRow("bench", f"SYM{i % symbols:04d}", "1m", T0 + timedelta(minutes=i // symbols),
               "100.5", "101", "100", "100.25", "1000", False, received)
        for i in range(rows)
    ]  # fmt: skip
    after = encode_csv(bars).splitlines(keepends=True)
    before = without_tenant(bars)
    migrations = load_migrations()
    schemas = {
        "before 0004": ([m for m in migrations if m.version < "0004"], before, COLUMNS[1:]),
        "after 0004": (migrations, after, COLUMNS),
    }
    admin = await asyncpg.connect(server_url)
    names = {key: f"mds_copy_bench_{uuid.uuid4().hex[:8]}" for key in schemas}
    best = dict.fromkeys(schemas, 0.0)
    try:
        for key, (applied, _, _) in schemas.items():
            await admin.execute(f'CREATE DATABASE "{names[key]}"')
            conn = await asyncpg.connect(with_database(server_url, names[key]))
            try:
                await apply_migrations(conn, applied)
            finally:
                await conn.close()
        for _ in range(rounds):
            for key, (_, lines, columns) in schemas.items():
                conn = await asyncpg.connect(with_database(server_url, names[key]))
                try:
                    await conn.execute("TRUNCATE bars")
                    began = time.perf_counter()
                    for first in range(0, len(lines), 5000):
                        payload = b"".join(lines[first : first + 5000])
                        await conn.copy_to_table(
                            "bars",
                            source=memoryview(payload),  # type: ignore[arg-type]
                            columns=columns,
                            format="csv",
                        )
                    best[key] = max(best[key], rows / (time.perf_counter() - began))
                finally:
                    await conn.close()
    finally:
        for name in names.values():
            await drop(server_url, admin, name)
        await admin.close()
    for key, rate in best.items():
        print(f"COPY into bars {key}: {rate:,.0f} rows/s (best of {rounds})")
    print(f"after / before: {best['after 0004'] / best['before 0004']:.3f}")


async def drop(server_url: str, admin: asyncpg.Connection[asyncpg.Record], name: str) -> None:
    """Drop a database of this bench and the reader role 0004 made for it (the name it
    recorded in ``mds_reader_role``)."""
    try:
        conn = await asyncpg.connect(with_database(server_url, name))
    except asyncpg.InvalidCatalogNameError:
        return  # never made
    try:
        reader = await conn.fetchval("SELECT name FROM mds_reader_role")
    except asyncpg.UndefinedTableError:
        reader = None  # migrated up to 0003 only
    finally:
        await conn.close()
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if reader is not None:
        await admin.execute(f'DROP ROLE IF EXISTS "{reader}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--copy-rows", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(amain(os.environ.get("DATABASE_URL"), args))


async def amain(url: str | None, args: argparse.Namespace) -> None:
    if url:
        await run(url, args.rows)
        await copy_cost(url, args.copy_rows, args.rounds)
        return
    with tempfile.TemporaryDirectory(prefix="mds-bench-pg-") as folder:
        embedded = EmbeddedPostgres(Path(folder) / "pgdata")
        try:
            server = await embedded.start()
            await run(server, args.rows)
            await copy_cost(server, args.copy_rows, args.rounds)
        finally:
            await embedded.stop()


if __name__ == "__main__":
    main()
