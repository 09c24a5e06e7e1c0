"""Server-Sent Events fan-out: every event encoded once, bounded per subscriber.

``FeedbackFanout.publish`` (synchronous, no I/O) numbers an event, encodes its
SSE frame once (``sse.frame``), keeps it as the coordinator's latest and in a
bounded history, and offers the frame to each subscriber. A subscriber
(``subscriber.Subscriber``) is a small in-memory buffer drained by its own
stream; publishing never waits for any of them:

- a reader that keeps up gets every event, in order;
- one that falls ``subscriber_queue`` frames behind is conflated to the latest
  frame per coordinator (it never reads a stale level as current), and if that
  is still too much it is disconnected;
- a dead or stalled reader is found by keepalive comments plus the stream's
  send timeout; a stream's keepalive is due ``heartbeat_sec`` after its own last
  write (event or comment), so an idle stream is never silent for longer.

Ids are strictly increasing per process and start at the process start time in
microseconds, so an id from an earlier process is never mistaken for a recent
one. An id is taken only once the event is encoded, as it enters the history: an
event that cannot be encoded (a remote one with numbers past what JSON carries) is
refused, counted, and uses no id. A resume point is honoured only when it is an
id this process sent and the history holds everything after it; any other (older
than the history, in the future, from another process, never sent) gets
``event: reset`` and the snapshot, never a silent skip.

Memory does not grow with what remote replicas send: the snapshot holds at most
``max_remote`` coordinators of other replicas (besides this process's own), it is
one tuple shared by every stream that starts with it, and each frame's bytes are
shared by every subscriber (see ``subscriber``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from market_data_store._util import ThrottledLog
from market_data_store.coordinator import BackpressureLevel, FeedbackEvent

from . import sse
from .sse import Frame
from .subscriber import Subscriber
from .wire import LEVEL_RANK, encode_event

log = logging.getLogger(__name__)
_invalid = ThrottledLog(log)

MAX_REMOTE_COORDINATORS = 1000
"""Coordinators of other replicas the snapshot holds at most (``max_remote``'s default):
a replica has a handful; events of further ones are refused and counted."""


class StreamRefusedError(Exception):
    """A new subscriber is not taken: ``reason`` is ``limit`` (the server's cap),
    ``client_limit`` (the cap per client address) or ``shutting_down``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class EventEncodingError(ValueError):
    """An event the fan-out cannot encode (say, a ``queue_size`` whose utilization
    overflows a float): nothing of it was published, no id was used."""


@dataclass
class FanoutStats:
    """Plain counters, read by telemetry when scraped."""

    published_local: int = 0
    published_remote: int = 0
    delivered: int = 0  # frames written to subscribers' streams
    conflated: int = 0  # frames a lagging subscriber skipped (a newer one replaced them)
    dropped_slow: int = 0  # subscribers disconnected for lagging past subscriber_queue
    dropped_send_timeout: int = 0  # subscribers whose send did not complete in time
    refused: int = 0  # connections refused at a cap (the server's or a client's)
    refused_per_client: int = 0  # of those, at the cap per client address
    remote_refused: int = 0  # remote events of new coordinators past max_remote
    remote_invalid: int = 0  # remote events that could not be encoded (dropped)


class FeedbackFanout:
    """Numbers, encodes and fans out feedback events; keeps the snapshot and history."""

    def __init__(
        self,
        *,
        history: int = 1024,
        subscriber_queue: int = 256,
        max_subscribers: int = 10_000,
        heartbeat_sec: float = 15.0,
        max_remote: int = MAX_REMOTE_COORDINATORS,
    ) -> None:
        self.stats = FanoutStats()
        self._remote_seen: dict[str, float] = {}
        self._max_remote = max_remote
        self._history: deque[Frame] = deque(maxlen=history)
        self._latest: dict[str, Frame] = {}
        self._snapshot: tuple[Frame, ...] | None = None  # of _latest, built when asked
        self._local: set[str] = set()
        self._subscribers: set[Subscriber] = set()
        self._per_client: dict[str, int] = {}
        self._subscriber_queue = subscriber_queue
        self._max_subscribers = max_subscribers
        self._heartbeat_sec = heartbeat_sec
        self._next_seq = time.time_ns() // 1000
        # the newest id older than the history (resuming from it replays all of it)
        self._floor = self._next_seq - 1
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- publishing ----------------------------------------------------------

    def publish(self, event: FeedbackEvent, *, local: bool = True) -> Frame:
        """Encode ``event`` once, number it, remember it, offer it to every subscriber.
        ``EventEncodingError`` (nothing published, no id used) if it cannot be encoded."""
        return self._publish(event, _encode(event), local=local)

    def _publish(self, event: FeedbackEvent, data: bytes, *, local: bool) -> Frame:
        seq = self._next_seq
        coord_id = event.coordinator_id
        frame = Frame(
            seq, coord_id, LEVEL_RANK[event.level], event, data, sse.frame(seq, "feedback", data)
        )
        self._next_seq = seq + 1  # from here on nothing can fail: the id is in the history
        if local:
            self._local.add(coord_id)
            self.stats.published_local += 1
        else:
            self.stats.published_remote += 1
        self._latest[coord_id] = frame
        self._snapshot = None
        history = self._history
        if len(history) == history.maxlen:
            self._floor = history[0].seq
        history.append(frame)
        lagging = [sub for sub in self._subscribers if not sub.offer(frame)]
        for sub in lagging:
            self.stats.dropped_slow += 1
            sub.close("slow")
            self._discard(sub)
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
        coordinator past ``max_remote``. Marks the coordinator as seen either way, unless
        the event cannot be encoded: then it is dropped and counted (``remote_invalid``)."""
        coord_id = event.coordinator_id
        if coord_id in self._local:
            return False
        try:
            data = _encode(event)
        except EventEncodingError as exc:
            self.stats.remote_invalid += 1
            _invalid.log(logging.WARNING, "encode", "feedback: remote event dropped: %s", exc)
            return False
        known = self._latest.get(coord_id)
        if known is None and len(self._remote_seen) >= self._max_remote:
            self.stats.remote_refused += 1
            return False
        self._remote_seen[coord_id] = time.monotonic()
        if known is not None and known.event.ts >= event.ts:
            return False
        self._publish(event, data, local=False)
        return True

    def expire_remote(self, max_age: float) -> list[str]:
        """Forget remote coordinators not seen for ``max_age`` s (their replica is gone):
        streams are told with a last ``ok`` event (reason ``replica_gone``), then the
        coordinator leaves the snapshot."""
        cutoff = time.monotonic() - max_age
        gone = [coord_id for coord_id, seen in self._remote_seen.items() if seen < cutoff]
        for coord_id in gone:
            del self._remote_seen[coord_id]
            last = self._latest.get(coord_id)
            if last is not None:
                # its capacity was encoded before: this one encodes too (else: no last word)
                with contextlib.suppress(EventEncodingError):
                    self.publish(
                        FeedbackEvent.create(
                            coord_id, 0, last.event.capacity, BackpressureLevel.ok, "replica_gone"
                        ),
                        local=False,
                    )
                del self._latest[coord_id]
                self._snapshot = None
        if gone:
            log.info("feedback: %d coordinator(s) of replicas gone: %s", len(gone), gone[:10])
        return gone

    # -- reading -------------------------------------------------------------

    @property
    def last_id(self) -> int:
        return self._next_seq - 1

    def snapshot(self) -> Sequence[Frame]:
        """The latest frame of every known coordinator, oldest first: one tuple, the
        same for every caller until the next event (streams share it)."""
        snapshot = self._snapshot
        if snapshot is None:
            snapshot = self._snapshot = tuple(sorted(self._latest.values(), key=lambda f: f.seq))
        return snapshot

    def coordinator_ids(self) -> list[str]:
        """Every known coordinator (those of the snapshot), sorted."""
        return sorted(self._latest)

    def unknown(self, coordinators: Collection[str]) -> list[str]:
        """Those of ``coordinators`` that have not reported (not in the snapshot), in
        their order, once each."""
        latest = self._latest
        return [c for c in dict.fromkeys(coordinators) if c not in latest]

    def local_events(self) -> list[FeedbackEvent]:
        return [f.event for f in self.snapshot() if f.coord_id in self._local]

    def since(self, last_id: int) -> list[Frame] | None:
        """Frames after ``last_id`` from the history; None when that cannot be said
        exactly: ``last_id`` is not an id this process sent with everything after it
        still in the history (older than the history, in the future, from another
        process, or never sent)."""
        history = self._history
        if last_id == self._floor:
            return list(history)
        i = bisect.bisect_left(history, last_id, key=_seq)
        if i == len(history) or history[i].seq != last_id:
            return None
        return list(itertools.islice(history, i + 1, None))

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribe(
        self,
        *,
        coordinators: Collection[str] | None = None,
        min_rank: int = 0,
        last_id: int | None = None,
        client: str | None = None,
        max_per_client: int | None = None,
    ) -> tuple[Subscriber, bool]:
        """A new subscriber, preloaded with the snapshot, or with the frames after
        ``last_id``; the flag says the history could not cover ``last_id`` (send
        ``reset`` before the snapshot). ``client`` (an address) may hold at most
        ``max_per_client`` subscribers at once (None: no such cap)."""
        if self._closed:
            raise StreamRefusedError("shutting_down", "the service is shutting down")
        if len(self._subscribers) >= self._max_subscribers:
            self.stats.refused += 1
            raise StreamRefusedError(
                "limit", f"{self._max_subscribers} feedback streams are open already"
            )
        if (
            client is not None
            and max_per_client is not None
            and self._per_client.get(client, 0) >= max_per_client
        ):
            self.stats.refused += 1
            self.stats.refused_per_client += 1
            raise StreamRefusedError(
                "client_limit",
                f"{max_per_client} feedback streams are open from this client already",
            )
        sub = Subscriber(
            frozenset(coordinators) if coordinators else None,
            min_rank,
            self._subscriber_queue,
            self.stats,
            self._heartbeat_sec,
            client=client,
        )
        replay = None if last_id is None else self.since(last_id)
        if replay is not None and min_rank:
            resumed_from = last_id or 0
            told = list(itertools.takewhile(lambda f: f.seq <= resumed_from, self._history))
            # a coordinator none of whose frames up to the resume point is still in the
            # history: its last frame, if it came before that point, is what the
            # consumer was told; if it came after, what it was told is not known, and
            # the end of a level it may have been told is sent (an extra ``ok`` is
            # harmless, a missing one leaves it at hard for good)
            in_told = {f.coord_id for f in told}
            before = [f for f in self._latest.values() if f.coord_id not in in_told]
            unsure = [f.coord_id for f in before if f.seq > resumed_from]
            sub.recall([f for f in before if f.seq <= resumed_from] + told, unsure=unsure)
        sub.preload(self.snapshot() if replay is None else replay)
        self._subscribers.add(sub)
        if client is not None:
            self._per_client[client] = self._per_client.get(client, 0) + 1
        return sub, last_id is not None and replay is None

    def streams_of(self, client: str) -> int:
        """Subscribers of ``client`` (an address) open now."""
        return self._per_client.get(client, 0)

    def unsubscribe(self, sub: Subscriber, reason: str = "gone") -> None:
        sub.close(reason)
        self._discard(sub)

    def _discard(self, sub: Subscriber) -> None:
        """Forget ``sub`` (once: its client's count is released with it)."""
        if sub not in self._subscribers:
            return
        self._subscribers.discard(sub)
        client = sub.client
        if client is not None:
            left = self._per_client.get(client, 0) - 1
            if left > 0:
                self._per_client[client] = left
            else:
                self._per_client.pop(client, None)

    def send_timed_out(self, sub: Subscriber) -> None:
        self.stats.dropped_send_timeout += 1
        self.unsubscribe(sub, "send_timeout")

    # -- lifecycle -----------------------------------------------------------

    def start(self, shutdown: asyncio.Event | None = None) -> None:
        """Every stream ends when ``shutdown`` is set. (Keepalives need no task: each
        stream's ``Subscriber.next_chunk`` times its own.)"""
        if self._task is None:
            self._task = asyncio.create_task(
                self._close_on(shutdown or asyncio.Event()), name="feedback-shutdown"
            )

    async def _close_on(self, shutdown: asyncio.Event) -> None:
        await shutdown.wait()
        self.close()

    def close(self) -> None:
        """End every stream now and refuse new ones (idempotent)."""
        self._closed = True
        subs, self._subscribers = self._subscribers, set()
        self._per_client.clear()
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


def _seq(frame: Frame) -> int:
    return frame.seq


def _encode(event: FeedbackEvent) -> bytes:
    """The event's JSON (``wire.encode_event``); ``EventEncodingError`` when it has none
    (its fields are Core's model's, checked when built, but numbers may still be past
    what a float or JSON carries)."""
    try:
        return encode_event(event)
    except Exception as exc:  # whatever the encoder raises: the event is refused
        raise EventEncodingError(
            f"event of {event.coordinator_id[:64]!r} cannot be encoded: {type(exc).__name__}"
        ) from None
