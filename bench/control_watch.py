"""What ``bench/control.py`` watches during a run, and the figures it makes of it.

Watchers (asyncio tasks; times are ``time.time()``, the clock of the store's events):

- ``Snapshots``: ``pg_current_snapshot()`` every 20 ms on a connection of its own: which
  transactions had committed by when. With the ``xmin`` of every stored row (read
  once, after the run) it dates each batch's commit to within one interval, without
  scanning the table while the writers fill it (a ``count(*)`` of 600,000 rows takes
  ~35 ms of the two cores the store runs on);
- ``QueueSampler``: ``GET /healthz`` every 25 ms: the coordinator's queue size and capacity;
- ``LevelWatch``: ``GET /v1/feedback/stream``: the coordinator's levels, with the store's
  own ``ts``;
- ``ThrottledLink``: the store's connection to PostgreSQL, through a proxy that can cap
  what the store sends (its COPY data) in bytes/s: a drain rate cap that binds whatever
  the database could take.

Pure figures: ``percentile``, ``jain``, ``share_at_level``, ``commit_times``, ``cumulative``,
``window_rate``, ``recovery_time``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import mmap
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import httpx
import uvloop

XID_SPAN = 1 << 32


# -- pure figures ---------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1), linear between the closest ranks; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: (sum x)^2 / (n sum x^2); 1.0 when all are equal, 1/n when
    one gets everything; nan when empty, 1.0 when all are zero."""
    if not values:
        return float("nan")
    squares = sum(x * x for x in values)
    if squares == 0:
        return 1.0
    return sum(values) ** 2 / (len(values) * squares)


def share_at_level(
    events: Sequence[tuple[float, str]], start: float, end: float, level: str = "hard"
) -> float:
    """Share of [start, end] spent at ``level``; ``events`` are (ts, level) transitions in
    time order; before the first of them the level is ``ok``."""
    if end <= start:
        return 0.0
    current, since, spent = "ok", start, 0.0
    for ts, new in events:
        if ts >= end:
            break
        if ts > since:
            if current == level:
                spent += ts - since
            since = ts
        current = new
    if current == level:
        spent += end - since
    return spent / (end - start)


@dataclass(frozen=True)
class Snapshot:
    """``pg_current_snapshot()`` at ``at``: xids below ``xmin``, or below ``xmax`` and not in
    ``xip``, had finished (for a row's ``xmin``: committed)."""

    at: float
    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, at: float, text: str) -> Snapshot:
        xmin, xmax, xip = text.split(":")
        return cls(at, int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def committed(self, xid: int) -> bool:
        return xid < self.xmin or (xid < self.xmax and xid not in self.xip)


def full_xid(xid32: int, reference: int) -> int:
    """A row's 32-bit ``xmin`` as the 64-bit xid of ``pg_current_snapshot``, taking the
    epoch of ``reference`` (a 64-bit xid from after the row was written)."""
    full = (reference & ~(XID_SPAN - 1)) | xid32
    return full - XID_SPAN if full > reference else full


def commit_times(snapshots: Sequence[Snapshot], xids: Iterable[int]) -> dict[int, float]:
    """When each transaction (a row's 32-bit ``xmin``) was first seen committed. The last
    snapshot must see them all (taken once every row was counted)."""
    if not snapshots:
        raise ValueError("no snapshots")
    last = snapshots[-1]
    times: dict[int, float] = {}
    for xid in xids:
        if xid < 3:
            raise ValueError(f"xmin {xid} is frozen or special: cannot date its commit")
        full = full_xid(xid, last.xmax)
        first = bisect.bisect_left(
            range(len(snapshots)), True, key=lambda i: snapshots[i].committed(full)
        )
        if first == len(snapshots):
            raise ValueError(f"transaction {xid} is not committed in the last snapshot")
        times[xid] = snapshots[first].at
    return times


Curve = tuple[list[float], list[int]]


def cumulative(commits: Iterable[tuple[float, int]]) -> Curve:
    """(times, bars committed by each time), from (time, bars) commits; a (start, 0)
    among them spreads the first commit over the time before it."""
    times: list[float] = []
    totals: list[int] = []
    total = 0
    for at, bars in sorted(commits):
        total += bars
        if times and times[-1] == at:
            totals[-1] = total
        else:
            times.append(at)
            totals.append(total)
    return times, totals


def committed_by(curve: Curve, at: float) -> float:
    """Bars committed by ``at``, linear between two commits: a batch of 5,000 bars lands
    at once, but it drained from the queue since the commit before it (without this a
    0.5 s window at 60,000 bars/s holds 5 or 6 batches: 50,000 or 60,000 bars/s)."""
    times, totals = curve
    i = bisect.bisect_right(times, at)
    if i == 0:
        return 0.0
    if i == len(times):
        return float(totals[-1])
    t0, t1, c0, c1 = times[i - 1], times[i], totals[i - 1], totals[i]
    return c0 + (c1 - c0) * (at - t0) / (t1 - t0)


def window_rate(curve: Curve, start: float, end: float) -> float:
    """Bars/s committed between ``start`` and ``end``."""
    return (committed_by(curve, end) - committed_by(curve, start)) / (end - start)


def dips(
    curve: Curve, start: float, end: float, target: float, window: float = 0.5, grain: float = 0.01
) -> float | None:
    """Share of the ``window`` s windows starting in [``start``, ``end`` - ``window``] (on a
    ``grain`` grid) whose commit rate is under ``target`` bars/s; None: no window fits."""
    starts = int((end - window - start) / grain + 1e-9) + 1
    if starts <= 0:
        return None
    low = sum(
        window_rate(curve, start + i * grain, start + i * grain + window) < target
        for i in range(starts)
    )
    return low / starts


def recovery_time(
    curve: Curve,
    step: float,
    until: float,
    target: float,
    window: float = 0.5,
    sustain: float | None = 0.5,
    grain: float = 0.01,
) -> float | None:
    """Seconds from ``step`` to the first time t (on a ``grain`` grid) from which the
    commit rate over ``window`` s reaches ``target`` bars/s in every window starting
    within ``sustain`` s (None: in every window that ends by ``until``); None if never.
    A queue drained at once after the step is no recovery: it does not last."""
    starts = round((until - window - step) / grain) + 1  # window starts that fit
    good = [
        window_rate(curve, step + i * grain, step + i * grain + window) >= target
        for i in range(max(starts, 0))
    ]
    need = len(good) if sustain is None else round(sustain / grain) + 1
    held = 0
    for i, ok in enumerate(good):
        held = held + 1 if ok else 0
        if held == need or (sustain is None and ok and i == len(good) - 1):
            return (i - held + 1) * grain
    return None


# -- watchers -------------------------------------------------------------------------


class Snapshots:
    """``pg_current_snapshot()`` every ``interval`` s until ``stop`` (which takes one more)."""

    def __init__(self, url: str, interval: float = 0.02) -> None:
        self.url = url
        self.interval = interval
        self.taken: list[Snapshot] = []
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self.url)
        await self._take()
        self._task = asyncio.create_task(self._run())

    async def _take(self) -> None:
        assert self._conn is not None
        before = time.time()
        text = await self._conn.fetchval("SELECT pg_current_snapshot()::text")
        self.taken.append(Snapshot.parse((before + time.time()) / 2, str(text)))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self._take()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._take()
            await self._conn.close()


class QueueSampler:
    """The coordinator's (time, queue_size, capacity), from ``/healthz`` every ``interval`` s."""

    def __init__(self, base: str, interval: float = 0.025) -> None:
        self.base = base
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=5) as http:
            while True:
                response = await http.get("/healthz")
                at = time.time()
                for component in response.json()["components"]:
                    if component["name"] == "coordinator":
                        details = component["details"]
                        size, capacity = int(details["queue_size"]), int(details["capacity"])
                        self.samples.append((at, size, capacity))
                await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def utilization(self, start: float, end: float) -> list[float]:
        return [size / cap for at, size, cap in self.samples if start <= at <= end and cap]


class LevelWatch:
    """(ts, level) of ``coordinator``'s feedback events, ts being the store's own."""

    def __init__(self, base: str, coordinator: str) -> None:
        self.base = base
        self.coordinator = coordinator
        self.events: list[tuple[float, str]] = []
        self._first = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 10.0) -> None:
        """Returns once the stream's snapshot (the level now) arrived."""
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(timeout):
            await self._first.wait()

    async def _run(self) -> None:
        params = {"coordinator_id": self.coordinator}
        timeout = httpx.Timeout(5.0, read=None)
        async with (
            httpx.AsyncClient(base_url=self.base, timeout=timeout) as http,
            http.stream("GET", "/v1/feedback/stream", params=params) as response,
        ):
            event, data = "", ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif not line:
                    if event == "feedback" and data:
                        body = json.loads(data)
                        self.events.append((float(body["ts"]), str(body["level"])))
                        self._first.set()
                    event, data = "", ""

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class ThrottledLink:
    """A TCP proxy, in a process of its own, between the store and PostgreSQL (``url``
    goes through it): what the store sends (COPY data, statements) flows at most at
    ``rate`` bytes/s, all connections together, while ``rate`` > 0; ``sent``: bytes so far.
    Both live in 16 bytes of a file both processes map (the rate, then the count)."""

    def __init__(self, database_url: str) -> None:
        self._file = tempfile.NamedTemporaryFile(prefix="mds-link-")  # noqa: SIM115
        self._file.write(bytes(16))
        self._file.flush()
        self._shared = mmap.mmap(self._file.fileno(), 16)
        upstream = json.dumps(upstream_of(database_url))
        self.process = subprocess.Popen(
            [sys.executable, __file__, self._file.name, upstream], stdout=subprocess.PIPE
        )
        assert self.process.stdout is not None
        port = self.process.stdout.readline().strip()
        if not port.isdigit():
            self.close()
            raise RuntimeError("the throttled link did not start")
        self.url = through(database_url, int(port))

    @property
    def rate(self) -> float:
        return float(struct.unpack_from("d", self._shared, 0)[0])

    @rate.setter
    def rate(self, bytes_per_second: float) -> None:
        struct.pack_into("d", self._shared, 0, bytes_per_second)

    @property
    def sent(self) -> int:
        return int(struct.unpack_from("q", self._shared, 8)[0])

    def close(self) -> None:
        self.process.kill()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._shared.close()
        self._file.close()


def upstream_of(url: str) -> tuple[str, int] | str:
    """(host, port) or a unix socket path for a PostgreSQL URL (pgserver uses sockets)."""
    parts = urlsplit(url)
    host = parse_qs(parts.query).get("host", [None])[0]
    port = parts.port or 5432
    if host and host.startswith("/"):
        return f"{host}/.s.PGSQL.{port}"
    return (parts.hostname or "127.0.0.1", port)


def through(url: str, port: int) -> str:
    """``url`` going to 127.0.0.1:``port`` (its other query parameters kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "host"]
    netloc = f"{userinfo}127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))


async def _link(shared: mmap.mmap, upstream: tuple[str, int] | str) -> None:
    """The link's process: ``shared`` holds the rate (a double) and the count (an int64)."""
    next_free = 0.0  # when the link is free again (monotonic), all connections together

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, paced: bool) -> None:
        nonlocal next_free
        try:
            while data := await src.read(65536):
                if paced:
                    sent = struct.unpack_from("q", shared, 8)[0]
                    struct.pack_into("q", shared, 8, sent + len(data))
                    limit = struct.unpack_from("d", shared, 0)[0]
                    if limit > 0:
                        now = time.monotonic()
                        start = max(next_free, now)
                        next_free = start + len(data) / limit
                        await asyncio.sleep(start - now)
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.transport.abort()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if isinstance(upstream, str):
            up_reader, up_writer = await asyncio.open_unix_connection(upstream)
        else:
            up_reader, up_writer = await asyncio.open_connection(*upstream)
        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":  # ThrottledLink's process: the file both map, the upstream
    with open(sys.argv[1], "r+b") as file:
        shared = mmap.mmap(file.fileno(), 16)
    target = json.loads(sys.argv[2])
    uvloop.run(_link(shared, target if isinstance(target, str) else tuple(target)))
