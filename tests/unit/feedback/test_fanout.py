"""The SSE fan-out without sockets: numbering, snapshot, history, resume, the cap,
keepalives, shutdown, remote events."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from market_data_core.telemetry import FeedbackEvent as CoreFeedbackEvent

from market_data_store.feedback import KEEPALIVE, FeedbackFanout, StreamRefusedError
from market_data_store.feedback.fanout import EventEncodingError

from .frames import HARD, OK, SOFT, drain, event

UNENCODABLE = event("r/bars", HARD, 10**400)
"""Core's model takes it; its utilization (queue_size / capacity) overflows a float."""


def test_ids_strictly_increase_and_frames_are_sse_messages_with_core_json() -> None:
    fanout = FeedbackFanout()
    frames = [fanout.publish(event("a", level, 10)) for level in (SOFT, HARD, OK)]
    ids = [f.seq for f in frames]
    assert ids == sorted(set(ids))
    assert ids[-1] == fanout.last_id
    for frame in frames:
        head, data = frame.wire.split(b"\ndata: ")
        assert head == b"event: feedback\nid: %d" % frame.seq
        assert data.endswith(b"\n\n")
        assert b"\n" not in data[:-2]
        core = CoreFeedbackEvent.model_validate_json(frame.data)
        assert core.coordinator_id == "a"
        extra = json.loads(frame.data)
        assert extra["reason"] == "test"
        assert extra["utilization"] == 0.1


def test_ids_start_above_those_of_an_earlier_process() -> None:
    earlier = FeedbackFanout()
    old = earlier.publish(event("a", OK)).seq
    later = FeedbackFanout()
    assert later.publish(event("a", OK)).seq > old
    assert later.since(old) is None  # an earlier process's id: reset, never a wrong replay


def test_snapshot_is_the_latest_event_per_coordinator_oldest_first() -> None:
    fanout = FeedbackFanout()
    fanout.publish(event("a", SOFT))
    b = fanout.publish(event("b", HARD))
    a = fanout.publish(event("a", OK))
    assert [f.seq for f in fanout.snapshot()] == [b.seq, a.seq]
    sub, reset = fanout.subscribe()
    assert not reset
    assert drain(sub) == [(b.seq, "b", "hard"), (a.seq, "a", "ok")]


def test_resume_replays_exactly_the_events_after_the_id() -> None:
    fanout = FeedbackFanout(history=10)
    frames = [fanout.publish(event("a", lvl)) for lvl in (SOFT, HARD, OK, SOFT)]
    sub, reset = fanout.subscribe(last_id=frames[1].seq)
    assert not reset
    assert [seq for seq, _, _ in drain(sub)] == [frames[2].seq, frames[3].seq]
    up_to_date, reset = fanout.subscribe(last_id=frames[3].seq)
    assert not reset
    assert drain(up_to_date) == []


def test_resume_from_beyond_the_history_is_a_reset_with_the_snapshot() -> None:
    fanout = FeedbackFanout(history=3)
    first = fanout.publish(event("a", SOFT))
    for lvl in (HARD, OK, SOFT, HARD):
        fanout.publish(event("b", lvl))
    assert fanout.since(first.seq) is None
    sub, reset = fanout.subscribe(last_id=first.seq)
    assert reset
    assert [(c, lvl) for _, c, lvl in drain(sub)] == [("a", "soft"), ("b", "hard")]
    _future, reset = fanout.subscribe(last_id=fanout.last_id + 5)
    assert reset


async def test_idle_streams_get_keepalives_and_shutdown_ends_every_stream() -> None:
    fanout = FeedbackFanout(heartbeat_sec=0.05)
    shutdown = asyncio.Event()
    fanout.start(shutdown)
    subs = [fanout.subscribe()[0] for _ in range(3)]
    for sub in subs:
        assert await asyncio.wait_for(sub.next_chunk(), 2) == KEEPALIVE
    waiters = [asyncio.create_task(sub.next_chunk()) for sub in subs]
    shutdown.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 2) == [None, None, None]
    with pytest.raises(StreamRefusedError) as refused:
        fanout.subscribe()
    assert refused.value.reason == "shutting_down"
    await fanout.stop()


def test_unknown_names_the_coordinators_no_one_has_reported() -> None:
    fanout = FeedbackFanout()
    fanout.publish(event("h/bars", OK))
    fanout.publish_remote(event("r/bars", OK))
    assert fanout.coordinator_ids() == ["h/bars", "r/bars"]
    assert fanout.unknown(["x/bars", "h/bars", "r/bars", "x/bars", "y"]) == ["x/bars", "y"]
    assert fanout.unknown(["h/bars"]) == []


def test_subscriber_cap() -> None:
    fanout = FeedbackFanout(max_subscribers=2)
    fanout.subscribe()
    second, _ = fanout.subscribe()
    with pytest.raises(StreamRefusedError) as refused:
        fanout.subscribe()
    assert refused.value.reason == "limit"
    assert fanout.stats.refused == 1
    fanout.unsubscribe(second)
    fanout.subscribe()


def test_remote_events_join_the_snapshot_but_never_replace_local_ones() -> None:
    fanout = FeedbackFanout()
    fanout.publish(event("here/bars", OK))
    assert not fanout.publish_remote(event("here/bars", HARD))  # our own, come back
    assert fanout.publish_remote(event("there/bars", HARD, ts=100.0))
    assert not fanout.publish_remote(event("there/bars", OK, ts=99.0))  # older: ignored
    assert fanout.stats.published_local == 1
    assert fanout.stats.published_remote == 1
    assert {f.coord_id: f.event.level.value for f in fanout.snapshot()} == {
        "here/bars": "ok",
        "there/bars": "hard",
    }
    assert [e.coordinator_id for e in fanout.local_events()] == ["here/bars"]


def test_a_min_level_consumer_resuming_is_told_that_hard_ended_meanwhile() -> None:
    fanout = FeedbackFanout()
    sub, _ = fanout.subscribe(min_rank=2)
    fanout.publish(event("a", HARD))
    (seen,) = drain(sub)
    fanout.unsubscribe(sub)
    fanout.publish(event("a", SOFT))  # hard is over while it was away
    fanout.publish(event("a", OK))
    resumed, reset = fanout.subscribe(min_rank=2, last_id=seen[0])
    assert not reset
    assert [lvl for _, _, lvl in drain(resumed)] == ["soft"]


def test_a_min_level_consumer_resuming_is_told_of_an_end_whose_start_left_the_history() -> None:
    """The review of issue 18: A went hard, other events pushed A's frame out of the
    history, B went hard; a consumer resuming from B's id was honoured and never told
    that A's hard ended (it took A as hard for good)."""
    fanout = FeedbackFanout(history=8)
    sub, _ = fanout.subscribe(min_rank=2)
    fanout.publish(event("a", HARD))
    for i in range(10):  # noise a min_level=hard consumer does not see
        fanout.publish(event("c", SOFT if i % 2 else OK))
    fanout.publish(event("b", HARD))
    seen = drain(sub)
    assert [(c, lvl) for _, c, lvl in seen] == [("a", "hard"), ("b", "hard")]
    last_id = seen[-1][0]  # B's
    assert all(f.coord_id != "a" for f in fanout._history)  # A's frame has left
    fanout.unsubscribe(sub)
    resumed, reset = fanout.subscribe(min_rank=2, last_id=last_id)
    assert not reset  # B's id is in the history: the resume is honoured
    fanout.publish(event("a", OK))
    fanout.publish(event("c", OK))  # never above: still not sent
    assert [(c, lvl) for _, c, lvl in drain(resumed)] == [("a", "ok")]


def test_remote_coordinators_of_gone_replicas_expire_with_a_last_ok() -> None:
    fanout = FeedbackFanout(max_remote=2)
    listener, _ = fanout.subscribe()
    assert fanout.publish_remote(event("r1/bars", HARD, 90))
    assert fanout.publish_remote(event("r2/bars", SOFT, 60))
    assert not fanout.publish_remote(event("r3/bars", SOFT))  # past max_remote
    assert fanout.stats.remote_refused == 1
    drain(listener)
    assert fanout.expire_remote(3600) == []
    fanout._remote_seen["r1/bars"] -= 7200  # not seen for two hours
    assert fanout.expire_remote(3600) == ["r1/bars"]
    assert [(c, lvl) for _, c, lvl in drain(listener)] == [("r1/bars", "ok")]
    assert [f.coord_id for f in fanout.snapshot()] == ["r2/bars"]


def test_an_event_that_cannot_be_encoded_uses_no_id_and_resume_misses_nothing() -> None:
    """Issue 18: a remote event failing on its way burnt an id with no history entry;
    resume assumed contiguous ids, so a client resuming after ``soft`` silently missed
    the following ``hard``."""
    fanout = FeedbackFanout(history=10)
    first = fanout.publish(event("a", OK))
    with contextlib.suppress(Exception):  # however it fails, it must not burn an id
        fanout.publish_remote(UNENCODABLE)
    soft = fanout.publish(event("a", SOFT))
    hard = fanout.publish(event("a", HARD))
    assert [first.seq + 1, first.seq + 2] == [soft.seq, hard.seq]  # contiguous
    replay = fanout.since(soft.seq)
    assert replay is not None
    assert [f.seq for f in replay] == [hard.seq]
    resumed, reset = fanout.subscribe(last_id=soft.seq)
    assert not reset
    assert [(c, lvl) for _, c, lvl in drain(resumed)] == [("a", "hard")]


def test_a_remote_event_that_cannot_be_encoded_is_dropped_and_counted() -> None:
    fanout = FeedbackFanout()
    listener, _ = fanout.subscribe()
    before = fanout.last_id
    assert not fanout.publish_remote(UNENCODABLE)
    assert fanout.stats.remote_invalid == 1
    assert fanout.last_id == before
    assert fanout.snapshot() == ()
    assert fanout.coordinator_ids() == []  # not even taken as seen (it would never expire)
    assert fanout.expire_remote(0) == []
    assert drain(listener) == []
    with pytest.raises(EventEncodingError):
        fanout.publish(UNENCODABLE)  # a local one: refused, nothing published either
    assert fanout.last_id == before


def test_resume_is_exact_or_a_reset() -> None:
    fanout = FeedbackFanout(history=3)
    start = fanout.last_id  # before any event: resuming from it is exact (nothing missed)
    assert fanout.since(start) == []
    frames = [fanout.publish(event("a", lvl)) for lvl in (SOFT, HARD, OK, SOFT, HARD)]
    kept = frames[-3:]
    assert fanout.since(start) is None  # older than the history now
    # the id right before the history: everything after it is there
    assert fanout.since(frames[1].seq) == kept
    assert fanout.since(frames[0].seq) is None
    assert fanout.since(kept[0].seq) == kept[1:]
    assert fanout.since(kept[-1].seq) == []
    for unknown in (kept[-1].seq + 1, kept[-1].seq + 10**6, 0, 1, start - 1):
        assert fanout.since(unknown) is None, unknown  # in the future, from elsewhere


def test_streams_per_client_are_capped_and_freed_once() -> None:
    fanout = FeedbackFanout(subscriber_queue=1)
    a1, _ = fanout.subscribe(client="10.0.0.1", max_per_client=2)
    a2, _ = fanout.subscribe(client="10.0.0.1", max_per_client=2)
    with pytest.raises(StreamRefusedError) as refused:
        fanout.subscribe(client="10.0.0.1", max_per_client=2)
    assert refused.value.reason == "client_limit"
    assert (fanout.stats.refused, fanout.stats.refused_per_client) == (1, 1)
    other, _ = fanout.subscribe(client="10.0.0.2", max_per_client=2)  # another address
    assert fanout.streams_of("10.0.0.1") == 2
    fanout.unsubscribe(a1)
    fanout.unsubscribe(a1)  # twice (the stream ends after a timeout did): freed once
    assert fanout.streams_of("10.0.0.1") == 1
    a3, _ = fanout.subscribe(client="10.0.0.1", max_per_client=2)
    # a subscriber dropped for lagging frees its slot too
    drain(other)
    for cid in ("x", "y"):
        fanout.publish(event(cid, SOFT))
    assert all(sub.closed for sub in (a2, a3, other))
    assert fanout.streams_of("10.0.0.1") == 0
    assert fanout.streams_of("10.0.0.2") == 0
    fanout.unsubscribe(a2)
    assert fanout.streams_of("10.0.0.1") == 0
    assert fanout._per_client == {}  # no entry left behind per address
