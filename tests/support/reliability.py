"""Tools of the fault suite (tests/reliability): producers that remember every bar the
store accepted (or, through ``StoreClient``, every bar the client handed back), probe
and feedback samplers, server memory, and the figures file each scenario leaves for
``scripts/reliability_report.py``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from market_data_store.client import BatchFailedError, ClientStats, StoreClient
from tests.support.bars import wire_bar
from tests.support.sse import open_stream
from tests.support.waits import until

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = Path(os.environ.get("MDS_RELIABILITY_RESULTS", ROOT / ".mds" / "reliability"))
T0 = datetime(2024, 1, 1, tzinfo=UTC)
PROVIDER = "rel"

Values = tuple[str, str, str, str, str]  # open, high, low, close, volume as sent
Key = tuple[str, datetime]  # symbol, ts
FullKey = tuple[str, str, str, datetime]  # provider, symbol, resolution, ts: a row's key


# -- the figures file ------------------------------------------------------------


@dataclass
class ScenarioReport:
    """What one scenario injected and asserted, and what it measured."""

    number: int
    name: str
    injected: str
    asserted: str
    figures: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def write(self, outcome: str) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.number:02d}.json"
        body = {
            "number": self.number,
            "name": self.name,
            "injected": self.injected,
            "asserted": self.asserted,
            "outcome": outcome,
            "duration_s": round(time.monotonic() - self.started, 1),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "figures": self.figures,
        }
        path.write_text(json.dumps(body, indent=2) + "\n")
        return path


# -- measurements ----------------------------------------------------------------


SLOW_WRITER = {  # issue 17's slow writer: every write slow, much in flight at any moment
    "MDS_COORDINATOR_WORKERS": "1",
    "MDS_COORDINATOR_BATCH_SIZE": "100",
    "MDS_DATABASE_COPY_FAST_PATH": "false",
}


def seeded() -> tuple[int, random.Random]:
    """The scenario's seed (``MDS_RELIABILITY_SEED``, else a new one, to report) and a
    generator of its random choices."""
    seed = int(os.environ.get("MDS_RELIABILITY_SEED") or time.time_ns() % 1_000_000)
    return seed, random.Random(seed)


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def feedback_details(client: httpx.AsyncClient) -> dict[str, str]:
    """The ``feedback`` component's details of ``/healthz`` (``redis``, ``subscribers``...)."""
    body = (await client.get("/healthz")).json()
    (feedback,) = [c for c in body["components"] if c["name"] == "feedback"]
    return dict(feedback["details"])


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# -- producers -------------------------------------------------------------------


def bar_values(seq: int) -> Values:
    """Distinct values per bar, with their scale, so a stored row proves it is this bar."""
    base = 100 + seq % 5000
    cents = seq % 100
    return (
        f"{base}.{cents:02d}",
        f"{base + 1}.{cents:02d}",
        f"{base - 1}.{cents:02d}",
        f"{base}.{(cents + 1) % 100:02d}5",
        str(seq + 1),
    )


def bars_of(symbol: str, first: int, n: int) -> list[dict[str, str]]:
    """Bars ``first`` .. ``first + n - 1`` of ``symbol`` from ``T0``, with ``bar_values``."""
    bars = []
    for seq in range(first, first + n):
        o, h, low, c, v = bar_values(seq)
        bars.append(
            wire_bar(
                seq, t0=T0, ts_as="iso", symbol=symbol, open=o, high=h, low=low, close=c, volume=v
            )
        )
    return bars


def as_dict(bars: list[dict[str, str]]) -> dict[Key, Values]:
    return {
        (b["symbol"], datetime.fromisoformat(b["ts"])):
        (b["open"], b["high"], b["low"], b["close"], b["volume"])
        for b in bars
    }  # fmt: skip


def by_key(bars: list[dict[str, Any]], provider: str = PROVIDER) -> dict[FullKey, Values]:
    """Bars (as written, or as a client hands them back) by their whole key."""
    return {
        (provider, b["symbol"], b.get("resolution", "1d"), datetime.fromisoformat(b["ts"])):
        (b["open"], b["high"], b["low"], b["close"], b["volume"])
        for b in bars
    }  # fmt: skip


@dataclass
class Producer:
    """Posts unique bars of one symbol until told to stop; remembers what was accepted.

    A 503 is retried with the same bars after its Retry-After (capped at ``max_wait``
    to keep the test short); any other answer but 201/202 is an error, and a
    transport error too (the fate of those bars would be unknown).
    """

    client: httpx.AsyncClient
    symbol: str
    batch: int = 200
    pace: float = 0.0  # seconds between requests
    max_wait: float = 0.5
    wait_commit: bool = False
    accepted: dict[Key, Values] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: list[str | None] = field(default_factory=list)  # of each 503
    errors: list[str] = field(default_factory=list)
    unknown: dict[Key, Values] = field(default_factory=dict)  # sent, no answer: fate unknown
    refused: int = 0  # connections refused (nothing sent)
    answers: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, status)
    seq: int = 0
    in_flight: bool = False

    async def run(self, stop: asyncio.Event) -> None:
        path = "/v1/bars?wait=commit" if self.wait_commit else "/v1/bars"
        bars = bars_of(self.symbol, self.seq, self.batch)
        while not stop.is_set():
            self.in_flight = True
            try:
                response = await self.client.post(
                    path, json={"provider": PROVIDER, "bars": bars}, timeout=60
                )
            except httpx.ConnectError:
                self.refused += 1  # nothing was sent
                return
            except httpx.HTTPError as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                self.unknown.update(as_dict(bars))
                return
            finally:
                self.in_flight = False
            self.statuses[response.status_code] += 1
            self.answers.append((time.monotonic(), response.status_code))
            if response.status_code in (201, 202):
                self.accepted.update(as_dict(bars))
                self.seq += self.batch
                bars = bars_of(self.symbol, self.seq, self.batch)
                if self.pace:
                    await asyncio.sleep(self.pace)
            elif response.status_code == 503:
                header = response.headers.get("retry-after")
                self.retry_after.append(header)
                wait = float(header) if header and header.isdigit() else self.max_wait
                await asyncio.sleep(min(wait, self.max_wait))
            else:
                self.errors.append(f"{response.status_code}: {response.text[:300]}")
                await asyncio.sleep(0.1)


@dataclass
class ClientProducer:
    """Writes ``bars`` (of one symbol) through a ``StoreClient`` with its default options,
    ``chunk`` bars per ``write``, then closes it; keeps every bar the client handed back
    as failed (raised by ``write``/``aclose``, or left in ``take_failures()``).

    What was written and not handed back is what the client reported delivered.
    """

    base_url: str
    bars: list[dict[str, str]]
    chunk: int = 5000
    handed_back: dict[FullKey, Values] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # their messages
    stats: ClientStats | None = None
    wait_commit: bool | None = None  # the client's default, as it ran
    closed_at: float | None = None  # monotonic

    def hand_back(self, exc: BatchFailedError) -> None:
        self.failures.append(f"{type(exc).__name__}: {exc}")
        self.handed_back.update(by_key(exc.bars))

    async def run(self) -> None:
        client = StoreClient(self.base_url, provider=PROVIDER)
        self.wait_commit = client.wait_commit
        try:
            for first in range(0, len(self.bars), self.chunk):
                piece = self.bars[first : first + self.chunk]
                while True:  # a failure raised by write: nothing of the call was buffered
                    try:
                        await client.write(piece)
                        break
                    except BatchFailedError as exc:
                        self.hand_back(exc)
        finally:
            try:
                await client.aclose()
            except BatchFailedError as exc:
                self.hand_back(exc)
            for failure in client.take_failures():
                self.hand_back(failure)
            self.stats = client.stats
            self.closed_at = time.monotonic()

    @property
    def delivered(self) -> dict[FullKey, Values]:
        """What the client reported delivered: every bar written and not handed back."""
        return {k: v for k, v in by_key(self.bars).items() if k not in self.handed_back}


@dataclass
class CommitPoster:
    """Posts new bars of one symbol with ``?wait=commit`` until told to stop, carrying on
    through a killed service: a refused connection (nothing sent) is tried again with
    the same bars, a request that got no answer (the service died under it) is given up
    (its bars' fate unknown) and the next bars go out. ``committed`` holds the bars of
    every batch answered 201: the store's promise is that all of them are in the table.
    """

    client: httpx.AsyncClient
    symbol: str
    batch: int = 1000
    committed: dict[FullKey, Values] = field(default_factory=dict)  # answered 201
    unknown: dict[FullKey, Values] = field(default_factory=dict)  # no answer, or 202 pending
    statuses: Counter[int] = field(default_factory=Counter)
    answers_201: list[float] = field(default_factory=list)  # monotonic, per 201
    no_answer: int = 0  # sent, the connection died before the answer
    refused: int = 0  # connections refused (the service was down; nothing sent)
    short: list[str] = field(default_factory=list)  # 201s not saying "all committed"
    errors: list[str] = field(default_factory=list)
    seq: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        bars = bars_of(self.symbol, self.seq, self.batch)
        while not stop.is_set():
            try:
                response = await self.client.post(
                    "/v1/bars",
                    params={"wait": "commit"},
                    json={"provider": PROVIDER, "bars": bars},
                    timeout=60,
                )
            except httpx.ConnectError:
                self.refused += 1
                await asyncio.sleep(0.05)
                continue
            except httpx.TransportError:
                self.no_answer += 1
                self.unknown.update(by_key(bars))
            else:
                status = response.status_code
                self.statuses[status] += 1
                if status == 503:
                    header = response.headers.get("retry-after")
                    wait = float(header) if header and header.isdigit() else 0.5
                    await asyncio.sleep(min(wait, 0.5))
                    continue  # the same bars again
                if status == 201:
                    body = response.json()
                    if body.get("committed") != len(bars) or body.get("dead_lettered"):
                        self.short.append(str(body))
                    self.committed.update(by_key(bars))
                    self.answers_201.append(time.monotonic())
                elif status == 202:  # ?wait=commit timed out: pending, no promise
                    self.unknown.update(by_key(bars))
                else:
                    self.errors.append(f"{status}: {response.text[:300]}")
            self.seq += self.batch
            bars = bars_of(self.symbol, self.seq, self.batch)


def statuses_of(producers: list[Producer]) -> Counter[int]:
    """How many answers of each status the producers got."""
    statuses: Counter[int] = Counter()
    for producer in producers:
        statuses.update(producer.statuses)
    return statuses


def accepted_of(producers: list[Producer]) -> dict[Key, Values]:
    merged: dict[Key, Values] = {}
    for producer in producers:
        merged.update(producer.accepted)
    return merged


async def stored_values(url: str) -> dict[Key, Values]:
    """Every bar of ``PROVIDER`` in the table, values as text (scale included)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT symbol, ts, open::text, high::text, low::text, close::text, volume::text"
            " FROM bars WHERE provider = $1",
            PROVIDER,
        )
    finally:
        await conn.close()
    return {(r[0], r[1]): (r[2], r[3], r[4], r[5], r[6]) for r in rows}


async def stored_keys(url: str) -> dict[FullKey, Values]:
    """Every row of ``PROVIDER`` by its whole key (provider, symbol, resolution, ts)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT provider, symbol, resolution, ts, open::text, high::text, low::text,"
            " close::text, volume::text FROM bars WHERE provider = $1",
            PROVIDER,
        )
    finally:
        await conn.close()
    return {(r[0], r[1], r[2], r[3]): (r[4], r[5], r[6], r[7], r[8]) for r in rows}


def diff(accepted: dict[Key, Values], stored: dict[Key, Values]) -> str:
    missing = [k for k in accepted if k not in stored]
    wrong = [k for k in accepted if k in stored and stored[k] != accepted[k]]
    extra = [k for k in stored if k not in accepted]
    return (
        f"{len(missing)} accepted bar(s) missing (e.g. {missing[:3]}), "
        f"{len(wrong)} stored with other values (e.g. {wrong[:3]}), "
        f"{len(extra)} stored that were never accepted (e.g. {extra[:3]})"
    )


async def queue_size(client: httpx.AsyncClient) -> int:
    """The coordinator's queue size, from /healthz."""
    body = (await client.get("/healthz")).json()
    (coordinator,) = [c for c in body["components"] if c["name"] == "coordinator"]
    return int(coordinator["details"]["queue_size"])


async def until_queue_empty(client: httpx.AsyncClient, timeout: float = 60) -> None:
    """Until everything accepted has left the queue (and the last batch is written)."""

    async def drained() -> bool:
        return await queue_size(client) == 0

    await until(drained, timeout=timeout, what="queue drained", interval=0.2)
    await asyncio.sleep(0.5)  # the last batch is written (nothing in /healthz shows it)


# -- samplers --------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    sent: float  # monotonic
    latency: float  # seconds
    status: int  # 0: no answer (refused, reset, timed out)
    circuit_state: str | None = None
    workers_alive: str | None = None


def _probe(sent: float, response: httpx.Response) -> Probe:
    latency = time.monotonic() - sent
    circuit = workers = None
    if response.headers.get("content-type", "").startswith("application/json"):
        for c in response.json().get("components", []):
            if c["name"] == "coordinator":
                circuit = c["details"]["circuit_state"]
                workers = c["details"]["workers_alive"]
    return Probe(sent, latency, response.status_code, circuit, workers)


@dataclass
class ProbeSampler:
    """GET ``path`` every ``interval`` s on its own connection (and thread); every
    answer kept."""

    base_url: str
    path: str = "/readyz"
    interval: float = 0.05
    timeout: float = 2.0
    probes: list[Probe] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        """Probe from a thread of its own until ``stop`` is set: the latency measured is
        then the server's, not the wait for the test's own busy event loop."""
        halt = threading.Event()
        thread = asyncio.create_task(asyncio.to_thread(self.run_blocking, halt))
        try:
            await stop.wait()
        finally:
            halt.set()
            await thread

    def run_blocking(self, stop: threading.Event) -> None:
        with httpx.Client(base_url=self.base_url, timeout=self.timeout) as client:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.get(self.path)
                except httpx.HTTPError:
                    self.probes.append(Probe(sent, time.monotonic() - sent, 0))
                else:
                    self.probes.append(_probe(sent, response))
                stop.wait(max(0.0, self.interval - (time.monotonic() - sent)))

    def latencies(self, since: float = 0.0, until: float = math.inf) -> list[float]:
        return [p.latency for p in self.probes if since <= p.sent < until and p.status]

    def first(self, status: int, after: float) -> Probe | None:
        return next((p for p in self.probes if p.sent >= after and p.status == status), None)


@dataclass
class LevelRecorder:
    """The feedback levels one SSE stream showed, with the monotonic time of arrival."""

    base_url: str
    params: dict[str, str] = field(default_factory=dict)
    levels: list[tuple[float, str]] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Read until cancelled (a timeout around a read would end the stream)."""
        async with (
            httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(5, read=None)) as c,
            open_stream(c, params=self.params) as stream,
        ):
            self.connected.set()
            while True:
                message = await stream.next_event(timeout=3600)
                if message.event == "feedback":
                    self.levels.append((time.monotonic(), message.json()["level"]))

    async def stop(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def between(self, start: float, end: float = math.inf) -> list[str]:
        return [level for t, level in self.levels if start <= t < end]


def dead_lettered(path: Path) -> list[tuple[str, Key, Values]]:
    """(error, key, values) of every item in a dead-letter file, in file order."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            for item in record["items"]:
                ((key, values),) = as_dict([item]).items()
                found.append((record["error"], key, values))
    return found
