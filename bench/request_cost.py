"""What the size of its requests costs the store: the service's CPU per request and per
bar for bodies of different sizes, against 5,000-bar bodies in the same round.

    .venv/bin/python bench/request_cost.py --truncate [--regime a|c] [--rounds 3]
                                           [--sizes 1,280,5000] [--bars 120000]

One ``mds-store serve`` (``bench/control.py``'s regimes: ``a`` the slow writer, ``c``
the default service) on ``DATABASE_URL`` (its ``bars`` table emptied before each run,
hence ``--truncate``; without it an embedded PostgreSQL). For each body size, 16
connections POST pre-encoded MessagePack bodies of that many bars (distinct keys;
``?wait=commit`` with ``--wait``; a 503 is sent again after 10 ms, and counted), one
after the other, until ``--bars`` bars (1-bar bodies: ``--bars / 30``) are committed;
the service's CPU time is read from ``/proc/<pid>/stat`` before and after (10 ms
ticks). The sizes run one after the other in each round, in an order rotated round by
round.

Prints per size the median over the rounds of the service's CPU per request (all of
it, bars included) and per bar, bars/s and 503s; then, for each size, the medians of
each round's ratios to that round's 5,000-bar bodies: bars/s, and CPU per bar (the
``...%`` lines, which ``bench/compare_trees.py`` pairs between two trees).

Issue 17 (a): 16 producers sharing a slow writer's short queue send requests of about
280 bars, which cost the store more per bar than the raw clients' 5,000-bar bodies.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec
import uvloop
from control import MSGPACK, PROVIDER, REGIMES, Store, make_bars, sql, wait_committed

from market_data_store.storage.embedded import EmbeddedPostgres

CONNECTIONS = 16
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (in clock ticks: 10 ms steps)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def one_run(
    store: Store, url: str, size: int, total: int, wait: bool
) -> tuple[float, float, float, int]:
    """(service CPU s per request, per bar, bars/s, 503s) of ``total`` bars (at least
    ``size``) in ``size``-bar bodies."""
    await sql(url, "TRUNCATE bars", "VACUUM ANALYZE bars", "SELECT 1")
    bars = make_bars(0, total - total % size)
    bodies = [
        msgspec.msgpack.encode({"provider": PROVIDER, "bars": bars[i : i + size]})
        for i in range(0, len(bars), size)
    ]
    params = {"wait": "commit"} if wait else None
    clients = [httpx.AsyncClient(base_url=store.base, timeout=120) for _ in range(CONNECTIONS)]
    try:
        for client in clients:
            await client.get("/healthz")  # connected before the clock
        todo = bodies[::-1]
        refused = 0

        async def post(client: httpx.AsyncClient) -> None:
            nonlocal refused
            while todo:
                body = todo.pop()
                while True:
                    r = await client.post("/v1/bars", content=body, headers=MSGPACK, params=params)
                    if r.status_code != 503:
                        break
                    refused += 1
                    await asyncio.sleep(0.01)
                if r.status_code not in (201, 202):
                    raise SystemExit(f"POST /v1/bars: {r.status_code} {r.text[:300]}")

        pid = store.process.pid
        cpu, started = cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*map(post, clients))
        await wait_committed(url, len(bars))
        seconds, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu
    finally:
        for client in clients:
            await client.aclose()
    return cpu / len(bodies), cpu / len(bars), len(bars) / seconds, refused


async def amain(args: argparse.Namespace, url: str | None) -> dict[int, list[tuple[float, ...]]]:
    figures: dict[int, list[tuple[float, ...]]] = {size: [] for size in args.sizes}
    with tempfile.TemporaryDirectory(prefix="mds-request-cost-") as tmp:
        embedded = None
        if url is None:
            embedded = EmbeddedPostgres(Path(tmp) / "pgdata")
            url = await embedded.start()
        store = Store(url, tmp, args.regime, REGIMES[args.regime][1])
        try:
            await store.ready()
            await one_run(store, url, 5_000, 40_000, args.wait)  # warm up
            for round_ in range(1, args.rounds + 1):
                shift = (round_ - 1) % len(args.sizes)
                for size in args.sizes[shift:] + args.sizes[:shift]:
                    total = args.bars if size > 1 else max(1, args.bars // 30)
                    run = await one_run(store, url, size, total, args.wait)
                    figures[size].append(run)
                    print(f"round {round_}: {size:>5}-bar bodies: {run[0] * 1e3:8.3f} ms/request "
                          f"{run[1] * 1e6:7.2f} us/bar {run[2]:>9,.0f} bars/s {run[3]} x 503",
                          file=sys.stderr, flush=True)  # fmt: skip
        finally:
            store.stop()
            if embedded is not None:
                await embedded.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--regime", choices=("a", "c"), default="a")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="1,280,5000",
                        type=lambda t: [int(s) for s in t.split(",")])  # fmt: skip
    parser.add_argument("--bars", type=int, default=120_000, help="bars per run")
    parser.add_argument("--wait", action="store_true", help="POST with ?wait=commit")
    parser.add_argument("--truncate", action="store_true",
                        help="with DATABASE_URL: allow emptying its bars table")  # fmt: skip
    args = parser.parse_args()
    if 5_000 not in args.sizes:
        args.sizes.append(5_000)  # the baseline
    if min(args.sizes) < 1 or args.bars < max(args.sizes) or args.rounds < 1:
        parser.error("sizes must be >= 1, --bars at least the largest size, --rounds >= 1")
    url = os.environ.get("DATABASE_URL")
    if url and not args.truncate:
        sys.exit("bench/request_cost.py empties the bars table of DATABASE_URL; pass "
                 "--truncate, or unset DATABASE_URL for an embedded PostgreSQL")  # fmt: skip
    figures = uvloop.run(amain(args, url or None))
    label, _ = REGIMES[args.regime]
    mode = "?wait=commit" if args.wait else "queued (202)"
    print(f"({args.regime}) {label}; {CONNECTIONS} connections, {mode}; "
          f"median of {args.rounds} rounds")  # fmt: skip
    base = figures[5_000]
    for size in sorted(figures):
        runs = figures[size]
        per_request = statistics.median(run[0] for run in runs)
        per_bar = statistics.median(run[1] for run in runs)
        rate = statistics.median(run[2] for run in runs)
        print(f"{size:>5}-bar bodies: {per_request * 1e3:8.3f} ms/request "
              f"{per_bar * 1e6:7.2f} us/bar {rate:>9,.0f} bars/s "
              f"{max(run[3] for run in runs)} x 503 at most")  # fmt: skip
    print("median of each round's ratio to its 5000-bar bodies:")
    for size in sorted(figures):
        pairs = list(zip(figures[size], base, strict=True))
        rate = statistics.median(run[2] / b[2] for run, b in pairs)
        per_bar = statistics.median(run[1] / b[1] for run, b in pairs if b[1] > 0)
        print(f"{size:>5}-bar bodies: bars/s vs 5000-bar bodies: {100 * rate:.1f}%")
        print(f"{size:>5}-bar bodies: CPU per bar vs 5000-bar bodies: {100 * per_bar:.1f}%")


if __name__ == "__main__":
    main()
