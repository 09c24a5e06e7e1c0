"""The client's buffer: bars written, cut into batches for the senders.

``write`` puts bars in (waiting for room), senders take sealed batches out and say
when each is finished; ``flush`` waits for the batches sealed before it. Batches
given up wait in ``Failures`` until ``write``/``flush``/``aclose`` raise them. No
I/O: the sending lives in ``sender.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass

from market_data_store._util import ThrottledLog

from .errors import BatchFailedError, ClientClosedError
from .options import ClientStats
from .wire import WireBar

log = logging.getLogger(__name__)

MAX_UNREPORTED = 1000
"""Failed batches kept for ``write``/``flush``/``take_failures``; beyond, only counted."""


@dataclass(eq=False)
class Batch:
    """Bars sent together (a 413 may split them), to be stored before ``deadline``."""

    seq: int
    bars: list[WireBar]
    deadline: float  # monotonic
    attempts: int = 0
    last_error: str | None = None


class BarAccumulator:
    """At most ``max_buffered`` bars: pending (a partial batch), ready (sealed) or in flight.

    A batch is sealed once ``batch_size`` bars are pending, or ``linger`` s after the
    first of a partial batch, or at ``flush``/``close``. Batches are handed out in the
    order they were sealed; each is held (counted) until ``finished``.
    """

    def __init__(
        self,
        *,
        batch_size: int,
        max_buffered: int,
        linger: float,
        deadline: float,
        stats: ClientStats,
    ) -> None:
        self.batch_size = batch_size
        self.max_buffered = max_buffered
        self.linger = linger
        self.deadline = deadline
        self._stats = stats
        self._pending: list[WireBar] = []
        self._pending_since = 0.0
        self._ready: deque[Batch] = deque()
        self._open: set[int] = set()  # sealed batches not finished
        self._next_seq = 0
        self._held = 0
        self._closing = False
        self._cond = asyncio.Condition()

    @property
    def held(self) -> int:
        """Bars put and not finished yet (pending, ready or in flight)."""
        return self._held

    @property
    def closing(self) -> bool:
        """``close`` was called: nothing more is put; the rest is sealed at once."""
        return self._closing

    async def put(self, bars: list[WireBar]) -> None:
        """Buffer ``bars`` (at most ``max_buffered``), waiting for room.
        ``ClientClosedError`` if closed meanwhile (nothing of ``bars`` buffered)."""
        count = len(bars)
        async with self._cond:
            if self._held + count > self.max_buffered and not self._closing:
                began = time.monotonic()
                try:
                    await self._cond.wait_for(
                        lambda: self._held + count <= self.max_buffered or self._closing
                    )
                finally:
                    self._stats.write_wait_seconds += time.monotonic() - began
            if self._closing:
                raise ClientClosedError("the client was closed while write waited for room")
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.extend(bars)
            self._held += count
            self._stats.bars_written += count
            while len(self._pending) >= self.batch_size:
                self._seal(self.batch_size)
            self._cond.notify_all()

    async def flush(self, timeout: float | None) -> None:
        """Seal the partial batch; wait until every batch sealed so far is finished
        (``TimeoutError`` after ``timeout`` s)."""
        async with self._cond:
            self._seal()
            last = self._next_seq - 1
            self._cond.notify_all()
            async with asyncio.timeout(timeout):
                await self._cond.wait_for(lambda: not any(s <= last for s in self._open))

    async def take(self) -> Batch | None:
        """The next batch to send; None once closing and nothing is left."""
        async with self._cond:
            while True:
                if self._ready:
                    return self._ready.popleft()
                wait: float | None = None
                if self._pending:
                    wait = self._pending_since + self.linger - time.monotonic()
                    if self._closing or wait <= 0:
                        self._seal()
                        continue
                elif self._closing:
                    return None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._cond.wait()

    async def finished(self, batch: Batch) -> None:
        """``batch`` (taken) was stored or given up: its room comes back."""
        async with self._cond:
            self._held -= len(batch.bars)
            self._open.discard(batch.seq)
            self._cond.notify_all()

    async def close(self) -> None:
        """Refuse further ``put``s (those waiting for room too); ``take`` seals what is
        pending at once and returns None when nothing is left."""
        async with self._cond:
            self._closing = True
            self._cond.notify_all()

    async def drain(self) -> list[WireBar]:
        """Empty the buffer (after the senders stopped): the bars never taken."""
        async with self._cond:
            leftover = [b for batch in self._ready for b in batch.bars] + self._pending
            self._ready.clear()
            self._pending = []
            self._open.clear()
            self._held = 0
            self._cond.notify_all()
        return leftover

    def _seal(self, size: int | None = None) -> None:
        """Turn the first ``size`` pending bars (all by default) into a ready batch."""
        if not self._pending:
            return
        size = size or len(self._pending)
        bars, self._pending = self._pending[:size], self._pending[size:]
        seq = self._next_seq
        self._next_seq += 1
        self._open.add(seq)
        self._ready.append(Batch(seq, bars, time.monotonic() + self.deadline))


class Failures:
    """Batches given up, oldest first, until raised or taken (at most ``MAX_UNREPORTED``)."""

    def __init__(self, stats: ClientStats) -> None:
        self._stats = stats
        self._log = ThrottledLog(log)
        self._unreported: deque[BatchFailedError] = deque()

    def add(self, error: BatchFailedError) -> None:
        """Count and log ``error``; keep it to raise unless ``MAX_UNREPORTED`` are kept."""
        self._stats.batches_failed += 1
        self._stats.bars_failed += len(error.bars)
        self._log.log(logging.WARNING, type(error).__name__, "store client: %s", error)
        if len(self._unreported) >= MAX_UNREPORTED:
            self._stats.unreported_discarded += 1
            return
        self._unreported.append(error)

    def raise_oldest(self) -> None:
        """Raise the oldest failure not reported yet (if any)."""
        if self._unreported:
            raise self._unreported.popleft()

    def take(self) -> list[BatchFailedError]:
        """Every failure not reported yet (oldest first); they will not be raised."""
        failures = list(self._unreported)
        self._unreported.clear()
        return failures
