"""A bounded buffer with one drain task: how feedback leaves the process.

The feedback bus must never wait on the network, so a delivery channel
(webhook, Redis) subscribes with ``put_nowait``: the event goes into this
buffer and the call returns. One task delivers the buffered events in order.
When the buffer is full the oldest event is discarded and counted: a newer
event supersedes it anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from market_data_store._util import ThrottledLog

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class DeliveryStats:
    """Plain counters of one channel, read by telemetry when scraped."""

    sent: int = 0  # delivered
    retried: int = 0  # attempts after a failed first one
    discarded: int = 0  # dropped from a full buffer, or unsent at stop
    failed: int = 0  # given up after every attempt


class Outbox(Generic[T]):
    """``put_nowait`` never blocks; ``deliver`` runs for each item, one at a time.

    ``deliver`` returns True when the item was delivered and False when it gave
    up (retries are its own business); an exception counts as a failure too.
    """

    def __init__(
        self,
        name: str,
        capacity: int,
        deliver: Callable[[T], Awaitable[bool]],
        stats: DeliveryStats | None = None,
    ) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be > 0")
        self.name = name
        self.stats = stats or DeliveryStats()
        self._deliver = deliver
        self._items: deque[T] = deque()
        self._capacity = capacity
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failures = ThrottledLog(log)

    @property
    def size(self) -> int:
        return len(self._items)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def put_nowait(self, item: T) -> None:
        if self._closed:
            self.stats.discarded += 1
            return
        if len(self._items) >= self._capacity:
            self._items.popleft()
            self.stats.discarded += 1
            self._failures.log(
                logging.WARNING,
                "full",
                "%s: buffer full (%d); oldest event discarded",
                self.name,
                self._capacity,
            )
        self._items.append(item)
        self._ready.set()

    def start(self) -> None:
        if self._task is None:
            self._closed = False
            self._task = asyncio.create_task(self._drain(), name=f"outbox-{self.name}")

    async def stop(self, timeout: float) -> None:
        """Deliver what is buffered for up to ``timeout`` s, then cancel; the rest (the
        event in flight included) is counted as discarded. Idempotent; the drain task
        is cancelled even when this call is."""
        self._closed = True
        self._ready.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait({task}, timeout=timeout)
            finally:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if self._items:
            self.stats.discarded += len(self._items)
            log.info("%s: %d event(s) not delivered at stop", self.name, len(self._items))
            self._items.clear()

    async def _drain(self) -> None:
        items = self._items
        while True:
            if not items:
                if self._closed:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            item = items.popleft()
            try:
                delivered = await self._deliver(item)
            except asyncio.CancelledError:
                self.stats.discarded += 1  # stopped while this one was in flight
                raise
            except Exception:
                delivered = False
                self._failures.log(
                    logging.WARNING, "error", "%s: delivery failed", self.name, exc=True
                )
            if delivered:
                self.stats.sent += 1
            else:
                self.stats.failed += 1
