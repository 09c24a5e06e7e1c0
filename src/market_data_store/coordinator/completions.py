"""Which accepted items are finished, tracked by their FIFO sequence number.

Every item enqueued gets the next sequence number, and workers take batches
off the head of the queue, so each batch is a contiguous range of numbers.
Marking ranges finished and advancing a "done until" watermark costs O(1) per
batch, whatever the batch size; a producer that needs to know when *its* items
are written (``?wait=commit``) waits for the watermark to pass its range.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(eq=False)
class Ticket:
    """A submitted range of items and what became of them."""

    start: int = 0
    end: int = 0
    lost: int = 0  # dead-lettered or evicted instead of written
    lost_ranges: list[tuple[int, int]] = field(default_factory=list)
    """``[start, end)`` sequence numbers of the lost items, merged when adjacent (at
    most one per item of the ticket)."""
    _done: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def count(self) -> int:
        return self.end - self.start

    @property
    def written(self) -> int:
        return self.count - self.lost

    def lost_offsets(self) -> list[int]:
        """The lost items as offsets into what was submitted (0 = its first item)."""
        return [i - self.start for lo, hi in sorted(self.lost_ranges) for i in range(lo, hi)]

    @property
    def finished(self) -> bool:
        """Every item written or dead-lettered (``written``/``lost`` are final)."""
        return self._done is None or self._done.done()


class Completions:
    def __init__(self, on_wait: Callable[[], None] | None = None) -> None:
        self.waiting = 0
        """Tickets someone is waiting for right now (producers waiting on a commit)."""
        self._on_wait = on_wait
        self.done_until = 0
        """Every sequence number below this is finished."""
        self._ahead: dict[int, int] = {}  # finished ranges beyond the watermark: start -> end
        self._tickets: list[Ticket] = []
        self._advance: list[asyncio.Future[None]] = []  # waiting for the watermark to move

    def track(self, ticket: Ticket, start: int, end: int) -> None:
        """Follow ``[start, end)`` for ``ticket``; call as the items are enqueued."""
        ticket.start, ticket.end = start, end
        if end > self.done_until:
            ticket._done = asyncio.get_running_loop().create_future()
            self._tickets.append(ticket)

    def finish(self, start: int, end: int) -> None:
        """``[start, end)`` is finished (written, dead-lettered or evicted)."""
        if start != self.done_until:
            self._ahead[start] = end
            return
        while end in self._ahead:
            end = self._ahead.pop(end)
        self.done_until = end
        if self._tickets:
            self._release()
        if self._advance:
            waiting, self._advance = self._advance, []
            for future in waiting:
                if not future.done():
                    future.set_result(None)

    async def advanced(self) -> None:
        """Return once the watermark has moved (some items finished)."""
        future = asyncio.get_running_loop().create_future()
        self._advance.append(future)
        try:
            await future
        finally:
            if future in self._advance:  # a waiter that gave up (timeout): not kept
                self._advance.remove(future)

    def lost(self, start: int, end: int) -> None:
        """``[start, end)`` was dead-lettered or evicted rather than written."""
        for ticket in self._tickets:
            overlap = min(end, ticket.end) - max(start, ticket.start)
            if overlap > 0:
                ticket.lost += overlap
                lo, hi = max(start, ticket.start), min(end, ticket.end)
                ranges = ticket.lost_ranges
                if ranges and ranges[-1][1] == lo:
                    ranges[-1] = (ranges[-1][0], hi)
                else:
                    ranges.append((lo, hi))

    async def wait(self, ticket: Ticket, timeout: float | None = None) -> bool:
        """True once every item of ``ticket`` is finished; False after ``timeout``."""
        if ticket._done is None or ticket._done.done():
            return True
        self.waiting += 1
        if self._on_wait is not None:
            self._on_wait()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(ticket._done)
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1
        return True

    def _release(self) -> None:
        keep: list[Ticket] = []
        for ticket in self._tickets:
            if ticket.end <= self.done_until:
                if ticket._done is not None and not ticket._done.done():
                    ticket._done.set_result(None)
            else:
                keep.append(ticket)
        self._tickets = keep
