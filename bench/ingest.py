"""Ingest throughput: HTTP path against the in-process upsert ceiling and psql \\copy.

    .venv/bin/python bench/ingest.py [--symbols 500] [--minutes 2000] [--per-request 5000]
                                     [--clients 4] [--profile profile.txt]

Same rows (symbols x minutes synthetic 1m bars) three ways, each into an
emptied ``bars`` table of one database (``DATABASE_URL``, else an embedded
PostgreSQL started for the run):

1. ceiling: in-process, one connection, ``BarsSink`` (CSV COPY into a staging
   table, then ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``), 5,000 rows per write;
2. ``psql \\copy`` of the same rows as CSV straight into ``bars`` (if psql exists);
3. HTTP: ``mds-store serve`` in its own process; ``--clients`` concurrent clients POST
   ``/v1/bars`` (JSON, ``--per-request`` bars each); the last request of each client
   uses ``?wait=commit`` and, commits being tracked in order, the clock stops when
   all of them answered: every row is committed then.

Prints rows/s for each and the ratios. ``--profile FILE`` records the service
with py-spy during the HTTP phase (needs py-spy; run as root).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import msgspec

from market_data_store.storage import BarRow, BarsSink, apply_migrations, open_pool
from market_data_store.storage.bars_sink import COLUMNS, encode_csv
from market_data_store.storage.embedded import EmbeddedPostgres

T0 = datetime(2024, 1, 2, tzinfo=UTC)


def make_rows(symbols: int, minutes: int) -> list[BarRow]:
    received = datetime.now(UTC)
    rows = []
    for m in range(minutes):
        ts = T0 + timedelta(minutes=m)
        for s in range(symbols):
            price = 100 + (s % 50) + (m % 60) / 100
            rows.append(
                BarRow("bench", f"SYM{s:04d}", "1m", ts, f"{price:.2f}", f"{price + 0.5:.2f}",
                       f"{price - 0.5:.2f}", f"{price + 0.1:.2f}", str(1000 + m), False, received)
            )  # fmt: skip
    return rows


def request_bodies(rows: list[BarRow], per_request: int) -> list[bytes]:
    encoder = msgspec.json.Encoder()
    bodies = []
    for lo in range(0, len(rows), per_request):
        bars = [
            {"symbol": r.symbol, "ts": r.ts, "open": r.open, "high": r.high, "low": r.low,
             "close": r.close, "volume": r.volume, "resolution": r.resolution}
            for r in rows[lo : lo + per_request]
        ]  # fmt: skip
        bodies.append(encoder.encode({"provider": "bench", "bars": bars}))
    return bodies


async def reset(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn)
        await conn.execute("TRUNCATE bars")
        await conn.execute("VACUUM ANALYZE bars")
    finally:
        await conn.close()


async def count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM bars"))
    finally:
        await conn.close()


async def ceiling(url: str, rows: list[BarRow], per_write: int) -> float:
    await reset(url)
    pool = await open_pool(url, min_size=1, max_size=1)
    sink = BarsSink(pool)
    started = time.perf_counter()
    for lo in range(0, len(rows), per_write):
        await sink.write(rows[lo : lo + per_write])
    elapsed = time.perf_counter() - started
    await pool.close()
    assert await count(url) == len(rows)
    return len(rows) / elapsed


def psql_copy(url: str, rows: list[BarRow], tmp: Path) -> float | None:
    if not shutil.which("psql"):
        return None
    asyncio.run(reset(url))
    csv_path = tmp / "bars.csv"
    csv_path.write_bytes(encode_csv(rows))
    columns = ",".join(c if c != "received_at" else "updated_at" for c in COLUMNS)
    started = time.perf_counter()
    subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-qc",
         f"\\copy bars({columns}) FROM '{csv_path}' WITH (FORMAT csv)"],
        check=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    assert asyncio.run(count(url)) == len(rows)
    return len(rows) / elapsed


def _py_spy() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else "py-spy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def post_all(base: str, bodies: list[bytes], clients: int) -> float:
    headers = {"content-type": "application/json"}
    shares = [bodies[i::clients] for i in range(clients)]

    async def client(share: list[bytes]) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=300) as http:
            for n, body in enumerate(share):
                last = n == len(share) - 1
                params = {"wait": "commit"} if last else {}
                response = await http.post("/v1/bars", content=body, headers=headers, params=params)
                if response.status_code == 503:  # backpressure: honour Retry-After
                    await asyncio.sleep(int(response.headers["retry-after"]))
                    response = await http.post(
                        "/v1/bars", content=body, headers=headers, params=params
                    )
                expected = 201 if last else 202
                assert response.status_code == expected, response.text

    started = time.perf_counter()
    await asyncio.gather(*(client(s) for s in shares))
    return time.perf_counter() - started


def http_path(url: str, rows: int, bodies: list[bytes], clients: int, profile: str | None) -> float:
    asyncio.run(reset(url))
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="mds-bench-") as tmp:
        env = {**os.environ, "DATABASE_URL": url,
               "MDS_COORDINATOR_DEAD_LETTER_PATH": f"{tmp}/dlq.ndjson"}  # fmt: skip
        cmd = [sys.executable, "-m", "market_data_store.cli", "serve", "--port", str(port)]
        server = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        profiler = None
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit("service did not become ready")
                time.sleep(0.2)
            if profile:
                profiler = subprocess.Popen(
                    [_py_spy(), "record", "--format", "raw", "-o", profile, "-r", "200",
                     "-p", str(server.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1)
            elapsed = asyncio.run(post_all(base, bodies, clients))
        finally:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(timeout=60)
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    assert asyncio.run(count(url)) == rows
    return rows / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--minutes", type=int, default=2000)
    parser.add_argument("--per-request", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--profile", help="py-spy raw output file for the HTTP phase")
    args = parser.parse_args()

    rows = make_rows(args.symbols, args.minutes)
    bodies = request_bodies(rows, args.per_request)
    with tempfile.TemporaryDirectory(prefix="mds-bench-") as tmp:
        url = os.environ.get("DATABASE_URL")
        embedded = None
        if not url:
            embedded = EmbeddedPostgres(Path(tmp) / "pgdata")
            url = asyncio.run(embedded.start())
        try:
            top = asyncio.run(ceiling(url, rows, args.per_request))
            raw = psql_copy(url, rows, Path(tmp))
            via_http = http_path(url, len(rows), bodies, args.clients, args.profile)
        finally:
            if embedded is not None:
                asyncio.run(embedded.stop())

    n = len(rows)
    print(f"rows: {n:,} ({args.symbols} symbols x {args.minutes} minutes), "
          f"{args.per_request:,} per request, {args.clients} clients")  # fmt: skip
    print(f"in-process ceiling (COPY->staging->upsert, 1 conn): {top:>10,.0f} rows/s")
    if raw is not None:
        print(f"psql \\copy straight into bars                     : {raw:>10,.0f} rows/s")
    print(f"HTTP POST /v1/bars until committed                : {via_http:>10,.0f} rows/s")
    print(
        f"HTTP / ceiling: {via_http / top:.1%}"
        + (f"   ceiling / \\copy: {top / raw:.1%}" if raw else "")
    )


if __name__ == "__main__":
    main()
