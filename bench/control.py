"""Flow control: K StoreClient producers against one store, against its raw ceiling.

    .venv/bin/python bench/control.py --truncate [--regimes a,b,c,d] [--producers 1,4,16]
                                      [--seconds 3] [--bars N] [--rounds 1] [--aa]
                                      [--json FILE]

For each regime one ``mds-store serve`` (its own process, a free port, the regime's
settings as ``MDS_*`` variables) on ``DATABASE_URL``, whose ``bars`` table is emptied
before every run (hence ``--truncate``; without ``DATABASE_URL`` an embedded
PostgreSQL is started for the run):

- (a) slow writer: ``coordinator.workers=1``, ``batch_size=100``, ``copy_fast_path=false``;
- (b) ``coordinator.capacity=2000``, the default writer;
- (c) the default service;
- (d) the default service, its drain halved after ``--seconds`` and restored ``--seconds``
  later: the store reaches PostgreSQL through a proxy (a process of its own) that then
  caps what the store sends, its COPY data, at half the bytes/s of its ceiling (bytes
  per bar counted in the ceiling run). A lock held for half of every 100 ms did not
  halve it: the default store's ceiling is its CPU decoding requests, not its writes.

For each K of ``--producers``, ``--rounds`` times, back to back on the same store (the
table emptied in between):

1. the ceiling: K raw clients keeping the queue full: each POSTs its pre-encoded
   MessagePack bodies of 5,000 bars to ``/v1/bars`` one after the other (on 503: wait
   10 ms, send it again); in (d) twice: as is, and with the link capped all along;
2. K ``StoreClient`` producers, default options, each writing its bars (dicts of
   strings, built before the clock starts) 1,000 per ``write()``, then ``aclose()``;
   in (d) they stop writing ``--seconds`` after the drain is restored.

Each producer writes distinct bars (a symbol of its own). A run is timed from the
first write to the last commit, its bars all counted in PostgreSQL: commits are dated
by the transaction ids of the rows (``xmin``) against ``pg_current_snapshot()`` taken
every 20 ms (see ``bench/control_watch.py``). Figures of the producers' run:

- goodput = bars committed / (last commit - first write); ratio = goodput / ceiling;
- 503s: refusals the producers saw (``StoreClient.stats.refused``) / the raw clients saw;
- hard %: share of the window the store's coordinator spent at ``hard``, time-weighted
  from its own events (``GET /v1/feedback/stream``);
- jain: Jain's index over each producer's own goodput (its bars / its last commit -
  first write); jain@1st: over the bars each had committed when the first one finished;
- util p50/p99: queue size / capacity, ``GET /healthz`` every 25 ms during the window;
- cpu%: CPU time of this process (the producers and the watchers, about 10 % of a core)
  over the run's time, producers / raw clients: on this machine the producers share the
  store's two cores;
- (d): goodput / ceiling per phase (normal, halved, restored; ``--seconds`` each, the
  last one until the producers stop writing) and the time from each step until the
  producers' commit rate over 0.5 s windows reaches 90 % of the new ceiling and holds
  there for 0.5 s more (every window starting within it: what the queue held drains at
  once after the restoring step, and must not count as a recovery), and until it holds
  to the end of the phase (requests blocked in the store during the halved phase may
  keep it up for seconds; the (d) target is checked on this one). The rate between two
  commits is taken as even. What that asks is put beside what the store itself does:
  the share of 0.5 s windows from each step on under 0.9 of the new ceiling, against
  the share of the raw clients' own windows under 0.9 of their goodput (as is and
  capped): where raw clients dip as often, a phase that never "stays" measures the
  store's jitter, not the loop.

The last lines name the issue's targets each row misses (the figures only measure).

Runs are sized to about ``--seconds`` s from the ceiling of the previous run (a short
raw probe for the first), at least 2 batches per producer; ``--bars`` fixes the total.
A default run takes about 3.5 minutes. On a shared machine one pair swings by tens of
per cent: ``--rounds N`` repeats each pair and adds the median, min and max ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import uvloop
from control_watch import (
    LevelWatch,
    QueueSampler,
    Snapshot,
    Snapshots,
    ThrottledLink,
    commit_times,
    cumulative,
    dips,
    jain,
    percentile,
    recovery_time,
    share_at_level,
    window_rate,
)

from market_data_store.client import StoreClient
from market_data_store.storage.embedded import EmbeddedPostgres

PROVIDER = "bench"
COORDINATOR = "bench/bars"  # MDS_SERVER_INSTANCE_ID=bench
BODY_BARS = 5_000
MIN_PER_PRODUCER = 2 * 5_000  # two batches of StoreClient's default batch_size
MSGPACK = {"content-type": "application/msgpack"}
T0 = datetime(2024, 1, 2, tzinfo=UTC)
REGIMES: dict[str, tuple[str, dict[str, str]]] = {
    "a": ("slow writer: workers=1, batch_size=100, copy_fast_path=false",
          {"MDS_COORDINATOR_WORKERS": "1", "MDS_COORDINATOR_BATCH_SIZE": "100",
           "MDS_DATABASE_COPY_FAST_PATH": "false"}),
    "b": ("capacity=2000, default writer", {"MDS_COORDINATOR_CAPACITY": "2000"}),
    "c": ("default service", {}),
    "d": ("default service, drain halved mid-run and restored", {}),
}  # fmt: skip

# -- bars and the store ---------------------------------------------------------------

_TS: list[str] = []
_PRICES = [(f"{100 + p}.25", f"{100 + p}.75", f"{99 + p}.75", f"{100 + p}.50", str(1000 + p))
           for p in range(60)]  # fmt: skip
FIELDS = ("symbol", "ts", "open", "high", "low", "close", "volume", "resolution")


def make_bars(producer: int, count: int) -> list[dict[str, str]]:
    """``count`` 1m bars of the producer's own symbol (distinct keys)."""
    while len(_TS) < count:
        _TS.append((T0 + timedelta(minutes=len(_TS))).isoformat().replace("+00:00", "Z"))
    symbol = f"CTL{producer:03d}"
    return [dict(zip(FIELDS, (symbol, _TS[j], *_PRICES[j % 60], "1m"), strict=True))
            for j in range(count)]  # fmt: skip


def split(total: int, producers: int) -> list[list[dict[str, str]]]:
    return [make_bars(i, math.ceil(total / producers)) for i in range(producers)]


def size(rate: float, seconds: float, producers: int, fixed: int | None) -> int:
    """Bars for a run of about ``seconds`` at ``rate`` (``fixed``: that many)."""
    if fixed is not None:
        return fixed
    return producers * max(math.ceil(rate * seconds / producers), MIN_PER_PRODUCER)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Store:
    """``mds-store serve`` with ``settings`` (MDS_* variables; the caller's are dropped)."""

    def __init__(self, url: str, tmp: str, name: str, settings: dict[str, str]) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.log = Path(tmp) / f"serve-{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MDS_")}
        env |= {"DATABASE_URL": url, "MDS_SERVER_INSTANCE_ID": "bench", **settings,
                "MDS_COORDINATOR_DEAD_LETTER_PATH": f"{tmp}/dlq-{name}.ndjson"}  # fmt: skip
        cmd = [sys.executable, "-m", "market_data_store.cli", "serve", "--port", str(port)]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)

    async def ready(self) -> None:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=self.base, timeout=1) as http:
            while True:
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    tail = self.log.read_text(errors="replace")[-2000:]
                    raise SystemExit(f"mds-store serve did not become ready:\n{tail}")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


async def sql(url: str, *statements: str) -> list[asyncpg.Record]:
    """Run ``statements`` on a connection of their own; the rows of the last."""
    conn = await asyncpg.connect(url)
    try:
        for statement in statements[:-1]:
            await conn.execute(statement)
        return await conn.fetch(statements[-1])
    finally:
        await conn.close()


async def wait_committed(url: str, expected: int, timeout: float = 120.0) -> Snapshot:
    """The snapshot in which ``count(*)`` first showed ``expected`` bars."""
    conn = await asyncpg.connect(url)
    query = "SELECT count(*), pg_current_snapshot()::text FROM bars"
    try:
        await conn.execute("SET max_parallel_workers_per_gather = 0")  # one core, not two
        deadline = time.monotonic() + timeout
        while True:
            before = time.time()
            row = await conn.fetchrow(query)
            assert row is not None
            count, snapshot = int(row[0]), str(row[1])
            if count >= expected:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"only {count:,} of {expected:,} bars committed after {timeout}s")
            await asyncio.sleep(0.05)
        if count != expected:
            raise SystemExit(f"{count:,} bars in the table, {expected:,} written")
        return Snapshot.parse((before + time.time()) / 2, snapshot)
    finally:
        await conn.close()


# -- one run --------------------------------------------------------------------------


@dataclass
class Run:
    kind: str  # probe, raw, halved, clients
    producers: int
    bars: int
    started: float  # first write (time.time())
    ended: float  # last commit
    counted: float  # when count(*) first showed them all (a check: >= ended)
    refused: int  # 503s
    hard: float  # share of the window at hard
    util_p50: float
    util_p99: float
    jain: float  # over each producer's own bars / (its last commit - first write)
    jain_first: float  # over the bars each had committed when the first one finished
    cpu: float  # this process's CPU time / the run's time (1.0: one core)
    commits: list[tuple[float, int]] = field(repr=False)  # (time, bars) per transaction
    steps: list[float] = field(default_factory=list)  # (d): link capped, uncapped
    sent: int = 0  # with a link: bytes the store sent to PostgreSQL

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def goodput(self) -> float:
        return self.bars / self.seconds


Producers = Callable[[], Awaitable[tuple[int, int]]]  # runs them: (503s seen, bars written)


async def measure(
    store: Store,
    url: str,
    kind: str,
    prepare: Callable[[], Awaitable[Producers]],
    *,
    link: ThrottledLink | None = None,
    cap: float = 0.0,
    steps_after: float | None = None,
    steps: list[float] | None = None,
) -> Run:
    """One run: ``prepare`` builds (before the clock) what ``Producers`` sends. ``cap``:
    the store's link to PostgreSQL capped at that many bytes/s, all along, or with
    ``steps_after``: from that many s after the start, for as many (the times of both
    steps are appended to ``steps`` when they are taken)."""
    await sql(url, "TRUNCATE bars", "VACUUM ANALYZE bars", "SELECT 1")
    snapshots, queue = Snapshots(url), QueueSampler(store.base)
    levels = LevelWatch(store.base, COORDINATOR)
    go = await prepare()
    await snapshots.start()
    await levels.start()
    queue.start()
    sent = link.sent if link is not None else 0
    if link is not None and steps_after is None:
        link.rate = cap
    steps = [] if steps is None else steps
    stepper = None
    gc.collect()
    gc.freeze()  # the bars built: no collection rescans them during the run
    cpu, started = time.process_time(), time.time()
    try:
        if link is not None and steps_after is not None:
            stepper = asyncio.create_task(_steps(link, cap, steps_after, steps))
        refused, total = await go()
        counted = await wait_committed(url, total)
        snapshots.taken.append(counted)
        cpu = (time.process_time() - cpu) / (time.time() - started)
    finally:
        gc.unfreeze()
        if stepper is not None:
            stepper.cancel()
            await asyncio.gather(stepper, return_exceptions=True)
        if link is not None:
            link.rate = 0.0
            sent = link.sent - sent
        await snapshots.stop()
        await queue.stop()
        await levels.stop()
    rows = await sql(url, "SELECT xmin::text::bigint AS x, symbol, count(*) AS n FROM bars "
                          "GROUP BY 1, 2")  # fmt: skip
    snapshots.taken.sort(key=lambda snapshot: snapshot.at)
    times = commit_times(snapshots.taken, {r["x"] for r in rows})
    ended = max(times.values())
    per_symbol: dict[str, list[tuple[float, int]]] = {}
    by_xid: dict[int, int] = {}
    for r in rows:
        per_symbol.setdefault(r["symbol"], []).append((times[r["x"]], r["n"]))
        by_xid[r["x"]] = by_xid.get(r["x"], 0) + r["n"]
    own = [sum(n for _, n in c) / (max(t for t, _ in c) - started) for c in per_symbol.values()]
    first_done = min(max(t for t, _ in c) for c in per_symbol.values())
    shares = [float(sum(n for t, n in c if t <= first_done)) for c in per_symbol.values()]
    util = queue.utilization(started, ended)
    return Run(
        kind, len(per_symbol), total, started, ended, counted.at, refused,
        share_at_level(levels.events, started, ended), percentile(util, 0.5),
        percentile(util, 0.99), jain(own), jain(shares), cpu,
        [(times[x], n) for x, n in by_xid.items()], steps, sent,
    )  # fmt: skip


async def _steps(link: ThrottledLink, cap: float, after: float, steps: list[float]) -> None:
    await asyncio.sleep(after)
    link.rate = cap
    steps.append(time.time())
    await asyncio.sleep(after)
    link.rate = 0.0
    steps.append(time.time())


def raw(base: str, per_producer: list[list[dict[str, str]]]) -> Callable[[], Awaitable[Producers]]:
    async def prepare() -> Producers:
        shares = [
            [msgspec.msgpack.encode({"provider": PROVIDER, "bars": bars[i : i + BODY_BARS]})
             for i in range(0, len(bars), BODY_BARS)]
            for bars in per_producer
        ]  # fmt: skip
        https = [httpx.AsyncClient(base_url=base, timeout=300) for _ in shares]
        for http in https:
            await http.get("/healthz")  # connected before the clock starts

        async def one(http: httpx.AsyncClient, share: list[bytes]) -> int:
            refused = 0
            try:
                for body in share:
                    while True:
                        r = await http.post("/v1/bars", content=body, headers=MSGPACK)
                        if r.status_code != 503:
                            break
                        refused += 1
                        await asyncio.sleep(0.01)
                    if r.status_code != 202:
                        raise SystemExit(f"POST /v1/bars: {r.status_code} {r.text[:300]}")
            finally:
                await http.aclose()
            return refused

        async def go() -> tuple[int, int]:
            refused = await asyncio.gather(*map(one, https, shares))
            return sum(refused), sum(map(len, per_producer))

        return go

    return prepare


def clients(
    base: str,
    per_producer: list[list[dict[str, str]]],
    chunk: int,
    stop: Callable[[], bool] = lambda: False,
) -> Callable[[], Awaitable[Producers]]:
    """Each producer writes its bars until ``stop()`` says so, then closes its client."""

    async def prepare() -> Producers:
        stores = [StoreClient(base, provider=PROVIDER) for _ in per_producer]
        for store in stores:
            await store.start()  # connection pool and feedback stream before the clock

        async def one(store: StoreClient, bars: list[dict[str, str]]) -> None:
            for lo in range(0, len(bars), chunk):
                if stop():
                    break
                await store.write(bars[lo : lo + chunk])
            await store.aclose()

        async def go() -> tuple[int, int]:
            await asyncio.gather(*map(one, stores, per_producer))
            stats = [s.stats for s in stores]
            return sum(s.refused for s in stats), sum(s.bars_written for s in stats)

        return go

    return prepare


# -- regimes --------------------------------------------------------------------------


@dataclass
class Row:
    regime: str
    producers: int
    round: int
    ceiling: Run
    clients: Run
    halved: Run | None = None  # (d): the ceiling with the link capped
    cap: float = 0.0  # (d): bytes/s
    phases: list[dict[str, Any]] = field(default_factory=list)
    again: Run | None = None  # --aa: raw clients once more, right after the producers

    @property
    def expected(self) -> float:
        """The ceiling over the producers' window ((d): each ceiling for the time it held)."""
        c = self.clients
        if self.halved is None or len(c.steps) < 2:
            return self.ceiling.goodput
        capped = c.steps[1] - c.steps[0]
        return (self.ceiling.goodput * (c.seconds - capped) + self.halved.goodput * capped) / (
            c.seconds
        )

    @property
    def ratio(self) -> float:
        return self.clients.goodput / self.expected


async def regime(
    name: str, url: str, tmp: str, args: argparse.Namespace, progress: Callable[[str], None]
) -> list[Row]:
    label, settings = REGIMES[name]
    link = ThrottledLink(url) if name == "d" else None
    store = Store(url if link is None else link.url, tmp, name, settings)
    rows: list[Row] = []
    s = args.seconds
    try:
        await store.ready()
        rate = best = 0.0  # the last ceiling, the best seen
        if args.bars is None:  # a short probe: sizes the first run, warms the store up
            rate = (await measure(store, url, "probe", raw(store.base, split(40_000, 4)))).goodput
            progress(f"({name}) {label}: probe {rate:,.0f} bars/s")
            best = rate
        for k in args.producers:
            for round_ in range(1, args.rounds + 1):
                step = f"({name}) K={k:<2} #{round_}"
                bars = split(size(rate, s, k, args.bars), k)
                ceiling = await measure(store, url, "raw", raw(store.base, bars), link=link)
                progress(f"{step} raw     {ceiling.bars:>9,} bars {ceiling.goodput:>9,.0f} bars/s")
                rate, halved, cap, steps = ceiling.goodput, None, 0.0, None
                best, timeline = max(best, rate), list[float]()  # (d): when capped, uncapped
                producers = clients(store.base, bars, args.write_chunk)
                if link is not None:
                    cap = ceiling.sent / ceiling.bars * rate / 2  # bytes/s of half the ceiling
                    half = raw(store.base, split(size(rate / 2, s, k, args.bars), k))
                    halved = await measure(store, url, "halved", half, link=link, cap=cap)
                    progress(f"{step} halved  {halved.bars:>9,} bars "
                             f"{halved.goodput:>9,.0f} bars/s")  # fmt: skip
                    # written until s after the restoring step: bars enough not to run out
                    bars, steps = split(size(1.5 * best, 3 * s, k, args.bars), k), s
                    producers = clients(store.base, bars, args.write_chunk, after(timeline, s))
                run = await measure(store, url, "clients", producers, link=link, cap=cap,
                                    steps_after=steps, steps=timeline)  # fmt: skip
                progress(f"{step} clients {run.bars:>9,} bars {run.goodput:>9,.0f} bars/s")
                row = Row(name, k, round_, ceiling, run, halved, cap)
                if args.aa and link is None:
                    row.again = await measure(store, url, "raw", raw(store.base, bars))
                    progress(f"{step} raw     {row.again.bars:>9,} bars "
                             f"{row.again.goodput:>9,.0f} bars/s (again)")  # fmt: skip
                if halved is not None:
                    row.phases = phases(row, args.window, args.sustain, s)
                rows.append(row)
    finally:
        store.stop()
        if link is not None:
            link.close()
    return rows


def after(timeline: list[float], seconds: float) -> Callable[[], bool]:
    """(d): true ``seconds`` after the restoring step (the second time in ``timeline``)."""
    return lambda: len(timeline) == 2 and time.time() >= timeline[1] + seconds


def phases(row: Row, window: float, sustain: float, length: float) -> list[dict[str, Any]]:
    """(d): goodput / ceiling per phase, and the recovery after each step; the last phase
    ends when the producers stopped writing, ``length`` s after the restoring step (or at
    the last commit if sooner)."""
    run, halved = row.clients, row.halved
    assert halved is not None
    if len(run.steps) < 2 or run.steps[1] >= run.ended:
        return []  # the producers finished before the drain was restored
    curve = cumulative([(run.started, 0), *run.commits])
    on, off = run.steps
    out = []
    for phase, start, end, ceiling, step in (
        ("normal", run.started, on, row.ceiling.goodput, None),
        ("halved", on, off, halved.goodput, on),
        ("restored", off, min(run.ended, off + length), row.ceiling.goodput, off),
    ):
        back = settled = None
        if step is not None:
            back = recovery_time(curve, step, end, 0.9 * ceiling, window, sustain)
            settled = recovery_time(curve, step, end, 0.9 * ceiling, window, None)
        goodput = window_rate(curve, start, end)
        low = dips(curve, start if step is None else step, end, 0.9 * ceiling, window)
        out.append({"phase": phase, "seconds": end - start, "goodput": goodput,
                    "ceiling": ceiling, "ratio": goodput / ceiling, "recovery": back,
                    "settled": settled, "measurable": end - start - window,
                    "dips": low})  # fmt: skip
    return out


def steadiness(run: Run, window: float) -> float | None:
    """Share of ``window`` s windows of a raw run (its first window, the ramp, left out)
    whose commit rate is under 0.9 of the run's own goodput: how steady the store is
    under clients that ignore it, the yardstick for the phases' dips."""
    curve = cumulative([(run.started, 0), *run.commits])
    return dips(curve, run.started + window, run.ended, 0.9 * run.goodput, window)


# -- report ---------------------------------------------------------------------------


def misses(row: Row) -> list[str]:
    """The issue's targets this row misses."""
    c, out = row.clients, []
    if row.regime in ("a", "b"):
        out += [f"goodput {row.ratio:.2f} < 0.95"] if row.ratio < 0.95 else []
        out += [f"hard {100 * c.hard:.1f} % > 1 %"] if c.hard > 0.01 else []
        out += [f"jain {c.jain:.3f} < 0.95"] if c.jain < 0.95 else []
    if row.regime == "c" and row.ratio < 0.9:
        out.append(f"clients/raw {row.ratio:.2f} < 0.9")
    if row.regime == "d":
        out += [] if row.phases else ["no restored phase (the producers finished first)"]
        for p in row.phases[1:]:
            if p["settled"] is None and p["measurable"] < 2 - 1e-3:
                out.append(f"the {p['phase']} phase too short to tell")
            elif p["settled"] is None or p["settled"] > 2:
                out.append(f"not above 0.9 to stay within 2 s of the {p['phase']} step")
    if row.regime in ("a", "b", "d") and c.refused:
        out.append(f"{c.refused} x 503")
    return out


def report(rows: list[Row], args: argparse.Namespace) -> None:
    print(f"producers: StoreClient, default options, {args.write_chunk:,} bars per write(); "
          f"ceiling: as many raw clients, {BODY_BARS:,}-bar MessagePack bodies, 503 -> 10 ms\n"
          "goodput: bars committed / (last commit - first write); jain: over each producer's "
          "own bars / (its last commit - first write); jain@1st: over the bars each had "
          "committed when the first producer finished; 503s, cpu% (of a core, this process: "
          "the producers and the watchers): "
          "producers/raw")  # fmt: skip
    for name in dict.fromkeys(r.regime for r in rows):
        print(f"  ({name}) {REGIMES[name][0]}")
    print(f"\n{'regime':<6} {'K':>2} {'#':>2} {'ceiling(bars/s)':>15} {'clients(bars/s)':>15} "
          f"{'ratio':>6} {'503s':>7} {'hard%':>6} {'jain':>6} {'jain@1st':>8} "
          f"{'util p50/p99':>12} {'cpu%':>9}")  # fmt: skip
    for r in rows:
        c = r.clients
        print(f"{r.regime:<6} {r.producers:>2} {r.round:>2} {r.expected:>15,.0f} "
              f"{c.goodput:>15,.0f} {r.ratio:>6.3f} {f'{c.refused}/{r.ceiling.refused}':>7} "
              f"{100 * c.hard:>6.1f} {c.jain:>6.3f} {c.jain_first:>8.3f} "
              f"{f'{c.util_p50:.2f}/{c.util_p99:.2f}':>12} "
              f"{f'{100 * c.cpu:.0f}/{100 * r.ceiling.cpu:.0f}':>9}")  # fmt: skip
    if args.rounds > 1:
        print(f"\nmedian of {args.rounds} rounds\n{'regime':<6} {'K':>2} {'ratio':>6} "
              f"{'min':>6} {'max':>6} {'hard%':>6} {'jain':>6}")  # fmt: skip
        for (name, k), group in _groups(rows).items():
            ratios = [r.ratio for r in group]
            print(f"{name:<6} {k:>2} {statistics.median(ratios):>6.3f} {min(ratios):>6.3f} "
                  f"{max(ratios):>6.3f} "
                  f"{statistics.median(100 * r.clients.hard for r in group):>6.1f} "
                  f"{statistics.median(r.clients.jain for r in group):>6.3f}")  # fmt: skip
    if aa_rows := [r for r in rows if r.again is not None]:
        print("\nA/A: the raw clients again, right after the producers, against their first "
              "run (the same bars, the same store):\nwhat one ratio of two identical "
              f"measurements spreads by here\n{'regime':<6} {'K':>2} {'median':>6} "
              f"{'min':>6} {'max':>6}  per round")  # fmt: skip
        for (name, k), group in _groups(aa_rows).items():
            aa = [r.again.goodput / r.ceiling.goodput for r in group if r.again is not None]
            print(f"{name:<6} {k:>2} {statistics.median(aa):>6.3f} {min(aa):>6.3f} "
                  f"{max(aa):>6.3f}  {' '.join(f'{x:.3f}' for x in aa)}")  # fmt: skip
    d_rows = [r for r in rows if r.halved is not None]
    if d_rows:
        print(f"\n(d) ceiling column: each raw ceiling for the time it held; per phase, and the "
              f"time from each step until the producers' commit rate over {args.window:g} s "
              f"windows is >= 0.9 x the new ceiling: back = it holds {args.sustain:g} s, "
              "stays = it holds to the end of the phase:")  # fmt: skip
    for r in d_rows:
        assert r.halved is not None
        print(f"  K={r.producers:<2} #{r.round} ceiling {r.ceiling.goodput:,.0f}, halved "
              f"{r.halved.goodput:,.0f} bars/s ({r.halved.goodput / r.ceiling.goodput:.2f}; "
              f"link capped at {r.cap / 1e6:.1f} MB/s); raw clients' own windows under 0.9 "
              f"of their goodput: {share(steadiness(r.ceiling, args.window))} as is, "
              f"{share(steadiness(r.halved, args.window))} capped")  # fmt: skip
        if not r.phases:
            print("    the producers finished before the drain was restored")
        for p in r.phases:
            back, settled = "", p["settled"]
            if p["phase"] != "normal":
                back = (
                    f"; back above 0.9 after {p['recovery']:.2f} s"
                    if p["recovery"] is not None
                    else "; not back above 0.9"
                )
                back += "; never stays" if settled is None else f"; stays from {settled:.2f} s"
                back += f"; windows under 0.9 from the step: {share(p['dips'])}"
            print(f"    {p['phase']:<8} {p['seconds']:5.2f} s {p['goodput']:>9,.0f} bars/s "
                  f"= {p['ratio']:.3f} of {p['ceiling']:,.0f}{back}")  # fmt: skip
    print("\ntargets: (a),(b) ratio >= 0.95, no 503, hard <= 1 %, jain >= 0.95; (c) ratio "
          ">= 0.9;\n         (d) back above 0.9 of the new ceiling within 2 s of each step (to "
          "stay), no 503")  # fmt: skip
    for r in rows:
        missed = misses(r)
        print(f"  ({r.regime}) K={r.producers:<2} #{r.round} "
              + ("met" if not missed else "missed: " + "; ".join(missed)))  # fmt: skip


def share(part: float | None) -> str:
    """A share as a percentage, ``n/a`` for none (no window fitted)."""
    return "n/a" if part is None else f"{100 * part:.0f} %"


def _groups(rows: list[Row]) -> dict[tuple[str, int], list[Row]]:
    groups: dict[tuple[str, int], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.regime, r.producers), []).append(r)
    return groups


def to_json(rows: list[Row]) -> list[dict[str, Any]]:
    def run(r: Run | None) -> dict[str, Any] | None:
        if r is None:
            return None
        return {k: v for k, v in asdict(r).items() if k != "commits"} | {
            "seconds": r.seconds, "goodput": r.goodput}  # fmt: skip

    return [{"regime": r.regime, "producers": r.producers, "round": r.round,
             "ceiling_goodput": r.expected, "ratio": r.ratio, "misses": misses(r),
             "ceiling": run(r.ceiling), "clients": run(r.clients), "halved": run(r.halved),
             "cap": r.cap, "phases": r.phases, "again": run(r.again)}
            for r in rows]  # fmt: skip


# -- main -----------------------------------------------------------------------------


async def amain(args: argparse.Namespace, url: str | None) -> list[Row]:
    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mds-control-") as tmp:
        embedded = None
        if url is None:
            embedded = EmbeddedPostgres(Path(tmp) / "pgdata")
            url = await embedded.start()
        try:
            for name in args.regimes:
                rows += await regime(name, url, tmp, args, progress)
        finally:
            if embedded is not None:
                await embedded.stop()
    return rows


def main() -> None:
    def names(text: str) -> list[str]:
        return [p.strip() for p in text.split(",") if p.strip()]

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--regimes", type=names, default=list(REGIMES))
    parser.add_argument("--producers", type=lambda t: [int(k) for k in names(t)],
                        default=[1, 4, 16])  # fmt: skip
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="about how long each run lasts; in (d) each phase")  # fmt: skip
    parser.add_argument("--bars", type=int, help="bars per run (all producers), no probe")
    parser.add_argument("--rounds", type=int, default=1, help="ceiling + producers, repeated")
    parser.add_argument("--write-chunk", type=int, default=1000, help="bars per write()")
    parser.add_argument("--window", type=float, default=0.5, help="(d) recovery window, s")
    parser.add_argument("--sustain", type=float, default=0.5, help="(d) recovery held for, s")
    parser.add_argument("--aa", action="store_true",
                        help="(a)-(c): each round also runs the raw clients again after the "
                        "producers and prints raw/raw, the spread of a ratio of identical "
                        "runs")  # fmt: skip
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--truncate", action="store_true",
                        help="with DATABASE_URL: allow emptying its bars table, again and "
                        "again")  # fmt: skip
    args = parser.parse_args()
    if unknown := [r for r in args.regimes if r not in REGIMES]:
        parser.error(f"unknown regime(s) {unknown}; choose from {', '.join(REGIMES)}")
    url = os.environ.get("DATABASE_URL")
    if url and not args.truncate:
        sys.exit(
            "bench/control.py empties the bars table of DATABASE_URL, again and again; "
            "pass --truncate if that is what you want, or unset DATABASE_URL to run on "
            "an embedded PostgreSQL"
        )
    rows = uvloop.run(amain(args, url or None))
    report(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(rows), indent=2) + "\n")


if __name__ == "__main__":
    main()
