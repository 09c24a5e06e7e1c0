"""The SSE fan-out without sockets: numbering, snapshot, history, filters, bounds."""

from __future__ import annotations

import asyncio
import json

import pytest
from market_data_core.telemetry import FeedbackEvent as CoreFeedbackEvent

from market_data_store.coordinator import BackpressureLevel, FeedbackEvent
from market_data_store.feedback import KEEPALIVE, FeedbackFanout, StreamRefusedError, Subscriber

OK, SOFT, HARD = BackpressureLevel.ok, BackpressureLevel.soft, BackpressureLevel.hard


def event(
    cid: str, level: BackpressureLevel, size: int = 0, ts: float | None = None
) -> FeedbackEvent:
    e = FeedbackEvent.create(cid, size, 100, level, "test")
    return e if ts is None else e.model_copy(update={"ts": ts})


def drain(sub: Subscriber) -> list[tuple[int, str, str]]:
    """(id, coordinator, level) of every frame buffered for ``sub``, taken as the stream
    would take them."""
    out = []
    for message in sub._take().split(b"\n\n"):
        if message:
            lines = dict(line.split(b": ", 1) for line in message.split(b"\n"))
            data = json.loads(lines[b"data"])
            out.append((int(lines[b"id"]), data["coordinator_id"], data["level"]))
    return out


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


def test_coordinator_and_level_filters() -> None:
    fanout = FeedbackFanout()
    only_a, _ = fanout.subscribe(coordinators=["a"])
    hard_only, _ = fanout.subscribe(min_rank=2)
    for cid, lvl in (("a", SOFT), ("b", HARD), ("a", HARD), ("a", OK), ("b", SOFT), ("a", OK)):
        fanout.publish(event(cid, lvl))
    assert [(c, lvl) for _, c, lvl in drain(only_a)] == [
        ("a", "soft"), ("a", "hard"), ("a", "ok"), ("a", "ok"),
    ]  # fmt: skip
    # hard events, plus the event that ends each coordinator's hard level (told it is over)
    assert [(c, lvl) for _, c, lvl in drain(hard_only)] == [
        ("b", "hard"), ("a", "hard"), ("a", "ok"), ("b", "soft"),
    ]  # fmt: skip


def test_a_lagging_subscriber_is_conflated_to_the_latest_per_coordinator() -> None:
    fanout = FeedbackFanout(subscriber_queue=4)
    slow, _ = fanout.subscribe()
    fast, _ = fanout.subscribe()
    published = []
    for i, lvl in enumerate((SOFT, HARD, OK, SOFT, HARD)):
        published.append(fanout.publish(event("a" if i % 2 else "b", lvl)))
        drain(fast)  # keeps up
    got = drain(slow)
    # the fifth event found 4 pending: conflated to the latest of a and b, then appended
    assert [seq for seq, _, _ in got] == sorted(seq for seq, _, _ in got)
    latest = {c: lvl for _, c, lvl in got}
    assert latest == {"a": "soft", "b": "hard"}  # never a stale level as the last word
    assert len(got) <= 4
    assert fanout.stats.conflated == 5 - len(got)
    assert not slow.closed


def test_a_subscriber_still_too_far_behind_after_conflation_is_dropped() -> None:
    fanout = FeedbackFanout(subscriber_queue=2)
    slow, _ = fanout.subscribe()
    fast, _ = fanout.subscribe()
    received = []
    for cid in ("a", "b", "c"):  # three coordinators cannot conflate below 3 > 2
        fanout.publish(event(cid, SOFT))
        received += drain(fast)
    assert slow.closed
    assert slow.close_reason == "slow"
    assert fanout.subscriber_count == 1
    assert fanout.stats.dropped_slow == 1
    assert [c for _, c, _ in received] == ["a", "b", "c"]


async def test_next_chunk_joins_what_is_buffered_and_keepalives_only_when_idle() -> None:
    fanout = FeedbackFanout()
    sub, _ = fanout.subscribe()
    a = fanout.publish(event("a", SOFT))
    b = fanout.publish(event("a", HARD))
    assert await sub.next_chunk() == a.wire + b.wire
    assert fanout.stats.delivered == 2
    sub.tick()  # data went out since the last tick: no keepalive needed
    waiting = asyncio.create_task(sub.next_chunk())
    await asyncio.sleep(0)
    assert not waiting.done()
    sub.tick()  # a whole interval without data
    assert await asyncio.wait_for(waiting, 1) == KEEPALIVE
    sub.close("test")
    assert await sub.next_chunk() is None


async def test_heartbeat_task_ticks_and_shutdown_ends_every_stream() -> None:
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
    assert {f.coordinator_id: f.event.level.value for f in fanout.snapshot()} == {
        "here/bars": "ok",
        "there/bars": "hard",
    }
    assert [e.coordinator_id for e in fanout.local_events()] == ["here/bars"]


def test_a_full_buffer_of_distinct_coordinators_takes_a_newer_frame_of_one_of_them() -> None:
    fanout = FeedbackFanout(subscriber_queue=3)
    sub, _ = fanout.subscribe()
    for cid in ("a", "b", "c", "a"):  # the 4th replaces a: still 3 coordinators
        fanout.publish(event(cid, SOFT))
    assert not sub.closed
    assert [c for _, c, _ in drain(sub)] == ["b", "c", "a"]
    for cid in ("a", "b", "c", "d"):  # 4 coordinators > 3: that is too far behind
        fanout.publish(event(cid, HARD))
    assert sub.closed


def test_what_a_stream_gets_on_connect_does_not_count_against_its_buffer() -> None:
    fanout = FeedbackFanout(subscriber_queue=2, history=100)
    start = fanout.last_id
    for i in range(10):
        fanout.publish(event(f"c{i}", SOFT))
    replaying, _ = fanout.subscribe(last_id=start)
    snapshot, _ = fanout.subscribe()
    fanout.publish(event("c0", HARD))
    assert not replaying.closed
    assert not snapshot.closed
    assert len(drain(replaying)) == 11
    assert len(drain(snapshot)) == 11


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
    assert [f.coordinator_id for f in fanout.snapshot()] == ["r2/bars"]
