"""One Server-Sent Events stream's buffer, filled by the fan-out, drained by the stream.

``offer`` never waits and never does I/O: the frame goes into this subscriber's own
bounded buffer (or is conflated, or the subscriber is told to go) and the call
returns. The stream awaits ``next_chunk`` for the bytes to send next: what is
buffered, at most about ``CHUNK_BYTES`` at a time, or a keepalive once
``keepalive_sec`` passed since the stream's last write (so no two writes of an idle
stream are further apart than that).

Memory: frames are encoded once and shared (a subscriber holds references to the
fan-out's frames, the snapshot it starts with is the fan-out's own tuple), so what
one stream costs does not grow with the events' size: its references, plus the one
chunk being sent (at most about ``CHUNK_BYTES``, its bytes joined for that send).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from .sse import KEEPALIVE, Frame

CHUNK_BYTES = 16 * 1024
"""About the most bytes one ``next_chunk`` joins (more only for a single larger frame):
a stream blocked on a client that does not read holds at most this much of its own
(about what the server's write buffer takes before a send waits)."""
MAX_PENDING_BYTES = 1024 * 1024
"""Most bytes of live frames a subscriber may have pending (beside ``limit`` frames):
past it, it is conflated, and disconnected if that is still more."""


class StreamCounts(Protocol):
    """The counters subscribers add to (``FanoutStats``, one for all of them)."""

    delivered: int
    conflated: int


class Subscriber:
    """One stream's buffer. Filled by ``FeedbackFanout.publish``, drained by ``next_chunk``.

    What a stream gets on connect (snapshot or replay, bounded by the history) is
    sent first. Live frames are buffered in order up to ``limit`` frames and
    ``limit_bytes``; a subscriber that lets more pile up switches to keeping only the
    latest frame of each coordinator (in id order) until it catches up, and is
    disconnected if even that exceeds either bound.
    """

    __slots__ = (
        "_above",
        "_initial",
        "_initial_pos",
        "_latest",
        "_pending",
        "_pending_bytes",
        "_stats",
        "_waiter",
        "client",
        "close_reason",
        "coordinators",
        "first_id",
        "keepalive_due",
        "keepalive_sec",
        "limit",
        "limit_bytes",
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
        *,
        limit_bytes: int = MAX_PENDING_BYTES,
        client: str | None = None,
    ) -> None:
        self.coordinators = coordinators
        self.min_rank = min_rank
        self.limit = limit
        self.limit_bytes = limit_bytes
        self.client = client
        """The client's address (what the per-client cap counts), None: not counted."""
        self._stats = stats
        self._initial: Sequence[Frame] = ()  # shared with other subscribers: never changed
        self._initial_pos = 0
        self.first_id: int | None = None
        """Id of the first frame this stream is sent (None: nothing yet)."""
        self._pending: deque[Frame] = deque()
        self._pending_bytes = 0  # wire bytes of the live frames buffered
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

    def recall(self, told: Iterable[Frame], *, unsure: Iterable[str] = ()) -> None:
        """``told``: the frames up to the id this consumer resumes from, oldest first.
        The levels it was told then are those it knows: the end of one at or above
        ``min_level`` is part of what follows. ``unsure``: coordinators whose level
        then is not known: the end of a level is sent for them too."""
        above = self._above
        above.update(unsure)
        for frame in told:
            if frame.rank >= self.min_rank:
                above.add(frame.coord_id)
            else:
                above.discard(frame.coord_id)

    def offer(self, frame: Frame) -> bool:
        """Buffer ``frame`` if wanted; False when this subscriber has to go."""
        if self.close_reason is not None or not self.wants(frame):
            return True
        size = len(frame.wire)
        latest = self._latest
        if latest is None:
            if len(self._pending) < self.limit and self._pending_bytes + size <= self.limit_bytes:
                self._pending.append(frame)
                self._pending_bytes += size
                self._wake()
                return True
            latest = self._latest = {}
            for old in self._pending:
                replaced = latest.pop(old.coord_id, None)
                if replaced is not None:
                    self._pending_bytes -= len(replaced.wire)
                latest[old.coord_id] = old
            self._stats.conflated += len(self._pending) - len(latest)
            self._pending.clear()
        replaced = latest.pop(frame.coord_id, None)
        latest[frame.coord_id] = frame  # at the end: ids stay in order
        self._pending_bytes += size
        if replaced is not None:
            self._pending_bytes -= len(replaced.wire)
            self._stats.conflated += 1
        self._wake()
        return len(latest) <= self.limit and self._pending_bytes <= self.limit_bytes

    def preload(self, frames: Sequence[Frame]) -> None:
        """What the stream gets first (snapshot or replay), through the same filters.
        Without filters ``frames`` itself is kept (the fan-out's snapshot, shared by
        every such stream): it must not change afterwards."""
        wanted = (
            frames
            if self.coordinators is None and not self.min_rank
            else [frame for frame in frames if self.wants(frame)]
        )
        if wanted:
            self.first_id = wanted[0].seq
            self._initial, self._initial_pos = wanted, 0

    def close(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
            self._pending.clear()
            self._pending_bytes = 0
            self._latest = None
            self._initial, self._initial_pos = (), 0
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
        """What is buffered, oldest first (what it starts with before live frames), up
        to about ``CHUNK_BYTES`` joined, and forget it. A single frame is sent as the
        fan-out's own bytes, never copied."""
        taken: list[bytes] = []
        size = 0
        initial, pos = self._initial, self._initial_pos
        while pos < len(initial) and (size < CHUNK_BYTES or not taken):
            wire = initial[pos].wire
            if taken and size + len(wire) > CHUNK_BYTES:
                break
            taken.append(wire)
            size += len(wire)
            pos += 1
        if pos < len(initial):
            self._initial_pos = pos
        else:
            self._initial, self._initial_pos = (), 0
            if self._latest is not None:  # conflated: the latest per coordinator, in order
                self._pending.extend(self._latest.values())
                self._latest = None
            pending = self._pending
            while pending and (size < CHUNK_BYTES or not taken):
                wire = pending[0].wire
                if taken and size + len(wire) > CHUNK_BYTES:
                    break
                pending.popleft()
                self._pending_bytes -= len(wire)
                taken.append(wire)
                size += len(wire)
        self._stats.delivered += len(taken)
        return taken[0] if len(taken) == 1 else b"".join(taken)

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
