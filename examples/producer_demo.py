"""Watch a producer slow down to the store's pace, and lose nothing.

    make run                                        # the store, in another terminal
    .venv/bin/python examples/producer_demo.py      # [--url URL] [--bars N] [--rate N] ...

A producer generates ``--bars`` one-minute bars (``--symbols`` symbols, exact
decimal prices) as fast as it can (or at ``--rate`` bars/s) and hands them to a
``StoreClient`` (``market_data_store.client``): batches of ``--batch-size``,
MessagePack, ``--in-flight`` concurrent requests. Pushed faster than the
database writes, the store's queue fills and its feedback turns ``soft`` /
``hard``: each level change is printed as it happens, with the client's rate
limit and the rate it actually sends; a status line follows every second.

At the end every bar is read back (``GET /v1/bars``, pages of 10,000) and
compared with what was generated: written / sent / accepted / stored, and
whether every stored value is exact. The exit status is 0 only if nothing was
lost. Bars are keyed by (provider, symbol, minute): running it again rewrites
the same rows.

If the store never pushes back (the database keeps up), give it a smaller
queue: ``MDS_COORDINATOR_CAPACITY=2000 make run``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from market_data_store.client import BatchFailedError, Feedback, StoreClient

T0 = datetime(2020, 1, 1, tzinfo=UTC)
RESOLUTION = "1m"
PAGE = 10_000  # the most GET /v1/bars answers at once
CENT = Decimal("0.01")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8081", help="the store (make run)")
    p.add_argument("--bars", type=int, default=300_000, help="bars to write")
    p.add_argument("--symbols", type=int, default=10, help="symbols the bars are spread over")
    p.add_argument(
        "--rate", type=float, default=0.0, help="bars/s the producer offers (0: as fast as it can)"
    )
    p.add_argument("--batch-size", type=int, default=5_000, help="bars per request")
    p.add_argument("--in-flight", type=int, default=4, help="concurrent requests")
    p.add_argument("--provider", default="producer-demo", help="provider of the bars")
    p.add_argument("--no-feedback", action="store_true", help="do not follow the feedback stream")
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


def make_bars(first: int, count: int, symbols: int) -> list[dict[str, Any]]:
    """Bars ``first`` .. ``first + count - 1``: minute-major, symbol-minor."""
    out = []
    for n in range(first, first + count):
        minute, symbol = divmod(n, symbols)
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
    return out


class Show:
    """Prints as things happen, stamped with the seconds since the start."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.client: StoreClient | None = None
        self.levels: Counter[str] = Counter()
        self.last: dict[str, str] = {}

    def line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.2f}s] {text}", flush=True)

    def rates(self) -> str:
        client = self.client
        if client is None:
            return ""
        limit = "unlimited" if client.rate is None else f"{client.rate:,.0f} bars/s"
        return f"limit {limit}, sending {client.send_rate:,.0f} bars/s"

    def feedback(self, event: Feedback) -> None:
        before = self.last.get(event.coordinator_id)
        self.last[event.coordinator_id] = event.level
        if before == event.level:
            return
        self.levels[event.level] += 1
        action = {"ok": "resuming", "soft": "slowing down", "hard": "pausing"}[event.level]
        util = event.utilization if event.utilization is not None else 0.0
        self.line(
            f"feedback {event.coordinator_id}: {before or '?'} -> {event.level.upper():<4} "
            f"queue {event.queue_size:,}/{event.capacity:,} ({util:.0%}) via {event.via}"
            f" -> {action}; {self.rates()}"
        )


async def produce(args: argparse.Namespace, client: StoreClient, show: Show) -> None:
    chunk = 1_000
    began = time.monotonic()
    for first in range(0, args.bars, chunk):
        bars = make_bars(first, min(chunk, args.bars - first), args.symbols)
        if args.rate > 0:  # offer at most --rate bars/s
            due = began + first / args.rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        await client.write(bars)
    await client.flush(timeout=args.timeout)


async def status(client: StoreClient, show: Show) -> None:
    while True:
        await asyncio.sleep(1.0)
        s = client.stats
        show.line(
            f"sent {s.bars_sent:,} accepted {s.bars_accepted:,} | level {client.level} | "
            f"{show.rates()} | producer waited {s.write_wait_seconds:.1f}s for room"
        )


async def count_stored(
    url: str, args: argparse.Namespace, minutes: int
) -> tuple[int, int, dict[str, Any] | None]:
    """(stored, wrong) over this run's keys; wrong: bars whose values differ."""
    stored = wrong = 0
    sample: dict[str, Any] | None = None
    end = T0 + timedelta(minutes=minutes)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for symbol in range(args.symbols):
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
    client = StoreClient(
        args.url,
        provider=args.provider,
        batch_size=args.batch_size,
        max_in_flight=args.in_flight,
        follow_feedback=not args.no_feedback,
        on_feedback=show.feedback,
    )
    show.client = client
    show.line(
        f"writing {args.bars:,} bars ({args.symbols} symbols) to {args.url}: batches of "
        f"{args.batch_size:,}, {args.in_flight} in flight, offered "
        + (f"{args.rate:,.0f} bars/s" if args.rate > 0 else "as fast as possible")
    )
    ticker = asyncio.create_task(status(client, show))
    failed: list[BatchFailedError] = []
    try:
        async with asyncio.timeout(args.timeout):
            try:
                await produce(args, client, show)
            except BatchFailedError as exc:
                failed.append(exc)
            await client.aclose(timeout=30)
    except BatchFailedError as exc:
        failed.append(exc)
    except (TimeoutError, httpx.HTTPError) as exc:
        show.line(f"stopped: {type(exc).__name__} {exc}")
        return 1
    finally:
        ticker.cancel()
        failed.extend(client.take_failures())  # raised one by one by aclose otherwise
        with contextlib.suppress(BatchFailedError):
            await client.aclose(timeout=5)  # a no-op when closed already
    failed.extend(client.take_failures())
    elapsed = time.monotonic() - show.started
    s = client.stats
    show.line(
        f"flushed in {elapsed:.1f}s: {s.bars_accepted / elapsed:,.0f} bars/s accepted on average"
    )

    # Accepted means queued: wait (a little) for the store to commit the last ones.
    minutes = -(-args.bars // args.symbols)
    stored = wrong = 0
    sample = None
    deadline = time.monotonic() + 30
    while True:
        stored, wrong, sample = await count_stored(args.url, args, minutes)
        if stored >= args.bars or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    lost = args.bars - stored
    print(
        f"written {s.bars_written:,}  sent {s.bars_sent:,}  accepted {s.bars_accepted:,}  "
        f"stored {stored:,}  lost {lost:,}  wrong values {wrong:,}"
    )
    print(
        f"requests {s.requests:,} (retries {s.retries}, 503 refusals {s.refused}, "
        f"connection errors {s.transport_errors}, failed batches {s.batches_failed}); "
        f"sends held back {s.throttled_seconds:.1f}s (summed over senders); producer waited "
        f"{s.write_wait_seconds:.1f}s for buffer room"
    )
    seen = ", ".join(f"{level} x{n}" for level, n in sorted(show.levels.items())) or "none"
    print(f"feedback levels seen: {seen} ({s.feedback_events} stream events)")
    if sample is not None:
        print(f"a stored bar: {sample}")
    if not (show.levels["soft"] or show.levels["hard"]):
        print(
            "hint: the store never pushed back (its database kept up). Give it a smaller queue, "
            "e.g. MDS_COORDINATOR_CAPACITY=2000 make run, or send more bars (--bars)."
        )
    for error in failed:
        print(f"FAILED: {error}")
    ok = lost == 0 and wrong == 0 and not failed
    print("nothing lost" if ok else "SOMETHING WAS LOST")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
