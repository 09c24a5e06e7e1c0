"""Read throughput: exports, cursor pages and latest against PostgreSQL's own COPY.

    DATABASE_URL=postgresql://... .venv/bin/python bench/read.py [--bars 300000]
        [--rounds 3] [--big 10000000] [--symbols 500]

Into ``DATABASE_URL`` (migrated; its bars of the providers ``bench-read-*`` are
replaced) it writes ``--bars`` 1-minute bars of one symbol, and 500 symbols of 20 bars
each; then it starts ``mds-store serve`` in its own process and measures, each case
``--rounds`` times alternating, the best kept (the machine is shared):

- CSV: ``curl -H 'Accept: text/csv' > /dev/null`` of the symbol's bars, against the
  baseline ``psql``: ``\\copy (<the service's exact SELECT, same formatting>) TO STDOUT
  WITH CSV HEADER > /dev/null``, as the service's reader role with the tenant set (the
  same row-level security);
- NDJSON: the same with ``Accept: application/x-ndjson`` against psql copying the
  service's NDJSON SELECT out;
- JSON pages of 10,000 through the cursor (a client that reads each page's ``next``)
  against the CSV stream;
- ``GET /v1/bars/latest`` of 500 symbols: the median and worst of 20 requests;
- with ``--big N``: N bars streamed as CSV while the service's RSS is sampled: its
  growth (the largest RSS during the stream less the RSS before it).

Prints rows/s and the ratios the targets are stated in (issue 21: CSV >= 0.8 of psql,
NDJSON >= 0.8, pages >= 0.5 of the CSV stream, RSS growth < 50 MB, latest < 20 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).parent))
from control import Store

from market_data_store.storage import BARS, ReadQuery
from market_data_store.storage.reads import statements

PROVIDER = "bench-read"
WIDE = "bench-read-wide"
SYMBOL = "AAPL"
BIG = "bench-read-big"


def insert(provider: str, symbols: int, per_symbol: int) -> str:
    """SQL writing ``symbols`` x ``per_symbol`` synthetic 1m bars of ``provider``."""
    return f"""
INSERT INTO bars (tenant_id, provider, symbol, resolution, ts, open, high, low, close,
                  volume, delayed)
SELECT 'default', '{provider}', CASE WHEN {symbols} = 1 THEN '{SYMBOL}' ELSE 'S' || s END,
       '1m', timestamptz '2020-01-01T00:00:00Z' + m * interval '1 minute',
       round(100 + (m % 1000) / 100.0, 2), round(101 + (m % 1000) / 100.0, 2),
       round(99 + (m % 1000) / 100.0, 2),
       round(100.5 + (m % 1000) / 100.0, 2), 1000 + m % 5000, false
FROM generate_series(1, {symbols}) AS s, generate_series(0, {per_symbol} - 1) AS m
"""


async def prepare(url: str, bars: int, big: int | None) -> str:
    """Write the bench's bars; this database's reader role."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM bars WHERE provider LIKE 'bench-read%'")
        await conn.execute(insert(PROVIDER, 1, bars))
        await conn.execute(insert(WIDE, 500, 20))
        if big:
            await conn.execute(insert(BIG, 1, big))
        await conn.execute("VACUUM ANALYZE bars")
        return str(await conn.fetchval("SELECT name FROM mds_reader_role"))
    finally:
        await conn.close()


async def literal_sql(url: str, provider: str, fmt: str) -> str:
    """The service's exact SELECT of ``provider``'s bars in ``fmt``, its parameters
    inlined as the service's COPY inlines them (asyncpg's mogrify)."""
    from asyncpg import utils

    (statement,) = statements(
        BARS,
        ReadQuery("default", provider, fixed=("1m",)),
        fmt,  # type: ignore[arg-type]
    )
    conn = await asyncpg.connect(url)
    try:
        return str(await utils._mogrify(conn, statement.sql, (*statement.args[:-1], None)))
    finally:
        await conn.close()


def psql_copy(url: str, role: str, select: str, options: str) -> float:
    """Seconds psql takes to copy ``select`` out to /dev/null as the reader role."""
    script = (
        f"SET ROLE {role};\nSET app.tenant_id = 'default';\n"
        f"\\copy ({' '.join(select.split())}) TO STDOUT WITH ({options})\n"
    )
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url],
            input=script.encode(),
            stdout=sink,
            check=True,
        )
    return time.perf_counter() - started


def curl(url: str, accept: str) -> tuple[float, int]:
    """Seconds ``curl > /dev/null`` takes for ``url``, and the bytes it read."""
    started = time.perf_counter()
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "-f",
            "-H",
            f"Accept: {accept}",
            "-o",
            os.devnull,
            "-w",
            "%{size_download}",
            url,
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started, int(done.stdout)


class _Next(msgspec.Struct):
    next: str | None = None
    count: int = 0


def pages(base: str, provider: str) -> tuple[float, int]:
    """Seconds to read ``provider``'s bars as JSON pages of 10,000 through the cursor."""
    decoder = msgspec.json.Decoder(_Next)
    params = {"provider": provider, "resolution": "1m", "limit": "10000"}
    rows = 0
    started = time.perf_counter()
    with httpx.Client(base_url=base, timeout=60) as http:
        while True:
            answer = http.get("/v1/bars", params=params)
            answer.raise_for_status()
            page = decoder.decode(answer.content)
            rows += page.count
            if page.next is None:
                break
            params["cursor"] = page.next
    return time.perf_counter() - started, rows


def latest(base: str) -> list[float]:
    symbols = ",".join(f"S{s}" for s in range(1, 501))
    params = {"provider": WIDE, "resolution": "1m", "symbols": symbols}
    times = []
    with httpx.Client(base_url=base, timeout=10) as http:
        http.get("/v1/bars/latest", params=params).raise_for_status()  # warm
        for _ in range(20):
            started = time.perf_counter()
            answer = http.get("/v1/bars/latest", params=params)
            times.append(time.perf_counter() - started)
            answer.raise_for_status()
            assert answer.json()["count"] == 500, answer.text
    return times


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def big_stream(base: str, pid: int, rows: int) -> tuple[float, int, int]:
    """Seconds to stream the big provider's bars as CSV, the RSS before, the largest RSS."""
    before = rss(pid)
    url = f"{base}/v1/bars?provider={BIG}&resolution=1m"
    process = subprocess.Popen(
        ["curl", "-sS", "-f", "-H", "Accept: text/csv", "-o", os.devnull, url]
    )
    started = time.perf_counter()
    peak = before
    while process.poll() is None:
        peak = max(peak, rss(pid))
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    assert process.returncode == 0
    return elapsed, before, peak


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big", type=int, default=None, help="also stream this many bars")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("set DATABASE_URL to a migrated database")
    for tool in ("psql", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed")
    print(f"writing {args.bars:,} bars (and {args.big or 0:,}) ...", flush=True)
    role = await prepare(url, args.bars, args.big)
    csv_sql = await literal_sql(url, PROVIDER, "csv")
    ndjson_sql = await literal_sql(url, PROVIDER, "ndjson")
    query = f"provider={PROVIDER}&resolution=1m"
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(url, tmp, "read", {})
        try:
            await store.ready()
            base = store.base
            for _ in range(args.rounds):
                cases: dict[str, Callable[[], float]] = {
                    "psql csv": lambda: psql_copy(url, role, csv_sql, "FORMAT csv, HEADER"),
                    "http csv": lambda: curl(f"{base}/v1/bars?{query}", "text/csv")[0],
                    "psql ndjson": lambda: psql_copy(
                        url, role, ndjson_sql, "FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02'"
                    ),
                    "http ndjson": lambda: curl(f"{base}/v1/bars?{query}", "application/x-ndjson")[
                        0
                    ],
                    "http pages": lambda: pages(base, PROVIDER)[0],
                }
                for name, case in cases.items():
                    best[name] = min(best.get(name, float("inf")), case())
            rate = {name: args.bars / seconds for name, seconds in best.items()}
            for name, value in rate.items():
                print(f"{name:12} {value:12,.0f} rows/s")
            for label, over, under in (
                ("CSV stream / psql COPY CSV", "http csv", "psql csv"),
                ("NDJSON stream / psql COPY NDJSON", "http ndjson", "psql ndjson"),
                ("JSON pages (cursor) / CSV stream", "http pages", "http csv"),
            ):
                print(f"{label + ':':35} {rate[over] / rate[under]:.2f}")
            times = latest(base)
            print(
                f"latest of 500 symbols: median {statistics.median(times) * 1000:.1f} ms, "
                f"worst {max(times) * 1000:.1f} ms (20 requests)"
            )
            if args.big:
                seconds, before, peak = big_stream(base, store.process.pid, args.big)
                print(
                    f"{args.big:,} bars as CSV in {seconds:.1f} s ({args.big / seconds:,.0f} "
                    f"rows/s); service RSS {before / 2**20:.0f} MB before, "
                    f"{peak / 2**20:.0f} MB at most: +{(peak - before) / 2**20:.1f} MB"
                )
        finally:
            store.stop()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM bars WHERE provider LIKE 'bench-read%'")
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
