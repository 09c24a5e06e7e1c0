"""Restore throughput: POST /v1/bars with text/csv against psql \\copy of the same file.

    DATABASE_URL=... .venv/bin/python bench/restore.py --truncate [--bars 300000]
        [--per-request 5000] [--clients 4] [--repeat 3] [--no-json]

The same bars (``--bars`` synthetic 1m bars of 500 symbols) as the export of
``GET /v1/bars`` writes them (``Accept: text/csv``: a header row, ts and updated_at in
RFC 3339 UTC, prices as PostgreSQL prints them, delayed true/false) into an empty
``bars`` table (``DATABASE_URL`` with ``--truncate``: emptied again and again; else an
embedded PostgreSQL started for the run), each way:

- ``psql \\copy bars(provider, ..., updated_at) FROM file CSV HEADER``: the baseline,
  what PostgreSQL itself takes of the file (tenant and ingested_at by their defaults);
- restore over HTTP: ``mds-store serve`` in its own process, ``--clients`` concurrent
  clients POST the file in parts of ``--per-request`` rows (at most
  ``ingest.max_bars_per_request``), the header repeated in each, every one
  ``?wait=commit``: the clock stops when the last part is committed;
- (unless ``--no-json``) the same bars as JSON ingest, the same way (JSON has no
  updated_at: accepted now).

Each case runs ``--repeat`` rounds, alternating within a round, the best of each kept
(on a shared machine one run swings by 10 %). Prints rows/s, the service's CPU per row
and the ratios: restore / psql \\copy (target >= 80 %), restore / JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec
from ingest import Service, count, reset  # bench/ingest.py, beside this file

from market_data_store.ingest import CSV_COLUMNS
from market_data_store.storage.embedded import EmbeddedPostgres

T0 = datetime(2024, 1, 2, tzinfo=UTC)
HEADER = ",".join(CSV_COLUMNS)
SYMBOLS = 500


def export_lines(n: int) -> list[str]:
    """``n`` bars as the export writes them (no header), each its own key, in its order
    (provider, symbol, resolution, ts): each row's updated_at its own (a minute and some
    microseconds after its ts, as if ingested live), none shared with the row before."""
    lines = []
    minutes = -(-n // SYMBOLS)
    for i in range(n):
        s, m = i // minutes, i % minutes
        at = T0 + timedelta(minutes=m)
        ts = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        updated = (at + timedelta(minutes=1, microseconds=s + 1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        price = 100 + (s % 50) + (m % 60) / 100
        lines.append(
            f"bench,SYM{s:04d},1m,{ts},{price:.2f},{price + 0.5:.2f},{price - 0.5:.2f},"
            f"{price + 0.1:.2f},{1000 + m},false,{updated}"
        )
    return lines


def csv_parts(lines: list[str], per_request: int) -> list[bytes]:
    return [
        (HEADER + "\n" + "\n".join(lines[lo : lo + per_request]) + "\n").encode()
        for lo in range(0, len(lines), per_request)
    ]


def json_parts(lines: list[str], per_request: int) -> list[bytes]:
    parts = []
    for lo in range(0, len(lines), per_request):
        bars = []
        for line in lines[lo : lo + per_request]:
            _, symbol, resolution, ts, o, h, low, c, v, _, _ = line.split(",")
            bars.append({"symbol": symbol, "ts": ts, "open": o, "high": h, "low": low,
                         "close": c, "volume": v, "resolution": resolution})  # fmt: skip
        parts.append(msgspec.json.encode({"provider": "bench", "bars": bars}))
    return parts


def psql_copy(url: str, path: Path, n: int) -> float:
    asyncio.run(reset(url))
    started = time.perf_counter()
    subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-qc",
         f"\\copy bars({HEADER}) FROM '{path}' WITH (FORMAT csv, HEADER)"],
        check=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    assert asyncio.run(count(url)) == n
    return n / elapsed


async def post_parts(base: str, parts: list[bytes], media: str, clients: int) -> float:
    """Every part ``?wait=commit`` (a 503 waits its Retry-After and goes again): the
    seconds until the last is committed."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for part in parts:
        queue.put_nowait(part)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=300) as http:
            while not queue.empty():
                part = queue.get_nowait()
                while True:
                    response = await http.post(
                        "/v1/bars",
                        content=part,
                        headers={"content-type": media},
                        params={"wait": "commit"},
                    )
                    if response.status_code != 503:
                        break
                    await asyncio.sleep(int(response.headers["retry-after"]))
                assert response.status_code == 201, response.text[:2000]
                assert response.json()["dead_lettered"] == 0

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started


def over_http(
    service: Service, url: str, parts: list[bytes], media: str, args: argparse.Namespace
) -> tuple[float, float]:
    """Rows/s and the service's CPU microseconds per row."""
    asyncio.run(reset(url))
    cpu = service.cpu_seconds()
    elapsed = asyncio.run(post_parts(service.base, parts, media, args.clients))
    cpu_us = (service.cpu_seconds() - cpu) / args.bars * 1e6
    assert asyncio.run(count(url)) == args.bars
    return args.bars / elapsed, cpu_us


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bars", type=int, default=300_000)
    parser.add_argument("--per-request", type=int, default=5_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-json", action="store_true", help="skip the JSON ingest case")
    parser.add_argument(
        "--truncate", action="store_true", help="with DATABASE_URL: allow emptying its bars"
    )
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if url and not args.truncate:
        sys.exit("bench/restore.py empties the bars table of DATABASE_URL; pass --truncate")
    if not shutil.which("psql"):
        sys.exit("psql is needed for the baseline")
    lines = export_lines(args.bars)
    parts = csv_parts(lines, args.per_request)
    jsons = [] if args.no_json else json_parts(lines, args.per_request)
    best: dict[str, float] = {}
    cpu: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mds-restore-") as tmp:
        path = Path(tmp) / "export.csv"
        path.write_text(HEADER + "\n" + "\n".join(lines) + "\n")
        embedded = None
        if not url:
            embedded = EmbeddedPostgres(Path(tmp) / "pgdata")
            url = asyncio.run(embedded.start())
        service = Service(url, tmp)
        try:
            for _ in range(args.repeat):
                best["copy"] = max(best.get("copy", 0.0), psql_copy(url, path, args.bars))
                cases = [("restore", parts, "text/csv"), ("json", jsons, "application/json")]
                for key, bodies, media in cases:
                    if not bodies:
                        continue
                    rate, us = over_http(service, url, bodies, media, args)
                    best[key] = max(best.get(key, 0.0), rate)
                    cpu[key] = min(cpu.get(key, us), us)
        finally:
            service.stop()
            if embedded is not None:
                asyncio.run(embedded.stop())
    print(f"bars: {args.bars:,} new, {args.per_request:,} per request, {args.clients} clients, "
          f"every request ?wait=commit; best of {args.repeat}")  # fmt: skip
    rows = [("psql \\copy of the export file (baseline)", "copy"),
            ("HTTP restore (text/csv), until committed", "restore"),
            ("HTTP JSON ingest, until committed", "json")]  # fmt: skip
    for label, key in rows:
        if key in best:
            used = f"   service CPU {cpu[key]:.2f} us/row" if key in cpu else ""
            print(f"{label:48} {best[key]:>10,.0f} rows/s{used}")
    ratios = [("restore / psql \\copy (target >= 80 %)", "restore", "copy"),
              ("restore / JSON ingest", "restore", "json")]  # fmt: skip
    for label, top, bottom in ratios:
        if top in best and bottom in best:
            print(f"{label:48} {best[top] / best[bottom]:>10.1%}")


if __name__ == "__main__":
    main()
