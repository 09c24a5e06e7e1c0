"""One Server-Sent Events stream's buffer, filled by the fan-out, drained by the stream.

``offer`` never waits and never does I/O: the frame goes into this subscriber's own
bounded buffer (or is conflated, or the subscriber is told to go) and the call
returns. The stream awaits ``next_chunk`` for the bytes to send next: what is
buffered, or a keepalive once ``keepalive_sec`` passed since the stream's last write
(so no two writes of an idle stream are further apart than that).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from .sse import KEEPALIVE, Frame


class StreamCounts(Protocol):
    """The counters subscribers add to (``FanoutStats``, one for all of them)."""

    delivered: int
    conflated: int


class Subscriber:
    """One stream's buffer. Filled by ``FeedbackFanout.publish``, drained by ``next_chunk``.

    What a stream gets on connect (snapshot or replay, bounded by the history) is
    one pre-joined chunk, sent first. Live frames are buffered in order up to
    ``limit``; a subscriber that lets ``limit`` frames pile up switches to keeping
    only the latest frame of each coordinator (in id order) until it catches up,
    and is disconnected if even that exceeds ``limit``.
    """

    __slots__ = (
        "_above",
        "_initial",
        "_initial_frames",
        "_latest",
        "_pending",
        "_stats",
        "_waiter",
        "close_reason",
        "coordinators",
        "first_id",
        "keepalive_due",
        "keepalive_sec",
        "limit",
        "min_rank",
        "on_close",
    )

    def __init__(
        self,
        coordinators: frozenset[str] | None,
        min_rank: int,
        limit: int,
        stats: StreamCounts,
        keepalive_sec: float = 15.0,
    ) -> None:
        self.coordinators = coordinators
        self.min_rank = min_rank
        self.limit = limit
        self._stats = stats
        self._initial = b""
        self._initial_frames = 0
        self.first_id: int | None = None
        """Id of the first frame this stream is sent (None: nothing yet)."""
        self._pending: deque[Frame] = deque()
        self._latest: dict[str, Frame] | None = None  # set while conflating
        # coordinators last told a level >= min_rank: their way back down is sent too
        self._above: set[str] = set()
        self._waiter: asyncio.Future[None] | None = None
        self.close_reason: str | None = None
        self.keepalive_sec = keepalive_sec
        """Longest a stream stays silent: then a keepalive comment is its next write."""
        self.keepalive_due = False
        self.on_close: Callable[[], None] | None = None
        """Called once when closed (the stream cuts short a send in progress)."""

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    @property
    def pending(self) -> int:
        """Live frames buffered."""
        return len(self._latest) if self._latest is not None else len(self._pending)

    def wants(self, frame: Frame) -> bool:
        """Filters: the coordinator is selected and the level is at least ``min_level``,
        or the event ends a level at or above it (a consumer of ``min_level=hard`` is
        told when hard is over)."""
        coord_id = frame.coord_id
        if self.coordinators is not None and coord_id not in self.coordinators:
            return False
        if not self.min_rank:
            return True
        if frame.rank >= self.min_rank:
            self._above.add(coord_id)
            return True
        if coord_id in self._above:
            self._above.discard(coord_id)
            return True
        return False

    def recall(self, told: Iterable[Frame]) -> None:
        """``told``: the frames up to the id this consumer resumes from, oldest first.
        The levels it was told then are those it knows: the end of one at or above
        ``min_level`` is part of what follows."""
        above = self._above
        for frame in told:
            if frame.rank >= self.min_rank:
                above.add(frame.coord_id)
            else:
                above.discard(frame.coord_id)

    def offer(self, frame: Frame) -> bool:
        """Buffer ``frame`` if wanted; False when this subscriber has to go."""
        if self.close_reason is not None or not self.wants(frame):
            return True
        latest = self._latest
        if latest is None:
            if len(self._pending) < self.limit:
                self._pending.append(frame)
                self._wake()
                return True
            latest = self._latest = {}
            for old in self._pending:
                latest.pop(old.coord_id, None)
                latest[old.coord_id] = old
            self._stats.conflated += len(self._pending) - len(latest)
            self._pending.clear()
        replaced = latest.pop(frame.coord_id, None)
        latest[frame.coord_id] = frame  # at the end: ids stay in order
        if replaced is not None:
            self._stats.conflated += 1
        self._wake()
        return len(latest) <= self.limit

    def preload(self, frames: Iterable[Frame]) -> None:
        """What the stream gets first (snapshot or replay), through the same filters."""
        wanted = [frame for frame in frames if self.wants(frame)]
        if wanted:
            self.first_id = wanted[0].seq
            self._initial = b"".join(frame.wire for frame in wanted)
            self._initial_frames = len(wanted)

    def close(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
            self._pending.clear()
            self._latest = None
            self._initial = b""
            self._wake()
            if self.on_close is not None:
                self.on_close()

    def _keepalive(self) -> None:
        self.keepalive_due = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _take(self) -> bytes:
        """Everything buffered, joined (the initial chunk first), and forget it."""
        chunk, n = self._initial, self._initial_frames
        self._initial, self._initial_frames = b"", 0
        if self._latest is not None:
            frames: Iterable[Frame] = self._latest.values()
            n += len(self._latest)
        else:
            frames = self._pending
            n += len(self._pending)
        if n == 1 and not chunk:
            chunk = next(iter(frames)).wire
        elif n:
            chunk = b"".join((chunk, *(f.wire for f in frames)))
        self._pending.clear()
        self._latest = None
        self._stats.delivered += n
        return chunk

    async def next_chunk(self, since: float | None = None) -> bytes | None:
        """The bytes to send next; None once closed. Buffered frames as soon as there are
        any, else a keepalive ``keepalive_sec`` after ``since``: the event-loop time
        (``loop.time()``) of this stream's last write (None: now)."""
        loop = asyncio.get_running_loop()
        self.keepalive_due = False
        timer: asyncio.TimerHandle | None = None
        try:
            while self.close_reason is None:
                if self._initial or self._pending or self._latest:
                    return self._take()
                if self.keepalive_due:
                    return KEEPALIVE
                if timer is None:
                    due = (loop.time() if since is None else since) + self.keepalive_sec
                    timer = loop.call_at(due, self._keepalive)
                self._waiter = loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            return None
        finally:
            if timer is not None:
                timer.cancel()
