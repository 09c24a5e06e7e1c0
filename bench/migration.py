"""How long migration 0004 (tenants) takes on a table of N bars, and how long a write
waits for it.

    .venv/bin/python bench/migration.py [--rows 1000000]

On a database of its own (``DATABASE_URL``'s server, a database made and dropped for
the run; an embedded PostgreSQL without it): the migrations before 0004, ``--rows``
bars (1,000 symbols of 1-minute bars, generated in SQL), then 0004 timed while a
writer COPYs a batch of 1,000 bars into the table every 50 ms from before it starts:
the longest a batch waited, and that every batch is there afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from market_data_store.storage import apply_migrations, load_migrations
from market_data_store.storage.embedded import EmbeddedPostgres

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


async def writer(url: str, stop: asyncio.Event, waits: list[float], batches: list[int]) -> None:
    conn = await asyncpg.connect(url)
    try:
        n = 0
        while not stop.is_set():
            rows = [
                (
                    "writer",
                    f"W{n}",
                    "1m",
                    f"2030-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
                    1,
                    2,
                    1,
                    1,
                    1,
                )
                for i in range(1000)
            ]
            payload = "".join(",".join(map(str, r)) + "\n" for r in rows).encode()
            began = time.perf_counter()
            await conn.copy_to_table(
                "bars",
                source=memoryview(payload),  # type: ignore[arg-type]
                columns=[
                    "provider",
                    "symbol",
                    "resolution",
                    "ts",
                    "open",
                    "high",
                    "low",
                    "close",
                    "volume",
                ],
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
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        reader = "mds_reader_" + hashlib.md5(name.encode()).hexdigest()[:16]
        await admin.execute(f'DROP ROLE IF EXISTS "{reader}"')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    asyncio.run(amain(os.environ.get("DATABASE_URL"), args.rows))


async def amain(url: str | None, rows: int) -> None:
    if url:
        await run(url, rows)
        return
    with tempfile.TemporaryDirectory(prefix="mds-bench-pg-") as folder:
        embedded = EmbeddedPostgres(Path(folder) / "pgdata")
        try:
            await run(await embedded.start(), rows)
        finally:
            await embedded.stop()


if __name__ == "__main__":
    main()
