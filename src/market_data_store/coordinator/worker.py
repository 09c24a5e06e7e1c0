"""A worker moving batches from the queue into the sink. It never dies.

- Retryable failures (timeouts, lost connections...) are retried with backoff,
  gated by the circuit breaker: while it is open the worker waits, it does not
  drop the batch, so an outage delays items and loses none.
- A batch failing non-retryably is searched (binary search) for its poison
  items; the good items are written, only the items refused on their own are
  dead-lettered. One poison item in a batch of ``n`` costs at most
  ``ceil(log2 n) + 3`` writes, ``k`` of them at most ``1 + k * (2 ceil(log2 n) + 2)``,
  dense ones one or two per item.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic

from market_data_store._util import ThrottledLog

from .dlq import DeadLetterQueue, describe_error
from .policy import CircuitBreaker, RetryPolicy
from .policy import CircuitOpenError as CircuitOpenError  # the original module's name
from .queue import BoundedQueue
from .stats import CoordinatorStats
from .types import Sink, T

log = logging.getLogger(__name__)

_DLQ_RETRY_SEC = 1.0
_PAUSE_AFTER_BUG_SEC = 1.0


@dataclass
class Writers:
    """How many of a coordinator's workers are writing a batch right now."""

    busy: int = 0


@dataclass
class InFlight(Generic[T]):
    """A batch a worker is delivering: items ``start``... of the queue, of which
    the first ``done`` are written or dead-lettered already."""

    start: int
    items: list[T]
    done: int = 0

    @property
    def rest(self) -> tuple[int, list[T]]:
        """(sequence number, items) of what is not finished."""
        return self.start + self.done, self.items[self.done :]


class SinkWorker(Generic[T]):
    """Takes batches (flushed by size or by time) and delivers them to the sink."""

    def __init__(
        self,
        worker_id: int,
        queue: BoundedQueue[T],
        sink: Sink[T],
        batch_size: int = 500,
        flush_interval: float = 0.25,
        retry_policy: RetryPolicy | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        coord_id: str = "default",
        *,
        dead_letters: DeadLetterQueue[T] | None = None,
        stats: CoordinatorStats | None = None,
        writers: Writers | None = None,
        enough: int | None = None,
    ) -> None:
        """``enough``: while producers wait for their commit, a batch of this many
        items is written at once even when another worker is writing; alone, this
        worker writes whatever is queued at once (default: half a batch)."""
        if batch_size <= 0:
            raise ValueError("batch_size must be > 0")
        self.worker_id = worker_id
        self._q = queue
        self._sink = sink
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._retry = retry_policy or RetryPolicy()
        self._breaker = circuit_breaker or CircuitBreaker()
        self._coord_id = coord_id
        self._dlq = dead_letters
        self.stats = stats or CoordinatorStats()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.inflight: InFlight[T] | None = None
        """The batch being delivered; its unfinished rest is rescued by the
        coordinator if it must cancel us."""
        self._log = ThrottledLog(log)
        self._writers = writers if writers is not None else Writers()
        self._enough = max(1, enough if enough is not None else batch_size // 2)

    def _urgent(self, size: int) -> bool:
        """Write a short batch now? Only while producers wait for commits, and only
        when no other worker is writing (whose commit would come first anyway) or
        enough is queued to be worth a write of its own."""
        return self._q.completions.waiting > 0 and (self._writers.busy == 0 or size >= self._enough)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.create_task(
                self._run(), name=f"sink-worker-{self._coord_id}-{self.worker_id}"
            )

    async def stop(self, timeout: float | None = None) -> None:
        """Finish the batch in hand, then exit; cancel after ``timeout`` seconds."""
        task = self._task
        if task is None or task.done():
            return
        self._stopping = True
        if self.inflight is None:
            task.cancel()  # idle in get_batch: nothing taken, nothing to lose
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
        except asyncio.CancelledError:
            if not task.done():
                raise
        await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        q = self._q
        while not self._stopping:
            start, batch = await q.take_batch(
                self._batch_size, self._flush_interval, urgent=self._urgent, enough=self._enough
            )
            if not batch:
                return  # closed and drained
            self.inflight = flight = InFlight(start, batch)
            self._writers.busy += 1
            try:
                await self._deliver_all(flight)
            finally:
                self._writers.busy -= 1
                q.wake_fillers()  # a filler waiting for this write may go now
            self.inflight = None
            q.finish(start, len(batch))
            self.stats.record_finished(len(batch))

    async def _deliver_all(self, flight: InFlight[T]) -> None:
        """Deliver the whole batch in hand (never gives up: see the module doc)."""
        batch, start = flight.items, flight.start
        while flight.done < len(batch):
            try:
                await self._deliver(batch[flight.done :], start + flight.done)
            except Exception:
                # A bug in a classifier or listener must not kill the worker or
                # lose the batch: keep it and try again (sinks are idempotent).
                self._log.log(
                    logging.ERROR,
                    "deliver",
                    "worker %s: delivery failed",
                    self.worker_id,
                    exc=True,
                )
                await asyncio.sleep(_PAUSE_AFTER_BUG_SEC)

    async def _deliver(self, batch: Sequence[T], start: int) -> None:
        """Write ``batch`` (items ``start``...), isolating non-retryable items.

        A refused write starts a search for its first refused item: a prefix of
        what holds it is written; if that prefix is written, the refused item is
        in the rest, which is split in turn without being written whole (its
        whole was just refused); if it is refused, the search goes on in it. The
        prefix is half of what is searched. An item is dead-lettered only when
        refused on its own, with its own error; after the first one, the rest of
        the batch is written whole; after further ones, in prefixes that start at
        the gap between the last two poison items (at least one item) and double
        while written (galloping), so dense poison costs one or two writes per
        item and never re-encodes the whole rest per item.

        One poison item in ``n`` costs at most ``ceil(log2 n) + 3`` writes (16 in
        5,000). Retryable failures of any of these writes are retried as usual;
        only a non-retryable refusal narrows the search."""
        end = len(batch)
        lo, hi = 0, end  # batch[:lo] is finished; what is known is about batch[lo:hi]
        bad = refused = False  # batch[lo:hi] holds a refused item / was refused itself
        error: BaseException | None = None  # the refusal of batch[lo:hi]
        step: int | None = None  # the next prefix while galloping (None: halves)
        after_poison: int | None = None  # where the last poison item's successor is
        while lo < end:
            if refused and hi - lo == 1:
                assert error is not None
                await self._dead_letter(batch[lo:hi], error)
                self._q.completions.lost(start + lo, start + hi)
                # the gap since the previous poison item, if any, guesses the next
                step = None if after_poison is None else max(1, lo - after_poison)
                lo = after_poison = hi
                hi, bad, refused = end, False, False
                self._advance(start + lo)
                continue
            # never the whole of a bad range: a lone item is written alone to be sure
            size = max(1, (hi - lo) // 2) if bad else hi - lo
            if step is not None:
                size = min(step, size)
            mid = lo + size
            written_error = await self._write_retrying(batch[lo:mid])
            if written_error is None:
                lo, refused = mid, False
                self._advance(start + lo)
                if step is not None:
                    step *= 2
                if lo == hi:  # a refusal that no item alone explains: start afresh
                    hi, bad = end, False
            else:
                hi, error, bad, refused, step = mid, written_error, True, True, None

    def _advance(self, end_seq: int) -> None:
        """Items before ``end_seq`` are finished: halves are delivered left to right,
        so what is finished is always a prefix of the batch."""
        if self.inflight is not None:
            self.inflight.done = end_seq - self.inflight.start

    async def _write_retrying(self, batch: Sequence[T]) -> BaseException | None:
        """Write until success (None) or a non-retryable error (returned)."""
        attempt = 0
        not_before: float | None = None
        while True:
            # the backoff is spent waiting on the breaker: while it lasts this worker
            # counts as having a call to make (it may be the half-open trial)
            await self._breaker.wait_allowed(not_before)
            attempt += 1
            started = time.perf_counter()
            try:
                await self._sink.write(batch)
            except Exception as exc:
                self.stats.write_errors[type(exc).__name__] += 1
                if not self._retry.classify_retryable(exc):
                    await self._breaker.on_success()  # the sink answered: it is up, the data is bad
                    return exc
                await self._breaker.on_failure()
                self._log.log(
                    logging.WARNING,
                    ("retry", type(exc)),
                    "worker %s: write of %d items failed (attempt %d), retrying: %s",
                    self.worker_id,
                    len(batch),
                    attempt,
                    describe_error(exc),
                )
                not_before = time.monotonic() + self._retry.next_backoff_ms(attempt) / 1000
                continue
            await self._breaker.on_success()
            self.stats.record_write(len(batch), time.perf_counter() - started)
            return None

    async def _dead_letter(self, items: Sequence[T], error: BaseException) -> None:
        self.stats.dead_lettered += len(items)
        if self._dlq is None:
            log.error(
                "worker %s: %d item(s) rejected by the sink and no dead-letter queue is "
                "configured; discarding: %s; items: %.500r",
                self.worker_id,
                len(items),
                describe_error(error),
                list(items),
            )
            return
        metadata = {"coordinator_id": self._coord_id, "worker_id": self.worker_id}
        while True:
            try:
                await self._dlq.save(list(items), error, metadata)
                return
            except Exception:
                # Disk full or similar: keep the items in hand and try again.
                self._log.log(logging.ERROR, "dlq", "dead-letter save failed; retrying", exc=True)
                await asyncio.sleep(_DLQ_RETRY_SEC)
