"""Producers → bounded queue → workers → sink, with health and a clean stop."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic

from market_data_store._util import backoff_delay

from .bus import FeedbackBus
from .completions import Ticket
from .credits import Credits
from .dlq import DeadLetterQueue
from .events import BackpressureLevel, FeedbackEvent
from .policy import CircuitBreaker, CircuitState, RetryPolicy
from .queue import BoundedQueue
from .stats import CoordinatorStats
from .types import BackpressureCallback, DropCallback, OverflowStrategy, QueueClosedError, Sink, T
from .worker import SinkWorker, Writers

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
        queue = self._queue
        self.credits = Credits(
            capacity=capacity,
            high_watermark=queue.high_watermark,
            low_watermark=queue.low_watermark,
            batch_size=batch_size,
            workers=workers,
        )
        queue.on_take = self._on_take
        queue.extras = self._event_extras
        writers = Writers()
        enough = max(1, self.credits.low_target // 2)
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
                writers=writers,
                enough=enough,
            )
            for i in range(workers)
        ]
        self._started = False
        self._stopping = False
        self._background: set[asyncio.Task[None]] = set()

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
        if self._dlq is not None:
            try:
                # what a crash left beside the file (a replay's claimed files) is folded
                # back now, so it is counted and replayed like any other record
                await self._dlq.open()
            except OSError:
                log.warning("dead letters: leftovers of an earlier run not folded back yet "
                            "(the next replay tries again)", exc_info=True)  # fmt: skip
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
        if self._background:  # evicted items still being saved
            await asyncio.wait(self._background, timeout=max(1.0, deadline - time.monotonic()))
        if self._dlq is not None:  # replayed items are all finished now: drop their journals
            await self._dlq.prune()
        self._started = False
        log.info("coordinator %s stopped", self.coord_id)

    async def _rescue_unwritten(self) -> None:
        """Dead-letter what is still unwritten (worker batches' unfinished rests and
        the queue), *then* mark it finished: ``wait_finished`` never reports items
        finished before they are safe on disk."""
        spans: list[tuple[int, int, list[T]]] = []  # (finish from, count, unwritten items)
        for worker in self._workers:
            flight, worker.inflight = worker.inflight, None
            if flight is not None:
                spans.append((flight.start, len(flight.items), flight.rest[1]))
        start, queued = self._queue.take_all()
        spans.append((start, len(queued), queued))
        leftovers = [item for _, _, rest in spans for item in rest]
        if leftovers:
            self.stats.dropped["shutdown"] += len(leftovers)
            await self._save_or_log(
                leftovers, "coordinator stopped before these items were written"
            )
        for first, count, rest in spans:
            end = first + count
            self._queue.completions.lost(end - len(rest), end)
            self._queue.finish(first, count)

    async def _save_or_log(self, items: list[T], reason: str, attempts: int = 3) -> None:
        """Dead-letter ``items``; if the disk refuses, log them whole as a last resort."""
        if self._dlq is not None:
            for attempt in range(1, attempts + 1):
                try:
                    await self._dlq.save(items, reason, {"coordinator_id": self.coord_id})
                except Exception:
                    log.exception("dead-letter save failed (attempt %d/%d)", attempt, attempts)
                    if attempt < attempts:  # after the last one, the log is the way out
                        await asyncio.sleep(backoff_delay(attempt, initial=0.1, maximum=5.0))
                    continue
                self.stats.dead_lettered += len(items)
                log.warning(
                    "coordinator %s: %d unwritten items saved to %s (%s)",
                    self.coord_id,
                    len(items),
                    self._dlq.path,
                    reason,
                )
                return
        log.error(
            "coordinator %s: %d items could not be dead-lettered (%s); their content: %s",
            self.coord_id,
            len(items),
            reason if self._dlq is not None else "no dead-letter queue is configured",
            items,
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

    def _on_take(self, found: int, waited: float) -> None:
        self.credits.observe(
            found, self._queue.unfinished, self.stats.recent_drain.rate(), waited=waited
        )

    def _event_extras(self) -> dict[str, Any]:
        return {
            "drain_rate": round(self.stats.recent_drain.rate(), 1),
            "credit": self.credits.per_producer(),
        }

    def retry_after(self) -> int:
        """Seconds a refused producer should wait: queue depth over the measured
        drain rate (at least 1; 5 when nothing drained lately; at most 300)."""
        size = self._queue.size
        rate = self.stats.drain.rate()
        seconds = size / rate if rate > 0 else (5.0 if size else 1.0)
        seconds = max(seconds, self.breaker.retry_after)
        return max(1, min(300, math.ceil(seconds)))

    async def _on_evicted(self, items: list[T]) -> None:
        """drop_oldest made room: keep what it evicted in the dead-letter queue. Saved
        in the background, retried until it works: a slow or full disk must not fail
        (or slow) the producer whose items caused the eviction."""
        task = asyncio.create_task(self._save_evicted(items))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _save_evicted(self, items: list[T]) -> None:
        assert self._dlq is not None
        attempt = 0
        while True:
            try:
                await self._dlq.save(
                    items, "evicted by drop_oldest overflow", {"coordinator_id": self.coord_id}
                )
            except Exception:
                attempt += 1
                delay = backoff_delay(attempt, initial=0.1, maximum=5.0)
                log.exception(
                    "saving %d evicted items failed; retrying in %.1fs", len(items), delay
                )
                await asyncio.sleep(delay)
                continue
            self.stats.dead_lettered += len(items)
            return

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
