"""Watch producers share the store's capacity, and lose nothing.

    make run                                        # the store, in another terminal
    make producer-demo                              # [ARGS="--producers 8 --bars 800000"]

Two rounds against the same store, ``--bars`` one-minute bars each (exact decimal
prices, ``--producers`` producers with symbols of their own):

1. **The ceiling.** Raw producers push pre-encoded 5,000-bar MessagePack bodies
   as fast as the store takes them, ignoring its feedback (on a 503 they wait
   10 ms and try again). The queue fills: the store's feedback goes ``soft``,
   ``hard``, and ``ok`` once it drains; each change is printed as the stream
   (``GET /v1/feedback/stream``) reports it. The time until their last bar is
   committed gives the store's ceiling in bars/s.
2. **The loop.** One ``StoreClient`` per producer (``market_data_store.client``,
   default options: answered at commit, paced by the store's credit) writes as
   fast as ``write()`` lets it. Their goodput (bars committed over the time from
   the first write to the last commit) is printed against the ceiling, with the
   503s they saw and the levels the store reported meanwhile.

At the end the clients' bars are read back (``GET /v1/bars``, pages of 10,000)
and compared with what was generated. The exit status is 0 only if nothing was
lost. Bars are keyed by (provider, symbol, minute): running it again rewrites the
same rows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import msgspec

from market_data_store.client import BatchFailedError, StoreClient

T0 = datetime(2020, 1, 1, tzinfo=UTC)
RESOLUTION = "1m"
PAGE = 10_000  # the most GET /v1/bars answers at once
CENT = Decimal("0.01")
RAW_BODY = 5_000  # bars per request of the raw producers
RAW_RETRY = 0.01  # seconds a raw producer waits after a 503


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8081", help="the store (make run)")
    p.add_argument("--bars", type=int, default=400_000, help="bars to write in each round")
    p.add_argument("--producers", type=int, default=4, help="producers in each round")
    p.add_argument("--symbols", type=int, default=5, help="symbols of each producer")
    p.add_argument("--provider", default="producer-demo", help="provider of the clients' bars")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    return p.parse_args(argv)


def prices(symbol: int, minute: int) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
    """Deterministic exact prices of one bar (open, high, low, close, volume)."""
    return (*_ohlc(symbol, minute % 997), Decimal(minute))


@functools.cache
def _ohlc(symbol: int, step: int) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    base = Decimal(100 + symbol * 7) + Decimal(step) * CENT
    return base, base + Decimal("0.25"), base - Decimal("0.125"), base + CENT


def symbol_name(symbol: int) -> str:
    return f"DEMO{symbol:03d}"


def make_bars(
    first: int, count: int, symbols: int, offset: int = 0, *, text: bool = False
) -> list[dict[str, Any]]:
    """Bars ``first`` .. ``first + count - 1``: minute-major, over symbols ``offset`` ..
    ``offset + symbols - 1``; ``text``: as they go on the wire (strings)."""
    out = []
    for n in range(first, first + count):
        minute, symbol = divmod(n, symbols)
        symbol += offset
        o, h, lo, c, v = prices(symbol, minute)
        out.append(
            {
                "symbol": symbol_name(symbol),
                "ts": T0 + timedelta(minutes=minute),
                "open": o,
                "high": h,
                "low": lo,
                "close": c,
                "volume": v,
                "resolution": RESOLUTION,
            }
        )
    if text:
        for bar in out:
            for key in ("open", "high", "low", "close", "volume"):
                bar[key] = str(bar[key])
            ts = bar["ts"]
            assert isinstance(ts, datetime)
            bar["ts"] = ts.isoformat().replace("+00:00", "Z")
    return out


class Show:
    """Prints as things happen, stamped with the seconds since the start; counts the
    store's level changes per round."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.round = ""
        self.levels: Counter[tuple[str, str]] = Counter()
        self.last: dict[str, str] = {}
        self.clients: list[StoreClient] = []

    def line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.2f}s] {text}", flush=True)

    def event(self, event: dict[str, Any]) -> None:
        coordinator, level = str(event.get("coordinator_id")), str(event.get("level"))
        before = self.last.get(coordinator)
        self.last[coordinator] = level
        if before == level:
            return
        if before is not None:
            self.levels[(self.round, level)] += 1
        credit = event.get("credit")
        drain = event.get("drain_rate")
        self.line(
            f"store {coordinator}: {before or '?'} -> {level.upper():<4} queue "
            f"{event.get('queue_size', 0):,}/{event.get('capacity', 0):,}"
            + (f", draining {drain:,.0f} bars/s" if isinstance(drain, int | float) else "")
            + (f", credit {credit:,} per producer" if isinstance(credit, int) else "")
        )

    def seen(self, round_name: str) -> str:
        counts = [f"{lv} x{n}" for (r, lv), n in sorted(self.levels.items()) if r == round_name]
        return ", ".join(counts) or "no change"


async def follow(url: str, show: Show) -> None:
    """Print the store's level changes (its feedback stream), reconnecting."""
    while True:
        with contextlib.suppress(httpx.HTTPError):
            async with (
                httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10, read=60)) as http,
                http.stream("GET", "/v1/feedback/stream") as response,
            ):
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        with contextlib.suppress(ValueError):
                            data = json.loads(line[5:])
                            if isinstance(data, dict) and "level" in data:
                                show.event(data)
        await asyncio.sleep(1.0)


async def ceiling(args: argparse.Namespace, show: Show) -> tuple[float, int]:
    """Raw producers keep the queue full; (bars/s until the last one is committed, 503s)."""
    per = args.bars // args.producers
    provider = f"{args.provider}-ceiling"
    bodies = [
        [
            msgspec.msgpack.encode(
                {
                    "provider": provider,
                    "bars": make_bars(
                        i, min(RAW_BODY, per - i), args.symbols, k * args.symbols, text=True
                    ),
                }
            )
            for i in range(0, per, RAW_BODY)
        ]
        for k in range(args.producers)
    ]
    refused = 0
    headers = {"content-type": "application/msgpack"}

    async def producer(http: httpx.AsyncClient, mine: list[bytes]) -> None:
        nonlocal refused
        for body in mine:
            while True:
                response = await http.post("/v1/bars", content=body, headers=headers)
                if response.status_code == 503:
                    refused += 1
                    await asyncio.sleep(RAW_RETRY)
                    continue
                response.raise_for_status()
                break

    async with httpx.AsyncClient(base_url=args.url, timeout=60) as http:
        began = time.monotonic()
        await asyncio.gather(*(producer(http, mine) for mine in bodies))
        # the queue is FIFO: once one more bar is committed, every bar before it is
        marker = make_bars(per, 1, 1, 10_000, text=True)
        answer = await http.post(
            "/v1/bars", params={"wait": "commit"}, json={"provider": provider, "bars": marker}
        )
        answer.raise_for_status()
        elapsed = time.monotonic() - began
    return per * args.producers / elapsed, refused


async def clients(args: argparse.Namespace, show: Show) -> tuple[float, list[BatchFailedError]]:
    """One default StoreClient per producer; (goodput in bars/s, failures)."""
    per = args.bars // args.producers
    data = [make_bars(0, per, args.symbols, k * args.symbols) for k in range(args.producers)]
    failed: list[BatchFailedError] = []
    show.clients = [
        StoreClient(args.url, provider=args.provider, follow_feedback=False)
        for _ in range(args.producers)
    ]

    async def producer(client: StoreClient, bars: list[dict[str, Any]]) -> None:
        try:
            for first in range(0, len(bars), 1_000):
                await client.write(bars[first : first + 1_000])
            await client.aclose(timeout=args.timeout)
        except BatchFailedError as exc:
            failed.append(exc)
        finally:
            failed.extend(client.take_failures())
            with contextlib.suppress(BatchFailedError):
                await client.aclose(timeout=5)

    began = time.monotonic()
    await asyncio.gather(*(producer(c, d) for c, d in zip(show.clients, data, strict=True)))
    return per * args.producers / (time.monotonic() - began), failed


async def status(show: Show) -> None:
    while True:
        await asyncio.sleep(1.0)
        if show.clients:
            committed = sum(c.stats.bars_committed for c in show.clients)
            credits = sorted({c.credit for c in show.clients if c.credit is not None})
            shown = "/".join(f"{c:,}" for c in credits) or "?"
            show.line(f"clients: {committed:,} bars committed; credit {shown} bars each")


async def count_stored(
    url: str, args: argparse.Namespace, minutes: int
) -> tuple[int, int, dict[str, Any] | None]:
    """(stored, wrong) over this run's keys; wrong: bars whose values differ."""
    stored = wrong = 0
    sample: dict[str, Any] | None = None
    end = T0 + timedelta(minutes=minutes)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for symbol in range(args.symbols * args.producers):
            start = T0
            while True:
                response = await http.get(
                    "/v1/bars",
                    params={
                        "provider": args.provider,
                        "symbol": symbol_name(symbol),
                        "resolution": RESOLUTION,
                        "start": start.isoformat(),
                        "end": end.isoformat(),
                        "limit": PAGE,
                    },
                )
                response.raise_for_status()
                page = response.json()
                for bar in page["bars"]:
                    ts = datetime.fromisoformat(bar["ts"])
                    minute = int((ts - T0).total_seconds() // 60)
                    expected = prices(symbol, minute)
                    got = tuple(Decimal(bar[f]) for f in ("open", "high", "low", "close", "volume"))
                    stored += 1
                    if got != expected:
                        wrong += 1
                    sample = sample or bar
                if not page["truncated"]:
                    break
                start = datetime.fromisoformat(page["bars"][-1]["ts"]) + timedelta(microseconds=1)
    return stored, wrong, sample


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    show = Show()
    per = args.bars // args.producers
    show.line(
        f"{args.producers} producers x {per:,} bars against {args.url}, twice: raw bodies "
        "ignoring feedback (the store's ceiling), then default StoreClients"
    )
    follower = asyncio.create_task(follow(args.url, show))
    ticker = asyncio.create_task(status(show))
    try:
        async with asyncio.timeout(args.timeout):
            await asyncio.sleep(0.2)  # the stream's snapshot first
            show.round = "ceiling"
            show.line(f"round 1: raw producers, {RAW_BODY:,}-bar bodies, 503 -> retry in 10 ms")
            top, raw_refused = await ceiling(args, show)
            show.line(f"ceiling: {top:,.0f} bars/s committed ({raw_refused} x 503 refused)")
            show.round = "clients"
            show.line("round 2: StoreClients, default options")
            goodput, failed = await clients(args, show)
    except (TimeoutError, httpx.HTTPError) as exc:
        show.line(f"stopped: {type(exc).__name__} {exc}")
        return 1
    finally:
        ticker.cancel()
        follower.cancel()
    stats = [c.stats for c in show.clients]
    refused = sum(s.refused for s in stats)
    show.line(f"clients: {goodput:,.0f} bars/s committed ({refused} x 503 refused)")

    minutes = -(-per // args.symbols)
    stored, wrong, sample = await count_stored(args.url, args, minutes)
    lost = per * args.producers - stored
    print(
        f"goodput {goodput:,.0f} bars/s = {goodput / top:.2f} x the ceiling "
        f"({top:,.0f} bars/s); 503s: raw {raw_refused}, clients {refused}"
    )
    print(
        f"store levels: ceiling round {show.seen('ceiling')}; clients round {show.seen('clients')}"
    )
    committed = sum(s.bars_committed for s in stats)
    print(
        f"written {sum(s.bars_written for s in stats):,}  committed {committed:,}  "
        f"stored {stored:,}  lost {lost:,}  wrong values {wrong:,}  "
        f"(requests {sum(s.requests for s in stats):,})"
    )
    if sample is not None:
        print(f"a stored bar: {sample}")
    for error in failed:
        print(f"FAILED: {error}")
    ok = lost == 0 and wrong == 0 and not failed
    print("nothing lost" if ok else "SOMETHING WAS LOST")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
