"""Ingest throughput: the HTTP path against psql \\copy and the in-process sink.

    .venv/bin/python bench/ingest.py [--symbols 500] [--minutes 2000] [--per-request 5000]
                                     [--clients 4] [--profile profile.txt] [--truncate]

The same rows (symbols x minutes synthetic 1m bars) several ways into one
database (``DATABASE_URL`` with ``--truncate``: its ``bars`` table is emptied
again and again; else an embedded PostgreSQL started for the run):

- in-process, one connection, 5,000 rows per write: ``BarsSink`` with the fast
  path off (COPY into a staging table, then the upsert: 0.4.0's only path) and on
  (COPY straight into ``bars``), for new rows and for a replay of existing ones;
- ``psql \\copy`` of the same rows as CSV straight into ``bars`` (if psql exists):
  what PostgreSQL itself takes;
- HTTP: ``mds-store serve`` in its own process; ``--clients`` concurrent clients
  POST ``/v1/bars`` (``--per-request`` bars each): new rows as JSON and as
  MessagePack, 10 % existing keys (every 10th row stored before, with another
  close: every batch conflicts), and a full replay; then new rows and a replay
  again with ``database.copy_fast_path = false`` (0.4.0's writes), and new rows on a
  store with two tenants (``auth.tenants``), half the clients each. The last request
  of each client uses ``?wait=commit``; commits being tracked in order, the clock
  stops when all of them answered: every row is committed then. Replays start
  from a vacuumed, analysed table.

Prints rows/s for each and the ratios that matter. New rows by ``psql \\copy`` and
over HTTP (JSON, MessagePack, fast path off, two tenants) run ``--repeat`` rounds, the cases
alternating within a round, the best of each kept: on a shared machine one run
swings by 10 %. ``--profile FILE`` records the
service with py-spy during the first HTTP case (needs py-spy; run as root).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from typing import Any

import asyncpg
import httpx
import msgspec

from market_data_store.ingest import FactDecoder
from market_data_store.storage import (
    FACT_TABLES,
    BarRow,
    BarsSink,
    apply_migrations,
    open_pool,
)
from market_data_store.storage.bars_sink import (
    _MERGE,
    COLUMNS,
    STAGING,
    _source,
    encode_csv,
    latest_versions,
    prepare_connection,
)
from market_data_store.storage.embedded import EmbeddedPostgres
from market_data_store.storage.facts import encode_rows

T0 = datetime(2024, 1, 2, tzinfo=UTC)
JSON, MSGPACK = "application/json", "application/msgpack"


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


def request_bodies(rows: list[BarRow], per_request: int, media: str = JSON) -> list[bytes]:
    encoder = msgspec.json.Encoder() if media == JSON else msgspec.msgpack.Encoder()
    bodies = []
    for lo in range(0, len(rows), per_request):
        bars = [
            {"symbol": r.symbol, "ts": r.ts.isoformat(), "open": r.open, "high": r.high,
             "low": r.low, "close": r.close, "volume": r.volume, "resolution": r.resolution}
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


async def settle(url: str) -> None:
    """After a load, before a replay: the same table state for every replay case."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE bars")
    finally:
        await conn.close()


async def count(url: str, table: str = "bars") -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def in_process(url: str, rows: list[BarRow], per_write: int, *, fast_path: bool) -> float:
    pool = await open_pool(url, min_size=1, max_size=1, init=prepare_connection)
    sink = BarsSink(pool, fast_path=fast_path)
    started = time.perf_counter()
    for lo in range(0, len(rows), per_write):
        await sink.write(rows[lo : lo + per_write])
    elapsed = time.perf_counter() - started
    await pool.close()
    assert await count(url) == len(rows)
    return len(rows) / elapsed


async def preload_every_tenth(url: str, rows: list[BarRow], per_write: int) -> None:
    """Every 10th row stored before, with another close (still within high/low)."""
    earlier = rows[0].received_at - timedelta(seconds=1)
    changed = [msgspec.structs.replace(r, close=r.open, received_at=earlier) for r in rows[::10]]
    pool = await open_pool(url, min_size=1, max_size=1, init=prepare_connection)
    sink = BarsSink(pool)
    for lo in range(0, len(changed), per_write):
        await sink.write(changed[lo : lo + per_write])
    await pool.close()


# The merge written as MERGE (PostgreSQL 15+), measured against INSERT ... ON CONFLICT
# for the mixed case: the sink keeps whichever wins (ON CONFLICT, by about 2x here).
MERGE_VARIANT = f"""
MERGE INTO bars AS b USING {STAGING} AS s
ON b.tenant_id = s.tenant_id AND b.provider = s.provider AND b.symbol = s.symbol
   AND b.resolution = s.resolution AND b.ts = s.ts
WHEN MATCHED AND s.updated_at >= b.updated_at
     AND (b.open, b.high, b.low, b.close, b.volume, b.delayed)
         IS DISTINCT FROM (s.open, s.high, s.low, s.close, s.volume, s.delayed) THEN
  UPDATE SET open = s.open, high = s.high, low = s.low, close = s.close, volume = s.volume,
             delayed = s.delayed, updated_at = s.updated_at
WHEN NOT MATCHED THEN
  INSERT ({", ".join(COLUMNS)}) VALUES ({", ".join("s." + c for c in COLUMNS)})
"""


async def mixed_merge(url: str, rows: list[BarRow], per_write: int, statement: str) -> float:
    """10 % existing keys, every batch staged and merged with ``statement``."""
    await reset(url)
    await preload_every_tenth(url, rows, per_write)
    conn = await asyncpg.connect(url)
    try:
        await prepare_connection(conn)
        started = time.perf_counter()
        for lo in range(0, len(rows), per_write):
            payload = encode_csv(latest_versions(rows[lo : lo + per_write]))
            async with conn.transaction():
                await conn.copy_to_table(
                    STAGING, source=_source(payload), columns=COLUMNS, format="csv"
                )
                await conn.execute(statement)
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    assert await count(url) == len(rows)
    return len(rows) / elapsed


async def server_version(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SHOW server_version_num"))
    finally:
        await conn.close()


def psql_copy(url: str, rows: list[BarRow], tmp: Path) -> float | None:
    if not shutil.which("psql"):
        return None
    asyncio.run(reset(url))
    csv_path = tmp / "bars.csv"
    csv_path.write_bytes(encode_csv(rows))
    started = time.perf_counter()
    subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-qc",
         f"\\copy bars({','.join(COLUMNS)}) FROM '{csv_path}' WITH (FORMAT csv)"],
        check=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    assert asyncio.run(count(url)) == len(rows)
    return len(rows) / elapsed


# -- the other kinds (options, quotes, trades, fundamentals, news) -------------------------


def kind_items(kind: str, n: int) -> list[dict[str, Any]]:
    """``n`` items of ``kind``, each its own key: 500 symbols, then time steps."""
    made: list[dict[str, Any]] = []
    for i in range(n):
        s, step = i % 500, i // 500
        at = (T0 + timedelta(seconds=step)).isoformat()
        price = f"{100 + s % 50 + (step % 60) / 100:.2f}"
        if kind == "options":  # a chain: 2 types x 20 strikes per symbol and snapshot time
            at = (T0 + timedelta(minutes=step // 40)).isoformat()
            item = {"symbol": f"SYM{s:04d}", "expiry": "2025-01-17T00:00:00+00:00",
                    "strike": f"{100 + (step % 20) * 2.5:.1f}", "option_type": "CP"[step // 20 % 2],
                    "ts": at, "bid": price, "ask": price, "last": price, "volume": step,
                    "open_interest": 1000 + s, "implied_volatility": "0.2512", "delta": "0.55",
                    "gamma": "0.012", "theta": "-0.034", "vega": "0.101"}  # fmt: skip
        elif kind == "quotes":
            item = {"symbol": f"SYM{s:04d}", "timestamp": at, "bid": price, "ask": price,
                    "last": price, "bid_size": 300, "ask_size": 200,
                    "volume": 1000 + step}  # fmt: skip
        elif kind == "trades":
            item = {"symbol": f"SYM{s:04d}", "ts": at, "trade_id": f"T{i}", "price": price,
                    "size": 100, "exchange": "XNAS", "conditions": ["@", "F"]}  # fmt: skip
        elif kind == "fundamentals":
            item = {"symbol": f"SYM{s:04d}", "asof": (T0 + timedelta(days=step)).date().isoformat(),
                    "total_assets": "352583000000.00", "total_liabilities": "290437000000",
                    "net_income": "96995000000", "eps": price}  # fmt: skip
        else:
            item = {"article_id": f"art-{i}", "symbols": [f"SYM{s:04d}", "SPY"],
                    "title": f"Company {s} beats estimates, shares up {price} % in early trade",
                    "url": f"https://news.example.com/markets/{i}", "published_at": at,
                    "sentiment_score": "0.25"}  # fmt: skip
        made.append(item)
    return made


def kind_bodies(kind: str, items: list[dict[str, Any]], per_request: int) -> list[bytes]:
    encoder = msgspec.json.Encoder()
    return [
        encoder.encode({"provider": "bench", kind: items[lo : lo + per_request]})
        for lo in range(0, len(items), per_request)
    ]


async def reset_table(url: str, table: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn)
        await conn.execute(f"TRUNCATE {table}")
        await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()


def kind_copy(url: str, kind: str, bodies: list[bytes], tmp: Path) -> float | None:
    """``psql \\copy`` of the rows the bodies hold, as the service writes them (COPY
    text), straight into the kind's table."""
    if not shutil.which("psql"):
        return None
    asyncio.run(reset_table(url, kind))
    decoder = FactDecoder()
    rows = [r for body in bodies for r in decoder.rows_of(kind, body, JSON, 10**6)]
    path = tmp / f"{kind}.copy"
    path.write_bytes(encode_rows(rows))
    columns = ",".join(
        f'"{c}"' for c in ("tenant_id", "provider", *FACT_TABLES[kind].names, "ingested_at",
                           "updated_at")
    )  # fmt: skip
    started = time.perf_counter()
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc",
                    f"\\copy {kind}({columns}) FROM '{path}'"], check=True)  # fmt: skip
    elapsed = time.perf_counter() - started
    assert asyncio.run(count(url, kind)) == len(rows)
    return len(rows) / elapsed


def kinds_bench(url: str, tmp: str, args: argparse.Namespace) -> dict[str, float]:
    """Each kind's new rows: ``psql \\copy`` into its table and HTTP JSON until
    committed, alternating, best of ``--repeat`` rounds (keys ``<kind> copy``,
    ``<kind> http``, ``<kind> cpu``: the service's CPU us per row)."""
    kinds = [k for k in FACT_TABLES if k in args.kinds.split(",")]
    bodies = {k: kind_bodies(k, kind_items(k, args.kind_rows), args.per_request) for k in kinds}
    results: dict[str, float] = {}
    service = Service(url, tmp)
    try:
        for _ in range(args.repeat):
            for kind in kinds:
                copied = kind_copy(url, kind, bodies[kind], Path(tmp))
                if copied is not None:
                    results[f"{kind} copy"] = max(results.get(f"{kind} copy", 0.0), copied)
                asyncio.run(reset_table(url, kind))
                rate = service.post(url, args.kind_rows, bodies[kind], JSON, args.clients,
                                    kind=kind)  # fmt: skip
                results[f"{kind} http"] = max(results.get(f"{kind} http", 0.0), rate)
                cpu = service.cpu_per_row * 1e6
                results[f"{kind} cpu"] = min(results.get(f"{kind} cpu", cpu), cpu)
    finally:
        service.stop()
    return results


def print_kinds(results: dict[str, float], args: argparse.Namespace) -> None:
    print(f"\nother kinds: {args.kind_rows:,} new rows each, {args.per_request:,} per request, "
          f"{args.clients} clients, JSON until committed; best of {args.repeat}")  # fmt: skip
    for kind in FACT_TABLES:
        if f"{kind} http" not in results:
            continue
        http, copied = results[f"{kind} http"], results.get(f"{kind} copy")
        ratio = f"{http / copied:>7.1%} of psql \\copy (target >= 80 %)" if copied else ""
        print(f"{kind:13} HTTP {http:>9,.0f} rows/s  psql \\copy "
              f"{copied or 0:>9,.0f} rows/s  {ratio}  service CPU "
              f"{results[f'{kind} cpu']:.2f} us/row")  # fmt: skip


def _py_spy() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else "py-spy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TENANTS = {
    "desk-a": "bench-token-of-desk-a-0123456789",
    "desk-b": "bench-token-of-desk-b-0123456789",
}


async def post_all(
    base: str,
    bodies: list[bytes],
    media: str,
    clients: int,
    tokens: list[str] | None = None,
    path: str = "/v1/bars",
) -> float:
    shares = [bodies[i::clients] for i in range(clients)]

    async def client(share: list[bytes], index: int) -> None:
        headers = {"content-type": media}
        if tokens:  # the clients take turns: half of them each tenant's
            headers["authorization"] = f"Bearer {tokens[index % len(tokens)]}"
        async with httpx.AsyncClient(base_url=base, timeout=300) as http:
            for n, body in enumerate(share):
                last = n == len(share) - 1
                params = {"wait": "commit"} if last else {}
                response = await http.post(path, content=body, headers=headers, params=params)
                if response.status_code == 503:  # backpressure: honour Retry-After
                    await asyncio.sleep(int(response.headers["retry-after"]))
                    response = await http.post(path, content=body, headers=headers, params=params)
                expected = 201 if last else 202
                assert response.status_code == expected, response.text

    started = time.perf_counter()
    await asyncio.gather(*(client(s, i) for i, s in enumerate(shares)))
    return time.perf_counter() - started


class Service:
    """``mds-store serve`` in its own process, on ``url``."""

    def __init__(
        self, url: str, tmp: str, *, fast_path: bool = True, tenants: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.tokens = list(tenants.values()) if tenants else None
        env = {**os.environ, "DATABASE_URL": url,
               "MDS_COORDINATOR_DEAD_LETTER_PATH": f"{tmp}/dlq-{self.port}.ndjson",
               "MDS_DATABASE_COPY_FAST_PATH": str(fast_path).lower()}  # fmt: skip
        if tenants:
            env["MDS_AUTH_TENANTS"] = json.dumps(tenants)
        cmd = [sys.executable, "-m", "market_data_store.cli", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        self.cpu_per_row = 0.0
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.base + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                sys.exit("service did not become ready")
            time.sleep(0.2)

    def post(self, url: str, rows: int, bodies: list[bytes], media: str, clients: int,
             profile: str | None = None, kind: str = "bars") -> float:  # fmt: skip
        profiler = None
        if profile:
            profiler = subprocess.Popen(
                [_py_spy(), "record", "--format", "raw", "-o", profile, "-r", "200",
                 "-p", str(self.process.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1)
        cpu_before = self.cpu_seconds()
        try:
            elapsed = asyncio.run(
                post_all(self.base, bodies, media, clients, self.tokens, f"/v1/{kind}")
            )
        finally:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(timeout=60)
        self.cpu_per_row = (self.cpu_seconds() - cpu_before) / rows
        assert asyncio.run(count(url, kind)) == rows
        return rows / elapsed

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the service process so far: steadier than a
        rate on a shared machine, as other processes' load does not add to it."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--minutes", type=int, default=2000)
    parser.add_argument("--per-request", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--profile", help="py-spy raw output file for the first HTTP case")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds of the new-row cases (psql \\copy, HTTP), the best of each kept",
    )
    parser.add_argument(
        "--kinds",
        default=",".join(FACT_TABLES),
        help="the other kinds to measure (comma-separated; '' for none)",
    )
    parser.add_argument("--kind-rows", type=int, default=200_000, help="new rows per kind")
    parser.add_argument("--skip-bars", action="store_true", help="the other kinds only")
    parser.add_argument(
        "--truncate",
        action="store_true",
        help="with DATABASE_URL: allow emptying its tables (bars, the other kinds) again and again",
    )
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if url and not args.truncate:
        sys.exit(
            "bench/ingest.py empties the bars table of DATABASE_URL, again and again; "
            "pass --truncate if that is what you want, or unset DATABASE_URL to run on "
            "an embedded PostgreSQL"
        )

    rows = make_rows(args.symbols, 1 if args.skip_bars else args.minutes)
    per = args.per_request
    json_bodies = request_bodies(rows, per)
    msgpack_bodies = request_bodies(rows, per, MSGPACK)
    n = len(rows)
    results: dict[str, float] = {}
    cpu_us: dict[str, float] = {}  # service CPU per row, new-row HTTP cases (best round)
    with tempfile.TemporaryDirectory(prefix="mds-bench-") as tmp:
        embedded = None
        if not url:
            embedded = EmbeddedPostgres(Path(tmp) / "pgdata")
            url = asyncio.run(embedded.start())
        try:
            kinds = kinds_bench(url, tmp, args) if args.kinds else {}
            if args.skip_bars:
                print_kinds(kinds, args)
                return
            asyncio.run(reset(url))
            results["upsert"] = asyncio.run(in_process(url, rows, per, fast_path=False))
            asyncio.run(settle(url))
            results["fast replay"] = asyncio.run(in_process(url, rows, per, fast_path=True))
            results["upsert replay"] = asyncio.run(in_process(url, rows, per, fast_path=False))
            asyncio.run(reset(url))
            results["fast"] = asyncio.run(in_process(url, rows, per, fast_path=True))
            results["mixed on conflict"] = asyncio.run(mixed_merge(url, rows, per, _MERGE))
            if asyncio.run(server_version(url)) >= 150000:
                results["mixed merge"] = asyncio.run(mixed_merge(url, rows, per, MERGE_VARIANT))
            on, off = Service(url, tmp), Service(url, tmp, fast_path=False)
            two = Service(url, tmp, tenants=TENANTS)
            try:
                # new rows, each way, round after round (drift hits all alike); best kept
                cases: list[tuple[str, Service | None, list[bytes], str]] = [
                    ("copy", None, [], ""),
                    ("http json", on, json_bodies, JSON),
                    ("http msgpack", on, msgpack_bodies, MSGPACK),
                    ("http json 2 tenants", two, json_bodies, JSON),
                    # last: the replays below need the table full of one tenant's rows
                    ("http json off", off, json_bodies, JSON),
                ]
                for round_ in range(args.repeat):
                    for key, service, bodies, media in cases:
                        if service is None:
                            rate = psql_copy(url, rows, Path(tmp))
                            if rate is None:
                                continue
                        else:
                            asyncio.run(reset(url))
                            profile = args.profile if round_ == 0 and key == "http json" else None
                            rate = service.post(url, n, bodies, media, args.clients, profile)
                            cpu = service.cpu_per_row * 1e6
                            cpu_us[key] = min(cpu_us.get(key, cpu), cpu)
                        results[key] = max(results.get(key, 0.0), rate)
                asyncio.run(settle(url))  # full, from the last case
                results["http replay"] = on.post(url, n, json_bodies, JSON, args.clients)
                results["http replay off"] = off.post(url, n, json_bodies, JSON, args.clients)
                asyncio.run(reset(url))
                asyncio.run(preload_every_tenth(url, rows, per))
                results["http mixed"] = on.post(url, n, json_bodies, JSON, args.clients)
            finally:
                on.stop()
                off.stop()
                two.stop()
        finally:
            if embedded is not None:
                asyncio.run(embedded.stop())

    print(f"rows: {n:,} ({args.symbols} symbols x {args.minutes} minutes), "
          f"{per:,} per request, {args.clients} clients; new rows by psql \\copy and "
          f"over HTTP: best of {args.repeat}")  # fmt: skip
    lines = [
        ("in-process, staging + upsert (0.4.0's path), new rows", "upsert"),
        ("in-process, staging + upsert, replay of existing rows", "upsert replay"),
        ("in-process, fast path, new rows", "fast"),
        ("in-process, fast path, replay of existing rows", "fast replay"),
        ("in-process, 10 % existing, staged, INSERT ON CONFLICT", "mixed on conflict"),
        ("in-process, 10 % existing, staged, MERGE", "mixed merge"),
        ("HTTP JSON, new rows, until committed", "http json"),
        ("HTTP MessagePack, new rows, until committed", "http msgpack"),
        ("HTTP JSON, 10 % existing keys, until committed", "http mixed"),
        ("HTTP JSON, replay of existing rows, until committed", "http replay"),
        ("HTTP JSON, new rows, fast path off (0.4.0's writes)", "http json off"),
        ("HTTP JSON, new rows, two tenants (half the clients each)", "http json 2 tenants"),
        ("HTTP JSON, replay, fast path off (0.4.0's writes)", "http replay off"),
    ]
    if "copy" in results:
        lines.insert(0, ("psql \\copy straight into bars", "copy"))
    for label, key in lines:
        if key not in results:
            continue
        print(f"{label:54} {results[key]:>10,.0f} rows/s")
    ratios = [
        ("HTTP JSON new / psql \\copy (target >= 80 %)", "http json", "copy"),
        ("HTTP MessagePack new / psql \\copy", "http msgpack", "copy"),
        ("HTTP MessagePack / HTTP JSON", "http msgpack", "http json"),
        ("HTTP replay / in-process upsert (target >= 100 %)", "http replay", "upsert"),
        ("HTTP replay, fast path on / off (not slower)", "http replay", "http replay off"),
        ("HTTP new, fast path on / off", "http json", "http json off"),
        ("HTTP new, two tenants / one (target >= 95 %)", "http json 2 tenants", "http json"),
        ("HTTP 10 % existing / HTTP new", "http mixed", "http json"),
        ("in-process replay, fast path on / off", "fast replay", "upsert replay"),
        ("in-process new, fast path / upsert", "fast", "upsert"),
        ("in-process 10 % existing, MERGE / ON CONFLICT", "mixed merge", "mixed on conflict"),
    ]
    for key, label in (("http json", "JSON"), ("http msgpack", "MessagePack"),
                       ("http json off", "JSON, fast path off"),
                       ("http json 2 tenants", "JSON, two tenants")):  # fmt: skip
        if key in cpu_us:
            print(f"{'service CPU per new bar, ' + label:54} {cpu_us[key]:>10.2f} us")
    for label, top, bottom in ratios:
        if top in results and bottom in results:
            print(f"{label:54} {results[top] / results[bottom]:>10.1%}")
    if kinds:
        print_kinds(kinds, args)


if __name__ == "__main__":
    main()
