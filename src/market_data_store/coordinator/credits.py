"""How much producers may send: one window of items, shared evenly among them.

The store's answer to backpressure is a credit, as in HTTP/2 flow control or
Reactive Streams' ``request(n)``: each answer to a producer says how many items it
may have sent and not yet had answered. A producer that waits for the commit
before it counts a request as answered is clocked by the store's own writes (TCP's
ack clocking): when the database slows down, answers come back more slowly and
every producer slows down with them, without a single event, and the queue does
not grow beyond what the window holds.

The window (``total``) is sized so that the queue stays short but never runs dry
while producers want to send: every time a worker takes a batch, the queue size
it found is compared with a target (about 50 ms of writing, at least 250 items per
active producer, within ``[low_target, high_target]``, under the low watermark) and
the window grows or shrinks multiplicatively with the error, at most ``e**GAIN`` per
second. It stays under the high watermark plus a batch per worker (what is queued
while every worker writes is not ``hard``) and never grows while producers leave
a quarter of it unused (so an idle store does not promise a burst it cannot queue);
it does not shrink while twice what it allows is queued (producers that ignore the
credit are not held back by it, and those that follow it would pay for them).
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
        self.high_target = max(1, int(0.8 * low_watermark))
        self.low_target = max(1, min(batch_size, self.high_target))
        self.floor = self.low_target
        # with every worker holding a batch, the rest queued stays under the high
        # watermark: only a database that stops taking batches makes the queue hard
        self.ceiling = max(self.floor, min(capacity, high_watermark) - 1) + workers * min(
            batch_size, capacity
        )
        self.total = float(min(self.ceiling, self.high_target))
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

    def observe(self, found: int, outstanding: int, drain_rate: float) -> None:
        """A worker took a batch from a queue of ``found`` items; ``outstanding``
        items are accepted and not yet written."""
        now = self._clock()
        last, self._last = self._last, now
        if last is None:
            return
        dt = min(MAX_DT, now - last)
        target = self.target(drain_rate)
        error = max(-1.0, min(1.0, (target - found) / target))
        if error > 0 and outstanding < self.total / 4:
            return  # the window is not what holds producers back: do not promise more
        if error < 0 and outstanding > 2 * self.total:
            return  # producers that ignore the credit fill the queue: not the window's doing
        self.total = min(self.ceiling, max(self.floor, self.total * math.exp(GAIN * error * dt)))
