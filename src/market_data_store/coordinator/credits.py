"""How much producers may send: one window of items, shared evenly among them.

The store's answer to backpressure is a credit, as in HTTP/2 flow control or
Reactive Streams' ``request(n)``: each answer to a producer says how many items it
may have sent and not yet had answered. A producer that waits for the commit
before it counts a request as answered is clocked by the store's own writes (TCP's
ack clocking): when the database slows down, answers come back more slowly and
every producer slows down with them, without a single event, and the queue does
not grow beyond what the window holds.

The window (``total``) is sized so that the queue stays short but never runs dry
while producers want to send: every time a worker takes a batch, the standing
queue it found is compared with a target (about 50 ms of writing, at least 250
items per active producer, within ``[low_target, high_target]``, under the low
watermark) and the window grows or shrinks multiplicatively with the error, at
most ``e**GAIN`` per second.

The standing queue is CoDel's: what was queued, counted at most as what the drain
moves in the time its oldest item waited. A request of 5,000 bars that a waiting
worker takes the moment it arrives is no queue; so where the writers outrun the
decoding of requests (the default service) the window grows until producers
always have requests on their way, not merely until one request is smaller than
the target. Above the low watermark every item found counts (the queue is
``soft`` there: producers were told to slow down).

The window stays under ``ceiling``: the high watermark plus what the workers hold
while they all write, each counted as at most half the queue (a worker writing
at once for waiting producers takes what is there, seldom a whole batch). A take
that finds the queue ``hard`` all the same (bursts: the answers of one commit
release their producers' next requests together) cuts a learned bound to
``CUT`` of the window, which then relaxes by ``RELAX`` per second (BBR's
``inflight_hi``); the window stays under it too. It never grows while producers
leave a quarter of it unused (so an idle store does not promise a burst it
cannot queue); it does not shrink while twice what it allows is queued
(producers that ignore the credit are not held back by it, and those that
follow it would pay for them).
Each active producer (one that named itself with a request in the last
``idle_after`` seconds, or still has one in the store) gets ``total / active``,
which is what makes the shares fair.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

GAIN = 8.0
"""Largest change of the window per second: a factor ``e**GAIN`` (about 3,000)."""
TARGET_SECONDS = 0.05
"""The queue a worker should find, in seconds of the recent drain."""
PER_PRODUCER = 250
"""…and at least this many items per active producer (each has a request queued)."""
MIN_CREDIT = 50
"""No producer is offered less than this (a smaller request costs more than it moves)."""
MAX_DT = 0.25
CUT = 0.7
"""A take that finds the queue ``hard`` bounds the window to this share of it..."""
RELAX = 0.5
"""...a bound that then relaxes by ``e**RELAX`` per second (about 65 %)."""
CUT_EVERY = 0.1
"""Seconds between two cuts (the takes of one burst cut once)."""
RECOUNT_AFTER = 0.05
"""Seconds a count of the active producers is reused (each answer and each batch taken
asks for it; counting walks every producer remembered, up to ``max_producers``)."""


class Credits:
    """The window of a coordinator and its split among producers (plain arithmetic,
    driven by ``observe`` on each batch taken; no task, no lock)."""

    def __init__(
        self,
        *,
        capacity: int,
        high_watermark: int,
        low_watermark: int,
        batch_size: int,
        workers: int,
        idle_after: float = 0.5,
        max_producers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.low_watermark = low_watermark
        self.high_watermark = high_watermark
        self.high_target = max(1, int(0.8 * low_watermark))
        self.low_target = max(1, min(batch_size, self.high_target))
        self.floor = self.low_target
        # with every worker holding what it takes, the rest queued stays under the high
        # watermark: only a database that stops taking batches makes the queue hard
        held = min(batch_size, max(1, capacity // 2))
        self.ceiling = max(self.floor, min(capacity, high_watermark) - 1) + workers * held
        self.total = float(min(self.ceiling, self.high_target))
        self.bound = float(self.ceiling)  # learned from hard takes (``CUT``, ``RELAX``)
        self._cut_at: float | None = None
        self.idle_after = idle_after
        self.max_producers = max_producers
        self._clock = clock
        self._producers: dict[str, list[float]] = {}  # id -> [requests inside, last seen]
        self._last: float | None = None
        self._counted: tuple[float, int] | None = None  # (when, active producers)

    # -- producers -----------------------------------------------------------

    def enter(self, producer: str) -> None:
        """A request of ``producer`` arrived (pair with ``leave``)."""
        now = self._clock()
        entry = self._producers.get(producer)
        if entry is None:
            if len(self._producers) >= self.max_producers:
                self._forget_idle(now)
                if len(self._producers) >= self.max_producers:
                    return  # counted with the others once there is room
            self._producers[producer] = [1, now]
            self._counted = None  # one more: count again
            return
        entry[0] += 1
        entry[1] = now

    def leave(self, producer: str) -> None:
        """``producer``'s request was answered."""
        entry = self._producers.get(producer)
        if entry is not None:
            entry[0] = max(0, entry[0] - 1)
            entry[1] = self._clock()

    def active(self) -> int:
        """Producers with a request inside or one within ``idle_after`` seconds (a count
        at most ``RECOUNT_AFTER`` s old, or taken since a new producer came)."""
        now = self._clock()
        counted = self._counted
        if counted is not None and now - counted[0] < RECOUNT_AFTER:
            return counted[1]
        if len(self._producers) > 64:
            self._forget_idle(now)
        horizon = now - self.idle_after
        active = max(
            1, sum(1 for inside, seen in self._producers.values() if inside or seen >= horizon)
        )
        self._counted = (now, active)
        return active

    def _forget_idle(self, now: float) -> None:
        horizon = now - self.idle_after
        for key in [
            k for k, (inside, seen) in self._producers.items() if not inside and seen < horizon
        ]:
            del self._producers[key]

    def per_producer(self) -> int:
        """The credit one producer is offered now."""
        return max(MIN_CREDIT, int(self.total / self.active()))

    # -- the window ----------------------------------------------------------

    def target(self, drain_rate: float) -> int:
        """The queue size a worker should find when it takes a batch."""
        wanted = max(drain_rate * TARGET_SECONDS, self.active() * PER_PRODUCER)
        return int(min(self.high_target, max(self.low_target, wanted)))

    def observe(
        self, found: int, outstanding: int, drain_rate: float, *, waited: float | None = None
    ) -> None:
        """A worker took a batch from a queue of ``found`` items, whose oldest had
        waited ``waited`` seconds when the worker came for it (0.0: the worker was
        there first; None: not known, all of ``found`` counts); ``outstanding``
        items are accepted and not yet written."""
        now = self._clock()
        last, self._last = self._last, now
        if last is None:
            return
        dt = min(MAX_DT, now - last)
        # producers that ignore the credit fill the queue: not the window's doing
        ignored = outstanding > 2 * self.total
        if found >= self.high_watermark and not ignored:
            if self._cut_at is None or now - self._cut_at >= CUT_EVERY:
                self._cut_at = now
                self.bound = max(self.floor, min(self.bound, self.total) * CUT)
                self.total = min(self.total, self.bound)
        else:
            self.bound = min(self.ceiling, self.bound * math.exp(RELAX * dt))
        if waited is not None and found <= self.low_watermark:
            found = min(found, int(waited * drain_rate))  # the standing queue
        target = self.target(drain_rate)
        error = max(-1.0, min(1.0, (target - found) / target))
        if error > 0 and outstanding < self.total / 4:
            return  # the window is not what holds producers back: do not promise more
        if error < 0 and ignored:
            return
        grown = self.total * math.exp(GAIN * error * dt)
        self.total = max(self.floor, min(self.bound, grown))  # the bound is <= the ceiling
