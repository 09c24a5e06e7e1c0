"""A subscriber's buffer, filled through the fan-out: filters, conflation, its bound,
what it gets on connect, keepalives."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

from market_data_store.feedback import KEEPALIVE, FeedbackFanout
from market_data_store.feedback.subscriber import CHUNK_BYTES, MAX_PENDING_BYTES

from .frames import HARD, OK, SOFT, drain, event


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


async def test_next_chunk_joins_what_is_buffered_and_keepalives_only_when_idle() -> None:
    fanout = FeedbackFanout(heartbeat_sec=0.2)
    sub, _ = fanout.subscribe()
    a = fanout.publish(event("a", SOFT))
    b = fanout.publish(event("a", HARD))
    assert await sub.next_chunk() == a.wire + b.wire
    assert fanout.stats.delivered == 2
    waiting = asyncio.create_task(sub.next_chunk())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    c = fanout.publish(event("a", OK))  # data before the keepalive is due: data
    assert await asyncio.wait_for(waiting, 1) == c.wire
    assert await asyncio.wait_for(sub.next_chunk(), 1) == KEEPALIVE  # a whole interval idle
    sub.close("test")
    assert await sub.next_chunk() is None


async def test_the_keepalive_is_due_an_interval_after_the_last_write() -> None:
    loop = asyncio.get_running_loop()
    sub, _ = FeedbackFanout(heartbeat_sec=0.3).subscribe()
    written = loop.time()
    await asyncio.sleep(0.2)  # the stream was busy sending since ``written``
    assert await asyncio.wait_for(sub.next_chunk(written), 1) == KEEPALIVE
    assert loop.time() - written < 0.3 + 0.1  # not a whole interval after the call
    late = loop.time() - 1.0  # a send that took longer than the interval
    assert await asyncio.wait_for(sub.next_chunk(late), 0.1) == KEEPALIVE


def large_snapshot(fanout: FeedbackFanout, coordinators: int, reason_chars: int) -> int:
    """``coordinators`` remote coordinators, each with a reason this long: the snapshot's
    size in bytes."""
    for i in range(coordinators):
        assert fanout.publish_remote(event(f"r{i}/bars", HARD, 80, reason="r" * reason_chars))
    return sum(len(f.wire) for f in fanout.snapshot())


def test_streams_share_the_snapshot_and_take_it_in_bounded_chunks() -> None:
    """Issue 18: the snapshot (every coordinator's latest event, remote ones included)
    was joined per stream, and sat whole in never-reading streams' buffers."""
    fanout = FeedbackFanout()
    size = large_snapshot(fanout, 300, 1000)
    assert size > 5 * CHUNK_BYTES
    a, _ = fanout.subscribe()
    b, _ = fanout.subscribe()
    assert a._initial is b._initial is fanout.snapshot()  # one object for every stream
    chunks = []
    while chunk := a._take():
        assert len(chunk) <= CHUNK_BYTES
        chunks.append(chunk)
    assert b"".join(chunks) == b"".join(f.wire for f in fanout.snapshot())
    # one frame alone is sent as the fan-out's own bytes, never a copy
    frame = fanout.publish(event("h/bars", SOFT))
    assert a._take() is frame.wire


def test_a_never_reading_stream_costs_little_however_large_the_snapshot() -> None:
    """Hundreds of streams over a 1.1 MB snapshot, each holding the chunk it is stuck
    sending (a client that reads nothing): their memory does not grow with it."""
    fanout = FeedbackFanout()
    size = large_snapshot(fanout, 1000, 1000)
    assert size > 1_000_000
    streams = 200
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = []
        for _ in range(streams):
            sub, _ = fanout.subscribe()
            held.append((sub, sub._take()))  # the stream's first send: blocked forever
        per_stream = (tracemalloc.get_traced_memory()[0] - before) / streams
    finally:
        tracemalloc.stop()
    assert per_stream < CHUNK_BYTES + 16 * 1024, per_stream  # not the snapshot's 1.1 MB
    assert all(len(chunk) <= CHUNK_BYTES for _, chunk in held)


def test_pending_frames_are_bounded_by_bytes_too() -> None:
    fanout = FeedbackFanout(subscriber_queue=10_000)
    sub, _ = fanout.subscribe()
    reason = "r" * 3000
    for _ in range(1000):  # 3 MB of one coordinator: conflated to its latest
        fanout.publish(event("a", SOFT, reason=reason))
    assert not sub.closed
    assert sub._pending_bytes <= MAX_PENDING_BYTES
    assert [c for _, c, _ in drain(sub)] == ["a"]
    assert sub._pending_bytes == 0
    for i in range(400):  # 1.2 MB of distinct coordinators, far below 10,000 frames
        fanout.publish(event(f"c{i}", SOFT, reason=reason))
    assert sub.closed
    assert sub.close_reason == "slow"
