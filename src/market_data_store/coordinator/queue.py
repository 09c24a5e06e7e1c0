"""Bounded FIFO queue with watermarks, overflow strategies and batch reads.

Why not ``asyncio.Queue``: it moves one item per call and wakes a getter per
item. This queue lets producers add many items at once (one watermark check per
call), lets workers take whole batches, wakes a worker only when its batch is
ready, and never yields to the event loop on the hot path while there is room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic

from .bus import FeedbackBus, feedback_bus
from .completions import Completions
from .events import BackpressureLevel, FeedbackEvent
from .types import (
    OVERFLOW_STRATEGIES,
    BackpressureCallback,
    DropCallback,
    OverflowStrategy,
    QueueClosedError,
    QueueFullError,
    T,
)
from .watermarks import NEVER, Transition, WatermarkTracker

log = logging.getLogger(__name__)

_Waiter = tuple[int, "asyncio.Future[None]"]
EnqueuedCallback = Callable[[int, int], None]
TakeCallback = Callable[[int, float], None]
Urgency = Callable[[int], bool]
EvictedCallback = Callable[[list[T]], Awaitable[None]]


class BoundedQueue(Generic[T]):
    """Bounded queue emitting backpressure feedback as it fills and drains.

    Overflow strategies when full: ``block`` waits for room (optionally up to a
    timeout, then ``QueueFullError``), ``drop_oldest`` evicts the oldest items
    (``drop_callback`` awaited for each), ``error`` raises ``QueueFullError``.
    Defaults: high watermark 80 % and low watermark 50 % of ``capacity``.
    """

    def __init__(
        self,
        capacity: int,
        high_watermark: int | None = None,
        low_watermark: int | None = None,
        *,
        coord_id: str = "default",
        overflow_strategy: OverflowStrategy = "block",
        on_high: BackpressureCallback | None = None,
        on_low: BackpressureCallback | None = None,
        drop_callback: DropCallback[T] | None = None,
        bus: FeedbackBus | None = None,
        evicted_callback: EvictedCallback[T] | None = None,
    ) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be > 0")
        if overflow_strategy not in OVERFLOW_STRATEGIES:
            raise ValueError(f"overflow_strategy must be one of {OVERFLOW_STRATEGIES}")
        high = high_watermark if high_watermark is not None else max(1, int(0.8 * capacity))
        low = low_watermark if low_watermark is not None else min(int(0.5 * capacity), high - 1)
        if high > capacity:
            raise ValueError(f"high_watermark ({high}) must not exceed capacity ({capacity})")
        self._capacity = capacity
        self._coord_id = coord_id
        self._overflow: OverflowStrategy = overflow_strategy
        self._on_high = on_high
        self._on_low = on_low
        self._drop_cb = drop_callback
        self._evicted_cb = evicted_callback
        self._bus = bus if bus is not None else feedback_bus()
        self._marks = WatermarkTracker(high, low)

        self._items: deque[T] = deque()
        self._reserved = 0  # room promised to woken putters that have not appended yet
        self._room_waiters: deque[_Waiter] = deque()  # FIFO of (items needed, future)
        self._item_waiters: list[_Waiter] = []  # (size wanted, future)
        self._wake_getters_at = NEVER
        self._unfinished = 0
        self._join_waiters: list[asyncio.Future[None]] = []
        self._closed = False
        self._next_seq = 0  # sequence number the next enqueued item gets
        self.completions = Completions(on_wait=self.wake_fillers)
        self.extras: Callable[[], dict[str, Any]] | None = None
        """Extension fields of every event (``drain_rate``, ``credit``), when set."""
        self._arrivals: deque[list[float]] = deque()  # [end seq, monotonic time] per put
        self.on_take: TakeCallback | None = None
        """Called each time a batch is taken (before taking) with the queue size and
        how long its oldest item had waited when the reader came for it (0.0: the
        reader found the queue empty and waited for items)."""
        self.dropped = 0
        """Items evicted by ``drop_oldest`` since creation."""

    # -- state ---------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def size(self) -> int:
        return len(self._items)

    @property
    def high_watermark(self) -> int:
        return self._marks.high

    @property
    def low_watermark(self) -> int:
        return self._marks.low

    @property
    def level(self) -> BackpressureLevel:
        """Current backpressure level (ok, soft or hard)."""
        return self._marks.level

    @property
    def overflow_strategy(self) -> OverflowStrategy:
        return self._overflow

    @property
    def unfinished(self) -> int:
        """Items put but not yet marked done with ``task_done``."""
        return self._unfinished

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def head_seq(self) -> int:
        """Sequence number of the oldest queued item (of the next one, when empty)."""
        return self._next_seq - len(self._items)

    def free(self) -> int:
        """Room available right now to a new put."""
        return self._capacity - len(self._items) - self._reserved

    def feedback_event(self, reason: str | None = None) -> FeedbackEvent:
        """A FeedbackEvent describing the queue as it is now."""
        extras = self.extras() if self.extras is not None else {}
        return FeedbackEvent.create(
            self._coord_id, len(self._items), self._capacity, self._marks.level, reason, **extras
        )

    # -- producers -----------------------------------------------------------

    async def put(self, item: T, timeout: float | None = None) -> None:
        """Add one item, applying the overflow strategy when there is no room."""
        if self._closed:
            raise QueueClosedError("queue is closed")
        items = self._items
        if len(items) + self._reserved >= self._capacity or self._room_waiters:
            if self._overflow == "error":
                raise QueueFullError(f"queue is full ({self._capacity} items)")
            if self._overflow == "drop_oldest":
                await self._append_evicting((item,), None)
                return
            await self._wait_for_room(1, timeout)
            self._reserved -= 1
        items.append(item)
        self._next_seq += 1
        self._unfinished += 1
        self._stamp()
        size = len(items)
        if size >= self._wake_getters_at:
            self._wake_getters(size)
        if size >= self._marks.next_rise:
            await self._emit(self._marks.rise(size - 1, size))

    async def put_many(
        self,
        items: Sequence[T],
        timeout: float | None = None,
        *,
        on_enqueued: EnqueuedCallback | None = None,
    ) -> None:
        """Add ``items`` as one unit, with one watermark check.

        ``block`` waits until they all fit (raising ``QueueFullError`` after
        ``timeout``, nothing enqueued); a call larger than the whole capacity waits
        for the queue to empty and then goes in whole. ``error`` raises at once,
        nothing enqueued, when they do not fit. ``drop_oldest`` evicts the oldest
        items, as that many single puts would. ``on_enqueued(start, end)`` receives
        the items' sequence numbers the moment they are in the queue.
        """
        if self._closed:
            raise QueueClosedError("queue is closed")
        n = len(items)
        if n == 0:
            return
        if self._overflow == "drop_oldest":
            await self._append_evicting(items, on_enqueued)
            return
        if self._fits(n) and not self._room_waiters:
            await self._extend(items, on_enqueued)
            return
        if self._overflow == "error":
            raise QueueFullError(f"no room for {n} items (free: {max(self.free(), 0)})")
        await self._wait_for_room(n, timeout)
        self._reserved -= n
        await self._extend(items, on_enqueued)

    def _fits(self, n: int) -> bool:
        """Room for ``n`` now? A request larger than the queue fits an empty queue."""
        return n <= self.free() or (not self._items and not self._reserved)

    async def _extend(self, batch: Sequence[T], on_enqueued: EnqueuedCallback | None) -> None:
        old = self._append(batch, on_enqueued)
        await self._announce_growth(old)

    def _append(self, batch: Sequence[T], on_enqueued: EnqueuedCallback | None) -> int:
        """Append without yielding; numbers the items. Returns the previous size."""
        items = self._items
        old = len(items)
        start = self._next_seq
        items.extend(batch)
        self._next_seq += len(batch)
        self._unfinished += len(batch)
        self._stamp()
        if on_enqueued is not None:
            on_enqueued(start, self._next_seq)
        return old

    def _arrivals_queued(self) -> deque[list[float]]:
        """The arrival dates, those of items already gone (taken, evicted) dropped."""
        arrivals, head = self._arrivals, self.head_seq
        while arrivals and arrivals[0][0] <= head:
            arrivals.popleft()
        return arrivals

    def _stamp(self) -> None:
        """Date the items just appended (one entry per millisecond at most)."""
        arrivals, now = self._arrivals_queued(), time.monotonic()
        if arrivals and now - arrivals[-1][1] < 0.001:
            arrivals[-1][0] = self._next_seq
        else:
            arrivals.append([self._next_seq, now])

    def waited(self) -> float:
        """Seconds the oldest queued item has waited (0.0 when the queue is empty)."""
        arrivals = self._arrivals_queued()
        if not self._items or not arrivals:
            return 0.0
        return max(0.0, time.monotonic() - arrivals[0][1])

    async def _announce_growth(self, old: int) -> None:
        """Wake batch readers and publish the transitions of growing from ``old``."""
        size = len(self._items)
        if size >= self._wake_getters_at:
            self._wake_getters(size)
        if size >= self._marks.next_rise:
            await self._emit(self._marks.rise(old, size))

    async def _append_evicting(
        self, batch: Sequence[T], on_enqueued: EnqueuedCallback | None
    ) -> None:
        """drop_oldest: enqueue, then evict the oldest beyond capacity (FIFO kept)."""
        items = self._items
        old = self._append(batch, on_enqueued)
        overflow = len(items) - self._capacity
        evicted: list[T] = []
        if overflow > 0:
            head = self.head_seq
            evicted = [items.popleft() for _ in range(overflow)]
            self.dropped += overflow
            self.completions.lost(head, head + overflow)
            self.finish(head, overflow)
        await self._announce_growth(old)
        if evicted and self._evicted_cb is not None:
            await self._evicted_cb(evicted)
        if self._drop_cb is not None:
            for item in evicted:
                await self._drop_cb(item)

    async def _wait_for_room(self, n: int, timeout: float | None) -> None:
        """Wait until ``n`` slots are reserved for the caller (FIFO among waiters)."""
        if self._fits(n) and not self._room_waiters:
            self._reserved += n
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiter = (n, fut)
        self._room_waiters.append(waiter)
        timer = None
        if timeout is not None:
            timer = loop.call_later(timeout, self._expire_room_waiter, waiter)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._reserved -= n  # woken and cancelled at once: give the room back
                self._wake_putters()
            else:
                self._discard_room_waiter(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _expire_room_waiter(self, waiter: _Waiter) -> None:
        n, fut = waiter
        if not fut.done():
            self._discard_room_waiter(waiter)
            fut.set_exception(
                QueueFullError(f"no room for {n} items within the timeout (queue is full)")
            )

    def _discard_room_waiter(self, waiter: _Waiter) -> None:
        try:
            self._room_waiters.remove(waiter)
        except ValueError:
            return
        self._wake_putters()  # the head may have changed

    def _wake_putters(self) -> None:
        waiters = self._room_waiters
        while waiters:
            n, fut = waiters[0]
            if fut.done():
                waiters.popleft()
                continue
            if not self._fits(n):
                return
            waiters.popleft()
            self._reserved += n
            fut.set_result(None)

    # -- consumers -----------------------------------------------------------

    async def get(self, timeout: float | None = None) -> T:
        """Remove and return the oldest item (``TimeoutError`` after ``timeout``)."""
        _, batch = await self._take(1, 0.0, timeout, closed_error=True)
        return batch[0]

    async def get_batch(self, max_items: int, max_wait: float) -> list[T]:
        """Take up to ``max_items``, waiting at most ``max_wait`` after the first arrives.

        Returns ``[]`` only when the queue is closed and empty.
        """
        _, batch = await self._take(max_items, max_wait, None)
        return batch

    async def take_batch(
        self,
        max_items: int,
        max_wait: float,
        *,
        urgent: Urgency | None = None,
        enough: int | None = None,
    ) -> tuple[int, list[T]]:
        """``get_batch`` that also returns the sequence number of the first item
        (a batch is always a contiguous run), for ``finish``. While it waits for a
        full batch, ``urgent(size)`` is asked again whenever ``wake_fillers`` is
        called and, while producers wait for their items (``completions.waiting``),
        when ``enough`` items are queued: when it says yes, what is there is taken
        at once."""
        return await self._take(max_items, max_wait, None, urgent=urgent, enough=enough)

    def wake_fillers(self) -> None:
        """Readers waiting for a full batch look again (at ``urgent``); those waiting
        for a first item (an empty queue) stay asleep."""
        if self._item_waiters and len(self._items):
            self._wake_getters(NEVER)

    async def _take(
        self,
        max_items: int,
        max_wait: float,
        timeout: float | None,
        *,
        closed_error: bool = False,
        urgent: Urgency | None = None,
        enough: int | None = None,
    ) -> tuple[int, list[T]]:
        items = self._items
        waited = self.waited()  # what the reader finds as it comes for a batch
        while True:
            while not items:
                if self._closed:
                    if closed_error:
                        raise QueueClosedError("queue is closed and empty")
                    return self._next_seq, []
                await self._wait_for_items(1, timeout)
            if len(items) < max_items and max_wait > 0 and not self._closed:
                await self._fill(max_items, max_wait, urgent, enough)
                if not items:
                    continue
            n = min(max_items, len(items))
            if self.on_take is not None:
                self.on_take(len(items), waited)
            recovered = self._marks.fall(len(items) - n) if n else None
            if recovered is not None:
                # Announce *before* taking: a consumer cancelled while the event is
                # published has taken nothing, so nothing can be lost or reordered.
                await self._emit((recovered,))
                n = min(n, len(items))
            if n:
                break
        start = self.head_seq
        if n == len(items):
            batch = list(items)
            items.clear()
        else:
            batch = [items.popleft() for _ in range(n)]
        if self._room_waiters:
            self._wake_putters()
        return start, batch

    async def _fill(
        self, max_items: int, max_wait: float, urgent: Urgency | None, enough: int | None
    ) -> None:
        """Wait up to ``max_wait`` for ``max_items``, or until ``urgent`` says to go."""
        loop = asyncio.get_running_loop()
        until = loop.time() + max_wait
        items = self._items
        while len(items) < max_items and not self._closed:
            if urgent is not None and items and urgent(len(items)):
                return
            left = until - loop.time()
            if left <= 0:
                return
            wanted = max_items
            if urgent is not None and enough is not None and self.completions.waiting:
                wanted = max(len(items) + 1, min(max_items, enough))
            with contextlib.suppress(TimeoutError):  # flush what we have
                await self._wait_for_items(wanted, left)

    def finish(self, start: int, n: int) -> None:
        """Items ``start .. start+n`` are done (written, dead-lettered or evicted)."""
        self.completions.finish(start, start + n)
        self.task_done(n)

    def task_done(self, n: int = 1) -> None:
        """Mark ``n`` taken items as finished (written, dead-lettered or given up)."""
        self._unfinished -= n
        if self._unfinished <= 0:
            self._unfinished = 0
            for fut in self._join_waiters:
                if not fut.done():
                    fut.set_result(None)
            self._join_waiters.clear()

    async def join(self) -> None:
        """Wait until every item put so far has been marked done."""
        if self._unfinished == 0:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._join_waiters.append(fut)
        await fut

    def close(self) -> None:
        """Refuse new items; wake waiting putters (with QueueClosedError) and getters."""
        self._closed = True
        while self._room_waiters:
            _, fut = self._room_waiters.popleft()
            if not fut.done():
                fut.set_exception(QueueClosedError("queue closed while waiting for room"))
        self._wake_getters(NEVER)

    def take_all(self) -> tuple[int, list[T]]:
        """Remove everything still queued, with the first item's sequence number
        (used to rescue items at a forced shutdown; ``finish`` them afterwards)."""
        start = self.head_seq
        batch = list(self._items)
        self._items.clear()
        self._wake_putters()
        return start, batch

    async def _wait_for_items(self, wanted: int, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiter = (wanted, fut)
        self._item_waiters.append(waiter)
        if wanted < self._wake_getters_at:
            self._wake_getters_at = wanted
        try:
            if timeout is None:
                await fut
            else:
                async with asyncio.timeout(timeout):
                    await fut
        finally:
            if not fut.done() or fut.cancelled():  # timed out or cancelled: unregister
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._item_waiters.remove(waiter)
                self._wake_getters_at = min((w for w, _ in self._item_waiters), default=NEVER)

    def _wake_getters(self, size: int) -> None:
        keep: list[_Waiter] = []
        for waiter in self._item_waiters:
            wanted, fut = waiter
            if wanted <= size:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append(waiter)
        self._item_waiters = keep
        self._wake_getters_at = min((w for w, _ in keep), default=NEVER)

    # -- feedback ------------------------------------------------------------

    async def _emit(self, transitions: Sequence[Transition]) -> None:
        """Publish each transition (then run the matching callback) before returning."""
        for t in transitions:
            extras = self.extras() if self.extras is not None else {}
            event = FeedbackEvent.create(
                self._coord_id, t.queue_size, self._capacity, t.level, t.reason, **extras
            )
            await self._bus.publish(event)
            callback = (
                self._on_high
                if t.level is BackpressureLevel.hard
                else self._on_low
                if t.level is BackpressureLevel.ok
                else None
            )
            if callback is not None:
                try:
                    await callback()
                except Exception:
                    log.exception("backpressure callback %r failed", callback)
