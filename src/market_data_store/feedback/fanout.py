"""Server-Sent Events fan-out: every event encoded once, bounded per subscriber.

``FeedbackFanout.publish`` (synchronous, no I/O) numbers an event, encodes its
SSE frame once, keeps it as the coordinator's latest and in a bounded history,
and offers the frame to each subscriber. A subscriber is a small in-memory
buffer drained by its own stream; publishing never waits for any of them:

- a reader that keeps up gets every event, in order;
- one that falls ``subscriber_queue`` frames behind is conflated to the latest
  frame per coordinator (it never reads a stale level as current), and if that
  is still too much it is disconnected;
- a dead or stalled reader is found by keepalive comments plus the stream's
  send timeout.

Ids are strictly increasing per process and start at the process start time in
microseconds, so an id from an earlier process is never mistaken for a recent
one: resuming with it gets ``event: reset`` and the snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from market_data_store.coordinator import BackpressureLevel, FeedbackEvent

from .wire import LEVEL_RANK, encode_event

log = logging.getLogger(__name__)

KEEPALIVE = b": keepalive\n\n"
RETRY_MS = 2000
"""Reconnect delay suggested to clients in the ``retry:`` line."""


class StreamRefusedError(Exception):
    """A new subscriber is not taken: ``reason`` is ``limit`` or ``shutting_down``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Frame:
    """One event, numbered and encoded once for every subscriber."""

    seq: int
    coordinator_id: str
    rank: int  # 0 ok, 1 soft, 2 hard
    event: FeedbackEvent
    data: bytes  # the event's JSON
    wire: bytes  # the whole SSE message


@dataclass
class FanoutStats:
    """Plain counters, read by telemetry when scraped."""

    published_local: int = 0
    published_remote: int = 0
    delivered: int = 0  # frames written to subscribers' streams
    conflated: int = 0  # frames a lagging subscriber skipped (a newer one replaced them)
    dropped_slow: int = 0  # subscribers disconnected for lagging past subscriber_queue
    dropped_send_timeout: int = 0  # subscribers whose send did not complete in time
    refused: int = 0  # connections refused at the subscriber cap
    remote_refused: int = 0  # remote events of new coordinators past max_remote


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
        "limit",
        "min_rank",
        "on_close",
        "sent_since_tick",
    )

    def __init__(
        self,
        coordinators: frozenset[str] | None,
        min_rank: int,
        limit: int,
        stats: FanoutStats,
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
        self.keepalive_due = False
        self.sent_since_tick = False
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
        cid = frame.coordinator_id
        if self.coordinators is not None and cid not in self.coordinators:
            return False
        if not self.min_rank:
            return True
        if frame.rank >= self.min_rank:
            self._above.add(cid)
            return True
        if cid in self._above:
            self._above.discard(cid)
            return True
        return False

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
                latest.pop(old.coordinator_id, None)
                latest[old.coordinator_id] = old
            self._stats.conflated += len(self._pending) - len(latest)
            self._pending.clear()
        replaced = latest.pop(frame.coordinator_id, None)
        latest[frame.coordinator_id] = frame  # at the end: ids stay in order
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

    def tick(self) -> None:
        """Heartbeat: ask for a keepalive comment unless data went out since the last tick."""
        if not self.sent_since_tick:
            self.keepalive_due = True
            self._wake()
        self.sent_since_tick = False

    def close(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
            self._pending.clear()
            self._latest = None
            self._initial = b""
            self._wake()
            if self.on_close is not None:
                self.on_close()

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

    async def next_chunk(self) -> bytes | None:
        """The bytes to send next (buffered frames, or a keepalive); None once closed."""
        while self.close_reason is None:
            if self._initial or self._pending or self._latest:
                self.sent_since_tick = True
                return self._take()
            if self.keepalive_due:
                self.keepalive_due = False
                return KEEPALIVE
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return None


class FeedbackFanout:
    """Numbers, encodes and fans out feedback events; keeps the snapshot and history."""

    def __init__(
        self,
        *,
        history: int = 1024,
        subscriber_queue: int = 256,
        max_subscribers: int = 10_000,
        heartbeat_sec: float = 15.0,
        max_remote: int = 1000,
    ) -> None:
        self.stats = FanoutStats()
        self._remote_seen: dict[str, float] = {}
        self._max_remote = max_remote
        self._history: deque[Frame] = deque(maxlen=history)
        self._latest: dict[str, Frame] = {}
        self._local: set[str] = set()
        self._subscribers: set[Subscriber] = set()
        self._subscriber_queue = subscriber_queue
        self._max_subscribers = max_subscribers
        self._heartbeat_sec = heartbeat_sec
        self._next_seq = time.time_ns() // 1000
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- publishing ----------------------------------------------------------

    def publish(self, event: FeedbackEvent, *, local: bool = True) -> Frame:
        """Number and encode ``event`` once, remember it, offer it to every subscriber."""
        seq = self._next_seq
        self._next_seq = seq + 1
        data = encode_event(event)
        cid = event.coordinator_id
        frame = Frame(
            seq,
            cid,
            LEVEL_RANK[event.level],
            event,
            data,
            b"event: feedback\nid: %d\ndata: %b\n\n" % (seq, data),
        )
        if local:
            self._local.add(cid)
            self.stats.published_local += 1
        else:
            self.stats.published_remote += 1
        self._latest[cid] = frame
        self._history.append(frame)
        lagging = [sub for sub in self._subscribers if not sub.offer(frame)]
        for sub in lagging:
            self.stats.dropped_slow += 1
            sub.close("slow")
            self._subscribers.discard(sub)
        if lagging:
            log.warning(
                "feedback: %d stream(s) fell %d events behind and were disconnected",
                len(lagging),
                self._subscriber_queue,
            )
        return frame

    async def on_local_event(self, event: FeedbackEvent) -> None:
        """Feedback-bus subscriber for this process's coordinators."""
        self.publish(event, local=True)

    def publish_remote(self, event: FeedbackEvent) -> bool:
        """An event of another replica (from Redis): shown to streams and in the snapshot,
        never put on the local bus. Ignored when it names one of our own coordinators
        (our own events coming back), is not newer than what we have, or would add a
        coordinator past ``max_remote``. Marks the coordinator as seen either way."""
        cid = event.coordinator_id
        if cid in self._local:
            return False
        known = self._latest.get(cid)
        if known is None and len(self._remote_seen) >= self._max_remote:
            self.stats.remote_refused += 1
            return False
        self._remote_seen[cid] = time.monotonic()
        if known is not None and known.event.ts >= event.ts:
            return False
        self.publish(event, local=False)
        return True

    def expire_remote(self, max_age: float) -> list[str]:
        """Forget remote coordinators not seen for ``max_age`` s (their replica is gone):
        streams are told with a last ``ok`` event (reason ``replica_gone``), then the
        coordinator leaves the snapshot."""
        cutoff = time.monotonic() - max_age
        gone = [cid for cid, seen in self._remote_seen.items() if seen < cutoff]
        for cid in gone:
            del self._remote_seen[cid]
            last = self._latest.get(cid)
            if last is not None:
                self.publish(
                    FeedbackEvent.create(
                        cid, 0, last.event.capacity, BackpressureLevel.ok, "replica_gone"
                    ),
                    local=False,
                )
                del self._latest[cid]
        if gone:
            log.info("feedback: %d coordinator(s) of replicas gone: %s", len(gone), gone[:10])
        return gone

    # -- reading -------------------------------------------------------------

    @property
    def last_id(self) -> int:
        return self._next_seq - 1

    def snapshot(self) -> list[Frame]:
        """The latest frame of every known coordinator, oldest first."""
        return sorted(self._latest.values(), key=lambda f: f.seq)

    def local_events(self) -> list[FeedbackEvent]:
        return [f.event for f in self.snapshot() if f.coordinator_id in self._local]

    def since(self, last_id: int) -> list[Frame] | None:
        """Frames after ``last_id`` from the history; None when it cannot say (the id
        is older than the history, or not one of this process's ids)."""
        history = self._history
        newest = self._next_seq - 1
        oldest = history[0].seq if history else self._next_seq
        if not oldest - 1 <= last_id <= newest:
            return None
        start = last_id + 1 - oldest  # ids are contiguous within the history
        return [history[i] for i in range(start, len(history))]

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribe(
        self,
        *,
        coordinators: Collection[str] | None = None,
        min_rank: int = 0,
        last_id: int | None = None,
    ) -> tuple[Subscriber, bool]:
        """A new subscriber, preloaded with the snapshot, or with the frames after
        ``last_id``; the flag says the history could not cover ``last_id`` (send
        ``reset`` before the snapshot)."""
        if self._closed:
            raise StreamRefusedError("shutting_down", "the service is shutting down")
        if len(self._subscribers) >= self._max_subscribers:
            self.stats.refused += 1
            raise StreamRefusedError(
                "limit", f"{self._max_subscribers} feedback streams are open already"
            )
        sub = Subscriber(
            frozenset(coordinators) if coordinators else None,
            min_rank,
            self._subscriber_queue,
            self.stats,
        )
        replay = None if last_id is None else self.since(last_id)
        if replay is not None and min_rank:
            # the levels this consumer was told before last_id: the end of one at or
            # above min_level is part of the replay
            above = sub._above
            for frame in self._history:
                if frame.seq > (last_id or 0):
                    break
                if frame.rank >= min_rank:
                    above.add(frame.coordinator_id)
                else:
                    above.discard(frame.coordinator_id)
        sub.preload(self.snapshot() if replay is None else replay)
        self._subscribers.add(sub)
        return sub, last_id is not None and replay is None

    def unsubscribe(self, sub: Subscriber, reason: str = "gone") -> None:
        sub.close(reason)
        self._subscribers.discard(sub)

    def send_timed_out(self, sub: Subscriber) -> None:
        self.stats.dropped_send_timeout += 1
        self.unsubscribe(sub, "send_timeout")

    # -- lifecycle -----------------------------------------------------------

    def start(self, shutdown: asyncio.Event | None = None) -> None:
        """Heartbeats every ``heartbeat_sec``; every stream ends when ``shutdown`` is set."""
        if self._task is None:
            self._task = asyncio.create_task(
                self._heartbeats(shutdown or asyncio.Event()), name="feedback-heartbeat"
            )

    async def _heartbeats(self, shutdown: asyncio.Event) -> None:
        while not shutdown.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shutdown.wait(), self._heartbeat_sec)
            for sub in tuple(self._subscribers):
                sub.tick()
        self.close()

    def close(self) -> None:
        """End every stream now and refuse new ones (idempotent)."""
        self._closed = True
        subs, self._subscribers = self._subscribers, set()
        for sub in subs:
            sub.close("shutting_down")
        if subs:
            log.info("feedback: %d stream(s) ended for shutdown", len(subs))

    async def stop(self) -> None:
        self.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
