"""Producers → bounded queue → workers → sink, with health and a clean stop."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Generic

from .completions import Ticket
from .dlq import DeadLetterQueue
from .events import BackpressureLevel, FeedbackEvent
from .feedback import FeedbackBus
from .policy import CircuitBreaker, CircuitState, RetryPolicy
from .queue import BoundedQueue
from .stats import CoordinatorStats
from .types import BackpressureCallback, DropCallback, OverflowStrategy, QueueClosedError, Sink, T
from .worker import SinkWorker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoordinatorHealth:
    """A snapshot for probes: are workers running, how full is the queue."""

    workers_alive: int
    queue_size: int
    capacity: int
    circuit_state: CircuitState


class WriteCoordinator(Generic[T]):
    """Accepts items, batches them and writes them to ``sink`` with ``workers`` tasks.

    Items accepted by ``submit``/``submit_many`` are written, dead-lettered with
    their error, or (at a forced stop) dead-lettered as unwritten: never silently
    lost. Feedback events go to ``bus`` (default: the process bus).
    """

    def __init__(
        self,
        *,
        sink: Sink[T],
        capacity: int = 10_000,
        workers: int = 4,
        batch_size: int = 500,
        flush_interval: float = 0.25,
        high_watermark: int | None = None,
        low_watermark: int | None = None,
        overflow_strategy: OverflowStrategy = "block",
        on_backpressure_high: BackpressureCallback | None = None,
        on_backpressure_low: BackpressureCallback | None = None,
        drop_callback: DropCallback[T] | None = None,
        retry_policy: RetryPolicy | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        coord_id: str = "default",
        metrics_poll_sec: float = 0.25,
        dead_letter_queue: DeadLetterQueue[T] | None = None,
        bus: FeedbackBus | None = None,
        submit_timeout: float | None = None,
    ) -> None:
        """``metrics_poll_sec`` is accepted for compatibility and unused: gauges
        are read from memory when scraped, there is nothing to poll."""
        if workers <= 0:
            raise ValueError("workers must be > 0")
        if capacity <= 0:
            raise ValueError("capacity must be > 0")
        del metrics_poll_sec
        self.coord_id = coord_id
        self.stats = CoordinatorStats()
        self.breaker = circuit_breaker or CircuitBreaker()
        self._sink = sink
        self._dlq = dead_letter_queue
        self._submit_timeout = submit_timeout
        self._user_drop_cb = drop_callback
        self._queue = BoundedQueue[T](
            capacity,
            high_watermark,
            low_watermark,
            coord_id=coord_id,
            overflow_strategy=overflow_strategy,
            on_high=on_backpressure_high,
            on_low=on_backpressure_low,
            drop_callback=self._on_drop if overflow_strategy == "drop_oldest" else None,
            bus=bus,
            evicted_callback=self._on_evicted if dead_letter_queue is not None else None,
        )
        retry = retry_policy or RetryPolicy()
        self._workers = [
            SinkWorker[T](
                i,
                self._queue,
                sink,
                batch_size,
                flush_interval,
                retry,
                self.breaker,
                coord_id,
                dead_letters=dead_letter_queue,
                stats=self.stats,
            )
            for i in range(workers)
        ]
        self._started = False
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> WriteCoordinator[T]:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(drain=True)

    async def start(self) -> None:
        if self._started:
            return
        for worker in self._workers:
            worker.start()
        self._started = True
        log.info(
            "coordinator %s started (capacity=%d, workers=%d)",
            self.coord_id,
            self._queue.capacity,
            len(self._workers),
        )

    async def stop(self, drain: bool = True, timeout: float = 10.0) -> None:
        """Stop accepting items; with ``drain``, wait (up to ``timeout``) for the
        queue to be written. Whatever is still unwritten after that is
        dead-lettered (or, without a dead-letter queue, logged as lost)."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        deadline = time.monotonic() + timeout
        if drain:
            try:
                await asyncio.wait_for(self._queue.join(), timeout)
            except TimeoutError:
                log.warning(
                    "coordinator %s: drain timed out with %d items unwritten",
                    self.coord_id,
                    self._queue.unfinished,
                )
        self._queue.close()
        grace = max(0.0, deadline - time.monotonic()) if drain else 0.0
        await asyncio.gather(*(w.stop(grace) for w in self._workers))
        await self._rescue_unwritten()
        self._started = False
        log.info("coordinator %s stopped", self.coord_id)

    async def _rescue_unwritten(self) -> None:
        ranges = [w.inflight for w in self._workers if w.inflight is not None]
        for worker in self._workers:
            worker.inflight = None
        ranges.append(self._queue.take_all())
        leftovers = [item for _, batch in ranges for item in batch]
        for start, batch in ranges:
            self._queue.completions.lost(start, start + len(batch))
            self._queue.finish(start, len(batch))
        if not leftovers:
            return
        self.stats.dropped["shutdown"] += len(leftovers)
        reason = "coordinator stopped before these items were written"
        if self._dlq is None:
            log.error(
                "coordinator %s: %d accepted items were not written before stop and no "
                "dead-letter queue is configured",
                self.coord_id,
                len(leftovers),
            )
            return
        await self._dlq.save(leftovers, reason, {"coordinator_id": self.coord_id})
        self.stats.dead_lettered += len(leftovers)
        log.warning(
            "coordinator %s: %d unwritten items saved to %s",
            self.coord_id,
            len(leftovers),
            self._dlq.path,
        )

    # -- producers -----------------------------------------------------------

    async def submit(self, item: T) -> None:
        """Enqueue one item, applying the overflow strategy."""
        if self._stopping:
            raise QueueClosedError(f"coordinator {self.coord_id} is stopping")
        await self._queue.put(item, self._submit_timeout)
        self.stats.submitted += 1

    async def submit_many(self, items: Sequence[T]) -> None:
        """Enqueue many items with one watermark check (all or nothing when they fit)."""
        if self._stopping:
            raise QueueClosedError(f"coordinator {self.coord_id} is stopping")
        await self._queue.put_many(items, self._submit_timeout)
        self.stats.submitted += len(items)

    async def submit_all(self, items: Sequence[T]) -> Ticket:
        """Enqueue ``items`` whole or not at all (``QueueFullError`` / ``QueueClosedError``);
        the returned ticket can be awaited with ``wait_finished``."""
        if self._stopping:
            raise QueueClosedError(f"coordinator {self.coord_id} is stopping")
        ticket = Ticket()
        track = self._queue.completions.track
        await self._queue.put_many(
            items, self._submit_timeout, on_enqueued=lambda s, e: track(ticket, s, e)
        )
        self.stats.submitted += len(items)
        return ticket

    async def wait_finished(self, ticket: Ticket, timeout: float | None = None) -> bool:
        """Wait until every item of ``ticket`` is written or dead-lettered (then
        ``ticket.written`` / ``ticket.lost`` are final); False after ``timeout``."""
        return await self._queue.completions.wait(ticket, timeout)

    def retry_after(self) -> int:
        """Seconds a refused producer should wait: queue depth over the measured
        drain rate (at least 1; 5 when nothing drained lately; at most 300)."""
        size = self._queue.size
        rate = self.stats.drain.rate()
        seconds = size / rate if rate > 0 else (5.0 if size else 1.0)
        seconds = max(seconds, self.breaker.retry_after)
        return max(1, min(300, math.ceil(seconds)))

    async def _on_evicted(self, items: list[T]) -> None:
        """drop_oldest made room: keep what it evicted in the dead-letter queue."""
        assert self._dlq is not None
        await self._dlq.save(
            items, "evicted by drop_oldest overflow", {"coordinator_id": self.coord_id}
        )
        self.stats.dead_lettered += len(items)

    async def _on_drop(self, item: T) -> None:
        self.stats.dropped["overflow"] += 1
        if self._user_drop_cb is not None:
            await self._user_drop_cb(item)

    # -- state ---------------------------------------------------------------

    def health(self) -> CoordinatorHealth:
        return CoordinatorHealth(
            workers_alive=self.workers_alive,
            queue_size=self._queue.size,
            capacity=self._queue.capacity,
            circuit_state=self.breaker.state,
        )

    @property
    def workers_alive(self) -> int:
        return sum(1 for w in self._workers if w.alive)

    @property
    def dead_letter_queue(self) -> DeadLetterQueue[T] | None:
        return self._dlq

    @property
    def queue(self) -> BoundedQueue[T]:
        return self._queue

    @property
    def level(self) -> BackpressureLevel:
        return self._queue.level

    @property
    def stopping(self) -> bool:
        return self._stopping

    def feedback_event(self, reason: str | None = None) -> FeedbackEvent:
        """The current backpressure state as a FeedbackEvent."""
        return self._queue.feedback_event(reason)

    async def wait_idle(self) -> None:
        """Wait until everything submitted so far is written or dead-lettered."""
        await self._queue.join()
