"""Overflow strategies: block (with timeout), drop_oldest, error; all-or-nothing put_many."""

from __future__ import annotations

import asyncio

import pytest

from market_data_store.coordinator import (
    BoundedQueue,
    FeedbackBus,
    QueueClosedError,
    QueueFullError,
)


async def drain(q: BoundedQueue[int]) -> list[int]:
    return await q.get_batch(q.capacity, 0) if q.size else []


async def test_drop_oldest_keeps_fifo_and_reports_drops(bus: FeedbackBus) -> None:
    dropped: list[int] = []

    async def on_drop(item: int) -> None:
        dropped.append(item)

    q = BoundedQueue[int](5, overflow_strategy="drop_oldest", drop_callback=on_drop, bus=bus)
    for i in range(5):
        await q.put(i)
    await q.put(99)
    assert q.size == 5
    assert dropped == [0]
    assert q.dropped == 1
    assert [await q.get() for _ in range(5)] == [1, 2, 3, 4, 99]


async def test_drop_oldest_put_many_larger_than_capacity(bus: FeedbackBus) -> None:
    dropped: list[int] = []

    async def on_drop(item: int) -> None:
        dropped.append(item)

    q = BoundedQueue[int](4, overflow_strategy="drop_oldest", drop_callback=on_drop, bus=bus)
    await q.put_many([1, 2])
    await q.put_many([10, 11, 12, 13, 14, 15])
    # Exactly what six single puts would have done: the oldest six are gone.
    assert dropped == [1, 2, 10, 11]
    assert await drain(q) == [12, 13, 14, 15]
    assert q.unfinished == 4  # evicted items are not waited for by join()


async def test_error_strategy_raises_when_full(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](3, overflow_strategy="error", bus=bus)
    for i in range(3):
        await q.put(i)
    with pytest.raises(QueueFullError):
        await q.put(999)
    assert q.size == 3


async def test_error_strategy_put_many_is_all_or_nothing(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](5, overflow_strategy="error", bus=bus)
    await q.put_many([1, 2, 3])
    with pytest.raises(QueueFullError):
        await q.put_many([4, 5, 6])
    assert await drain(q) == [1, 2, 3]


async def test_block_waits_for_room(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](2, bus=bus)
    await q.put_many([1, 2])
    blocked = asyncio.create_task(q.put(3))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    assert await q.get() == 1
    await asyncio.wait_for(blocked, 1)
    assert await drain(q) == [2, 3]


async def test_block_times_out_with_queue_full_error(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](2, bus=bus)
    await q.put_many([1, 2])
    with pytest.raises(QueueFullError):
        await q.put(3, timeout=0.02)
    with pytest.raises(QueueFullError):
        await q.put_many([3, 4], timeout=0.02)
    assert await drain(q) == [1, 2]


async def test_block_put_many_enqueues_whole_request_at_once(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](4, bus=bus)
    await q.put_many([1, 2, 3])
    waiting = asyncio.create_task(q.put_many([4, 5, 6]))
    await asyncio.sleep(0.01)
    assert q.size == 3  # one slot is free, but the request needs three
    await q.get_batch(2, 0)
    await asyncio.wait_for(waiting, 1)
    assert await drain(q) == [3, 4, 5, 6]


async def test_block_is_fifo_among_waiting_producers(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](2, bus=bus)
    await q.put_many([0, 0])
    big = asyncio.create_task(q.put_many([1, 1]))
    await asyncio.sleep(0)
    small = asyncio.create_task(q.put(2))  # must not overtake the earlier, larger request
    await asyncio.sleep(0.01)
    await q.get()
    await asyncio.sleep(0.01)
    assert not big.done()
    assert not small.done()
    await q.get()
    await asyncio.wait_for(big, 1)
    await q.get_batch(2, 0)
    await asyncio.wait_for(small, 1)
    assert await drain(q) == [2]


async def test_request_larger_than_capacity_waits_for_empty_queue_then_enters_whole(
    bus: FeedbackBus,
) -> None:
    q = BoundedQueue[int](8, bus=bus)
    await q.put_many([0, 0, 0])
    big = asyncio.create_task(q.put_many(list(range(1, 31))))
    await asyncio.sleep(0.01)
    assert q.size == 3  # never half a request
    small = asyncio.create_task(q.put(99))  # queued behind the big one (FIFO)
    await asyncio.sleep(0.01)
    assert await q.get_batch(3, 0) == [0, 0, 0]
    await asyncio.wait_for(big, 1)
    assert q.size == 30  # whole, beyond capacity: it was the only way in
    assert q.free() < 0
    assert not small.done()
    assert await q.get_batch(30, 0) == list(range(1, 31))
    await asyncio.wait_for(small, 1)


async def test_oversized_request_times_out_with_nothing_enqueued(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](4, bus=bus)
    await q.put(0)
    with pytest.raises(QueueFullError):
        await q.put_many(list(range(10)), timeout=0.02)
    assert await drain(q) == [0]
    await q.put_many(list(range(10)), timeout=0.02)  # empty queue: it goes in
    assert q.size == 10


async def test_cancelled_waiting_producer_leaves_no_trace(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](2, bus=bus)
    await q.put_many([1, 2])
    waiting = asyncio.create_task(q.put_many([3, 4]))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await q.get_batch(2, 0)
    assert q.free() == 2
    await q.put(5)
    assert await drain(q) == [5]


async def test_close_fails_waiting_producers_and_refuses_new_items(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](1, bus=bus)
    await q.put(1)
    waiting = asyncio.create_task(q.put(2))
    await asyncio.sleep(0.01)
    q.close()
    with pytest.raises(QueueClosedError):
        await waiting
    with pytest.raises(QueueClosedError):
        await q.put(3)
    with pytest.raises(QueueClosedError):
        await q.put_many([3])
    assert await q.get() == 1  # what was accepted is still handed out
    with pytest.raises(QueueClosedError):
        await q.get()
