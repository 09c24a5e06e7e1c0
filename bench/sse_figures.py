"""The figures of bench/sse.py: delivery over every (subscriber, event) pair, and the
table it prints (the service, the targets, the baseline, the ratios)."""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sse_client import Client, Received

# targets (from the issue)
TARGET_P99_MS = 100.0
TARGET_SINGLE_P50_MS = 5.0
TARGET_KIB = 50.0  # server RSS per idle subscriber


def ok_delay(events: list[Received]) -> float | None:
    """The median delay from a `hard` to the `ok` that follows it (``ts`` to ``ts``)."""
    delays = [
        b.ts - a.ts for a, b in itertools.pairwise(events) if (a.level, b.level) == ("hard", "ok")
    ]
    return statistics.median(delays) if delays else None


def percentile(values: list[float], q: float) -> float:
    """Nearest rank; ``values`` sorted."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))]


@dataclass
class Delivery:
    subscribers: int = 0  # meant to be open
    opened: int = 0
    complete: int = 0  # got every published event
    missing: int = 0  # (subscriber, event) pairs never received
    duplicates: int = 0
    out_of_order: int = 0
    ended_early: int = 0  # streams the server closed
    latencies_ms: list[float] = field(default_factory=list)
    by_level: dict[str, list[float]] = field(default_factory=dict)
    by_event: dict[int, list[float]] = field(default_factory=dict)

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def spread(self) -> str:
        """Per event, the first and the last subscriber reached: median over events
        (worst event)."""
        first = sorted(min(v) for v in self.by_event.values())
        last = sorted(max(v) for v in self.by_event.values())
        return (
            f"{percentile(first, 50):.1f} ({first[-1] if first else float('nan'):.1f})"
            f" / {percentile(last, 50):.1f} ({last[-1] if last else float('nan'):.1f})"
        )

    def levels(self, q: float) -> str:
        """Percentile ``q`` per level, soft / hard / ok, e.g. ``3.1 / 3.2 / 1.0``."""
        return " / ".join(
            f"{percentile(self.by_level.get(level, []), q):.1f}" for level in ("soft", "hard", "ok")
        )


def delivery(streams: Iterable[dict[str, Any]], published: list[Received], wanted: int) -> Delivery:
    ids = {e.id for e in published}
    d = Delivery(subscribers=wanted)
    for s in streams:
        if s["status"] != 200:
            continue
        d.opened += 1
        d.ended_early += s["closed"]
        got = [Received(*e) for e in s["events"] if e[0] in ids]
        seen = {e.id for e in got}
        d.complete += seen == ids
        d.missing += len(ids - seen)
        d.duplicates += len(got) - len(seen)
        d.out_of_order += sum(a.id >= b.id for a, b in itertools.pairwise(got))
        for e in got:
            ms = (e.at - e.ts) * 1000
            d.latencies_ms.append(ms)
            d.by_level.setdefault(e.level, []).append(ms)
            d.by_event.setdefault(e.id, []).append(ms)
    d.latencies_ms.sort()
    for values in d.by_level.values():
        values.sort()
    d.missing += (wanted - d.opened) * len(ids)
    return d


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


@dataclass
class Fanout:
    """Steps 2 and 3 on one server: memory per idle subscriber, then the rounds to all."""

    many: Delivery
    events: list[Received]
    clients: list[Client]
    open_during: int
    rss_before: int
    rss_after: int
    problems: list[str] = field(default_factory=list)  # server log warnings/errors, exit

    def kib_per_subscriber(self) -> float:
        return (self.rss_after - self.rss_before) / max(self.open_during, 1) / 1024

    def refused(self) -> str:
        statuses: dict[str, int] = {}
        for client in self.clients:
            for status, count in client.statuses.items():
                statuses[status] = statuses.get(status, 0) + count
        return ", ".join(
            f"{'connect failed' if k == '0' else 'HTTP ' + k}: {v}"
            for k, v in sorted(statuses.items())
            if k != "200"
        )


@dataclass
class Results:
    service: Fanout
    single: Delivery
    single_events: list[Received]
    counters: dict[str, float]
    baseline: Fanout
    baseline_ok_delay: float  # the pause between hard and ok the baseline was asked for


def ratio(service: float, baseline: float) -> str:
    if not baseline > 0 or math.isnan(service):
        return "-"
    return f"{service / baseline:.2f}x"


def report(args: argparse.Namespace, r: Results) -> None:
    svc, base, one, n = r.service, r.baseline, r.single, args.subscribers
    rows: list[tuple[str, str, str, str, str]] = []

    def row(name: str, service: str, target: str = "", baseline: str = "", times: str = "") -> None:
        rows.append((name, service, target, baseline, times))

    def both(name: str, value: Callable[[Fanout], str], target: str = "") -> None:
        row(name, value(svc), target, value(base))

    def ms(value: float) -> str:
        return f"{value:.1f} ms"

    def delay(f: Fanout) -> str:
        d = ok_delay(f.events)
        return "-" if d is None else ms(d * 1000)

    def every(f: Fanout) -> bool:
        return f.many.complete == n and len(f.events) > 0

    p99 = svc.many.pct(99)
    kib = svc.kib_per_subscriber()
    single_p50 = one.pct(50)
    both("subscribers (client processes)", lambda f: f"{n:,} ({args.clients})")
    both("streams opened / open per /healthz", lambda f: f"{f.many.opened:,} / {f.open_during:,}")
    both("streams refused", lambda f: f.refused() or "none")
    both(
        "events published (rounds x levels)",
        lambda f: f"{len(f.events)} ({args.rounds} x {'/'.join(e.level for e in f.events[:3])})",
    )
    both("hard -> ok in a round, median", delay)
    both(
        "subscribers that got every event",
        lambda f: f"{f.many.complete:,} / {n:,}",
        f"all: {verdict(every(svc))}",
    )
    both(
        "missing / duplicate / out-of-order",
        lambda f: f"{f.many.missing} / {f.many.duplicates} / {f.many.out_of_order}",
    )
    both("streams ended by the server", lambda f: f"{f.many.ended_early}")
    for name, q, target in (
        ("delivery latency p50", 50, ""),
        ("delivery latency p99", 99, f"< {TARGET_P99_MS:g} ms: {verdict(p99 < TARGET_P99_MS)}"),
        ("delivery latency max", 100, ""),
    ):
        s, b = svc.many.pct(q), base.many.pct(q)
        row(name, ms(s), target, ms(b), ratio(s, b))
    both("per event first / last, median (worst)", lambda f: f"{f.many.spread()} ms")
    both("p50 soft / hard / ok", lambda f: f"{f.many.levels(50)} ms")
    both("p99 soft / hard / ok", lambda f: f"{f.many.levels(99)} ms")
    both(
        "server RSS before / after (idle)",
        lambda f: f"{f.rss_before / 2**20:.1f} / {f.rss_after / 2**20:.1f} MiB",
    )
    row(
        "server RSS per idle subscriber",
        f"{kib:.1f} KiB",
        f"< {TARGET_KIB:g} KiB: {verdict(kib < TARGET_KIB)}",
        f"{base.kib_per_subscriber():.1f} KiB",
        ratio(kib, base.kib_per_subscriber()),
    )
    row(
        "crossing->client, 1 subscriber p50",
        f"{single_p50:.2f} ms",
        f"< {TARGET_SINGLE_P50_MS:g} ms: {verdict(single_p50 < TARGET_SINGLE_P50_MS)}",
    )
    row("crossing->client p50 soft / hard / ok", f"{one.levels(50)} ms")
    row("crossing->client p99 / max", f"{one.pct(99):.2f} / {one.pct(100):.2f} ms")
    row("crossing->client events, complete", f"{len(one.latencies_ms)}, {one.complete == 1}")
    c = r.counters
    row(
        "server: conflated / dropped slow, timeout",
        f"{c.get('conflated', 0):.0f} / {c.get('dropped:slow', 0):.0f}, "
        f"{c.get('dropped:send_timeout', 0):.0f}",
    )
    both("server log warnings/errors", lambda f: f"{len(f.problems)}")

    head = ("", "service", "target", "baseline", "service/baseline")
    widths = [max(len(cells[i]) for cells in [*rows, head]) for i in range(5)]
    for i, (name, service, target, baseline, times) in enumerate([head, *rows]):
        sep = ":" if i else " "
        print(
            f"{name:<{widths[0]}} {sep} {service:>{widths[1]}}  {target:<{widths[2]}}"
            f"  {baseline:>{widths[3]}}  {times:>{widths[4]}}".rstrip()
        )
    print(
        f"targets (service): every subscriber gets every event: {verdict(every(svc))}; "
        f"p99 < {TARGET_P99_MS:g} ms: {verdict(p99 < TARGET_P99_MS)}; "
        f"crossing->client p50 < {TARGET_SINGLE_P50_MS:g} ms: "
        f"{verdict(single_p50 < TARGET_SINGLE_P50_MS)}; "
        f"< {TARGET_KIB:g} KiB per idle subscriber: {verdict(kib < TARGET_KIB)}"
    )
    print(
        "baseline: the plainest Litestar broadcast (a Queue per subscriber, ServerSentEvent "
        "over an async generator, JSON encoded per subscriber) on uvicorn httptools/uvloop, "
        f"same clients, rounds of soft+hard then ok {r.baseline_ok_delay * 1000:.1f} ms later; "
        "measured after the service, in this run"
    )
    for label, f in (("service", svc), ("baseline", base)):
        for line in f.problems[:10]:
            print(f"  {label} log: {line}")
