"""What durability costs a producer: ``StoreClient`` with ``wait_commit=True`` against
``wait_commit=False``, until every bar is in PostgreSQL.

    .venv/bin/python bench/durability.py [--bars 200000] [--rounds 2] [--symbols 10]
                                         [--regime slow|default|both] [--truncate]

One ``mds-store serve`` per regime, in its own process, on one database
(``DATABASE_URL`` with ``--truncate``: its ``bars`` table is emptied before every
run; else an embedded PostgreSQL started for the run). Regimes:

- ``slow``: the slow writer of issue 17 (``coordinator.workers=1``,
  ``coordinator.batch_size=100``, ``database.copy_fast_path=false``): the queue is
  always full, the store's pace is the writer's;
- ``default``: the shipped settings.

In each, one client with its default options but ``wait_commit`` writes ``--bars``
new bars (``--symbols`` symbols of one-minute bars, built before the clock starts,
``batch_size`` bars per ``write``) and closes; the clock stops when the table holds
every one of them (with ``wait_commit=True`` the close already means that; with
``wait_commit=False`` it means queued, and the table is polled until the queue is
written). Committed (A) and queued (B) alternate, A B A B ..., ``--rounds`` of each
(drift on a shared machine hits both alike). Prints bars/s of every run, the median
of each, and committed / queued per regime (issue 17's target: >= 95 %): the ratio
of the medians, and the median of each round's pair.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from market_data_store.client import StoreClient
from market_data_store.storage import apply_migrations
from market_data_store.storage.embedded import EmbeddedPostgres

T0 = datetime(2024, 1, 2, tzinfo=UTC)
PROVIDER = "bench"
REGIMES: dict[str, tuple[str, dict[str, str]]] = {
    "slow": (
        "slow writer (workers=1, batch_size=100, copy_fast_path=false)",
        {
            "MDS_COORDINATOR_WORKERS": "1",
            "MDS_COORDINATOR_BATCH_SIZE": "100",
            "MDS_DATABASE_COPY_FAST_PATH": "false",
        },
    ),
    "default": ("default service", {}),
}
MODES = ((True, "committed (wait_commit=True)"), (False, "queued (wait_commit=False)"))


def make_bars(n: int, symbols: int) -> list[dict[str, Any]]:
    """``n`` distinct one-minute bars over ``symbols`` symbols, prices as text."""
    bars = []
    for i in range(n):
        symbol, minute = i % symbols, i // symbols
        price = 100 + symbol % 50 + (minute % 60) / 100
        bars.append(
            {"symbol": f"DUR{symbol:03d}", "ts": T0 + timedelta(minutes=minute),
             "open": f"{price:.2f}", "high": f"{price + 0.5:.2f}", "low": f"{price - 0.5:.2f}",
             "close": f"{price + 0.1:.2f}", "volume": str(1000 + minute), "resolution": "1m"}
        )  # fmt: skip
    return bars


async def reset(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn)
        await conn.execute("TRUNCATE bars")
        await conn.execute("VACUUM ANALYZE bars")
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """``mds-store serve`` in its own process, with ``env`` on top of the shipped settings."""

    def __init__(self, url: str, tmp: str, env: dict[str, str]) -> None:
        self.base = f"http://127.0.0.1:{free_port()}"
        port = self.base.rsplit(":", 1)[1]
        full = {**os.environ, "MDS_CONFIG": "", "DATABASE_URL": url,
                "MDS_COORDINATOR_DEAD_LETTER_PATH": f"{tmp}/dlq.ndjson", **env}  # fmt: skip
        cmd = [sys.executable, "-m", "market_data_store.cli", "serve", "--port", port]
        self.process = subprocess.Popen(cmd, env=full, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.base + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit("the service did not become ready")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


async def one_run(url: str, base: str, bars: list[dict[str, Any]], wait_commit: bool) -> float:
    """Seconds from the first write until the table holds every bar."""
    conn = await asyncpg.connect(url)
    try:
        client = StoreClient(base, provider=PROVIDER, wait_commit=wait_commit)
        chunk = client.batch_size
        started = time.perf_counter()
        try:
            for first in range(0, len(bars), chunk):
                await client.write(bars[first : first + chunk])
        finally:
            await client.aclose()  # raises the first failure, if any
        failures = client.take_failures()
        if failures:
            sys.exit(f"{len(failures)} more batch(es) failed: {failures[0]}")
        while True:  # queued: until the store has written its queue
            if await conn.fetchval("SELECT count(*) FROM bars") >= len(bars):
                return time.perf_counter() - started
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bars", type=int, default=200_000)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each mode (A B A B ...)")
    parser.add_argument("--regime", choices=("slow", "default", "both"), default="both")
    parser.add_argument(
        "--truncate",
        action="store_true",
        help="with DATABASE_URL: allow emptying its bars table (before every run)",
    )
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if url and not args.truncate:
        sys.exit(
            "bench/durability.py empties the bars table of DATABASE_URL before every run; "
            "pass --truncate if that is what you want, or unset DATABASE_URL to run on "
            "an embedded PostgreSQL"
        )
    regimes = list(REGIMES) if args.regime == "both" else [args.regime]
    bars = make_bars(args.bars, args.symbols)
    default = inspect.signature(StoreClient).parameters["wait_commit"].default
    rates: dict[tuple[str, bool], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="mds-durability-") as tmp:
        embedded = None
        if not url:
            embedded = EmbeddedPostgres(Path(tmp) / "pgdata")
            url = asyncio.run(embedded.start())
        try:
            asyncio.run(reset(url))
            for regime in regimes:
                service = Service(url, tmp, REGIMES[regime][1])
                try:
                    for _ in range(args.rounds):
                        for wait_commit, _label in MODES:
                            asyncio.run(reset(url))
                            seconds = asyncio.run(one_run(url, service.base, bars, wait_commit))
                            rates.setdefault((regime, wait_commit), []).append(len(bars) / seconds)
                finally:
                    service.stop()
        finally:
            if embedded is not None:
                asyncio.run(embedded.stop())

    print(
        f"bars: {args.bars:,} ({args.symbols} symbols), one StoreClient (default options but"
        f" wait_commit; its default: wait_commit={default}), {args.rounds} alternating"
        " rounds of each mode; until every bar is in PostgreSQL"
    )
    for regime in regimes:
        print(f"{REGIMES[regime][0]}:")
        for wait_commit, label in MODES:
            runs = rates[(regime, wait_commit)]
            each = "  ".join(f"{r:>9,.0f}" for r in runs)
            print(f"  {label:32} {statistics.median(runs):>9,.0f} bars/s  (runs: {each})")
    for regime in regimes:
        committed, queued = rates[(regime, True)], rates[(regime, False)]
        label = f"committed / queued, {regime} (target >= 95 %)"
        print(f"{label:58} {statistics.median(committed) / statistics.median(queued):>8.1%}")
        paired = statistics.median(a / b for a, b in zip(committed, queued, strict=True))
        print(f"{f'committed / queued, {regime}, median of A/B pairs':58} {paired:>8.1%}")


if __name__ == "__main__":
    main()
