"""Batch reads: flush by size or by time; join and task_done accounting."""

from __future__ import annotations

import asyncio
import time

import pytest

from market_data_store.coordinator import BoundedQueue, FeedbackBus


async def test_get_batch_returns_at_once_when_full_batch_is_available(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](100, bus=bus)
    await q.put_many(list(range(12)))
    assert await q.get_batch(5, 10.0) == [0, 1, 2, 3, 4]
    assert await q.get_batch(5, 10.0) == [5, 6, 7, 8, 9]


async def test_get_batch_flushes_partial_batch_after_max_wait(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](100, bus=bus)
    await q.put_many([1, 2])
    started = time.monotonic()
    assert await q.get_batch(50, 0.05) == [1, 2]
    assert time.monotonic() - started >= 0.04


async def test_get_batch_wakes_when_the_batch_fills(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](100, bus=bus)
    await q.put(0)
    reader = asyncio.create_task(q.get_batch(3, 30.0))
    await asyncio.sleep(0.01)
    assert not reader.done()
    await q.put_many([1, 2])
    assert await asyncio.wait_for(reader, 1) == [0, 1, 2]


async def test_get_batch_waits_for_the_first_item(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](100, bus=bus)
    reader = asyncio.create_task(q.get_batch(10, 0))
    await asyncio.sleep(0.01)
    assert not reader.done()
    await q.put(7)
    assert await asyncio.wait_for(reader, 1) == [7]


async def test_get_timeout(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](10, bus=bus)
    with pytest.raises(TimeoutError):
        await q.get(timeout=0.01)
    await q.put(1)
    assert await q.get(timeout=0.01) == 1


async def test_get_batch_on_closed_queue_drains_then_returns_empty(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](10, bus=bus)
    await q.put_many([1, 2])
    q.close()
    assert await q.get_batch(5, 10.0) == [1, 2]  # closed: no waiting for a full batch
    assert await q.get_batch(5, 10.0) == []


async def test_close_wakes_idle_readers(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](10, bus=bus)
    reader = asyncio.create_task(q.get_batch(5, 1.0))
    await asyncio.sleep(0.01)
    q.close()
    assert await asyncio.wait_for(reader, 1) == []


async def test_join_waits_for_task_done(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](10, bus=bus)
    await q.join()  # nothing pending: returns at once
    await q.put_many([1, 2, 3])
    joined = asyncio.create_task(q.join())
    batch = await q.get_batch(3, 0)
    await asyncio.sleep(0.01)
    assert not joined.done()  # taken is not finished
    q.task_done(len(batch))
    await asyncio.wait_for(joined, 1)
    assert q.unfinished == 0


async def test_take_all_empties_queue_and_frees_waiting_producers(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](2, bus=bus)
    await q.put_many([1, 2])
    waiting = asyncio.create_task(q.put(3))
    await asyncio.sleep(0.01)
    assert q.take_all() == (0, [1, 2])
    await asyncio.wait_for(waiting, 1)
    assert q.take_all() == (2, [3])
    assert q.unfinished == 3  # taken, not finished
    q.finish(0, 3)
    assert q.unfinished == 0


async def test_cancelled_reader_loses_nothing(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](10, bus=bus)
    await q.put(1)
    reader = asyncio.create_task(q.get_batch(5, 30.0))
    await asyncio.sleep(0.01)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert await q.get_batch(5, 0) == [1]


async def test_reader_cancelled_while_announcing_recovery_puts_items_back() -> None:
    gate = asyncio.Event()

    async def slow_subscriber(event: object) -> None:
        await gate.wait()

    bus = FeedbackBus()
    q = BoundedQueue[int](10, 8, 4, bus=bus)
    await q.put_many(list(range(8)))
    bus.subscribe(slow_subscriber)
    reader = asyncio.create_task(q.get_batch(8, 0))  # falls to 0: publishes "ok"
    await asyncio.sleep(0.01)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert q.size == 8
    bus.unsubscribe(slow_subscriber)
    assert await q.get_batch(8, 0) == list(range(8))


async def test_a_reader_learns_how_long_the_oldest_item_waited(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](100, bus=bus)
    seen: list[tuple[int, float]] = []
    q.on_take = lambda found, waited: seen.append((found, waited))
    reader = asyncio.create_task(q.get_batch(10, 0))
    await asyncio.sleep(0.01)
    await q.put_many([1, 2, 3])
    assert await asyncio.wait_for(reader, 1) == [1, 2, 3]
    assert seen == [(3, 0.0)]  # the reader was there first: no queue stood

    await q.put_many([4, 5])
    await asyncio.sleep(0.05)
    await q.put(6)
    assert await q.get_batch(2, 0) == [4, 5]
    assert seen[-1][0] == 3
    assert seen[-1][1] >= 0.04  # dated by its oldest item, not by the newest
    await asyncio.sleep(0.02)
    assert await q.get_batch(2, 0) == [6]
    assert 0.02 <= seen[-1][1] < seen[-2][1] + 0.02  # the next oldest, item 6
    assert q.waited() == 0.0  # empty


async def test_arrival_dates_are_forgotten_with_their_items(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](10, bus=bus, overflow_strategy="drop_oldest")
    for i in range(40):
        await q.put_many([i, i])  # each put evicts two: nothing is ever taken
        await asyncio.sleep(0.002)  # dated apart
    # the dates of evicted items go with the next put: at most one per item queued, plus it
    assert len(q._arrivals) <= 6
