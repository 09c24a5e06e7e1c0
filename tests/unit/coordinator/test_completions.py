"""Completion tracking by sequence number: tickets, the watermark, lost items."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from market_data_store.coordinator import (
    BoundedQueue,
    CircuitBreaker,
    DeadLetterQueue,
    FeedbackBus,
    QueueFullError,
    RetryPolicy,
    Ticket,
    WriteCoordinator,
)
from market_data_store.coordinator.completions import Completions
from market_data_store.coordinator.stats import DrainMeter
from tests.support.waits import until

from .sinks import OutageSink, PoisonSink, RecordingSink


async def test_watermark_advances_over_out_of_order_ranges() -> None:
    c = Completions()
    early, late = Ticket(), Ticket()
    c.track(early, 0, 10)
    c.track(late, 10, 25)
    c.finish(10, 25)  # a later batch finishes first
    assert c.done_until == 0
    assert not await c.wait(late, 0.01)  # its items are done, but wait: watermark rules
    c.finish(0, 10)
    assert c.done_until == 25
    assert await c.wait(early, 0.01)
    assert await c.wait(late, 0.01)


async def test_lost_items_are_counted_per_ticket() -> None:
    c = Completions()
    a, b = Ticket(), Ticket()
    c.track(a, 0, 4)
    c.track(b, 4, 8)
    c.lost(3, 6)  # straddles both
    c.finish(0, 8)
    assert (a.written, a.lost) == (3, 1)
    assert (b.written, b.lost) == (2, 2)


async def test_ticket_for_already_finished_range_is_done() -> None:
    c = Completions()
    c.finish(0, 5)
    t = Ticket()
    c.track(t, 2, 4)
    assert await c.wait(t)


async def test_submit_all_ticket_reports_written_and_dead_lettered(tmp_path: Path) -> None:
    sink = PoisonSink(poison={7})
    async with WriteCoordinator[int](
        sink=sink,
        capacity=100,
        workers=2,
        batch_size=4,
        flush_interval=0.01,
        dead_letter_queue=DeadLetterQueue[int](tmp_path / "dlq.ndjson"),
        bus=FeedbackBus(),
    ) as coord:
        first = await coord.submit_all(list(range(10)))
        second = await coord.submit_all(list(range(10, 15)))
        assert await coord.wait_finished(first, 5)
        assert await coord.wait_finished(second, 5)
    assert (first.count, first.written, first.lost) == (10, 9, 1)
    assert (second.written, second.lost) == (5, 0)
    assert (first.start, first.end, second.start, second.end) == (0, 10, 10, 15)


async def test_wait_finished_times_out_during_an_outage() -> None:
    sink = OutageSink()
    sink.down.set()
    async with WriteCoordinator[int](
        sink=sink,
        capacity=100,
        workers=1,
        flush_interval=0.01,
        retry_policy=RetryPolicy(initial_backoff_ms=1, max_backoff_ms=5),
        circuit_breaker=CircuitBreaker(failure_threshold=2, half_open_after_sec=0.01),
        bus=FeedbackBus(),
    ) as coord:
        ticket = await coord.submit_all([1, 2, 3])
        assert not await coord.wait_finished(ticket, 0.05)
        sink.down.clear()
        assert await coord.wait_finished(ticket, 5)
    assert ticket.written == 3


async def test_submit_all_is_all_or_nothing_under_error_strategy() -> None:
    coord = WriteCoordinator[int](
        sink=RecordingSink(), capacity=5, overflow_strategy="error", bus=FeedbackBus()
    )
    await coord.submit_all([1, 2, 3])
    with pytest.raises(QueueFullError):
        await coord.submit_all([4, 5, 6])
    assert coord.queue.size == 3
    assert coord.stats.submitted == 3


async def test_evicted_items_are_dead_lettered_and_reported_lost(tmp_path: Path) -> None:
    dlq = DeadLetterQueue[int](tmp_path / "dlq.ndjson")
    coord = WriteCoordinator[int](
        sink=RecordingSink(),
        capacity=3,
        overflow_strategy="drop_oldest",
        dead_letter_queue=dlq,
        bus=FeedbackBus(),
    )
    old = await coord.submit_all([1, 2])
    await coord.submit_all([3, 4, 5])  # evicts 1 and 2
    assert (old.lost, old.written) == (2, 0)
    assert await coord.wait_finished(old, 0.01)
    await until(dlq.count, what="the evicted items saved (in the background)")
    (record,) = await dlq.replay()
    assert record.items == [1, 2]
    assert record.error == "evicted by drop_oldest overflow"
    assert coord.stats.dead_lettered == 2


async def test_forced_stop_finishes_tickets_as_lost(tmp_path: Path) -> None:
    coord = WriteCoordinator[int](
        sink=RecordingSink(delay=10),
        capacity=10,
        workers=1,
        flush_interval=0,
        dead_letter_queue=DeadLetterQueue[int](tmp_path / "dlq.ndjson"),
        bus=FeedbackBus(),
    )
    await coord.start()
    ticket = await coord.submit_all([1, 2, 3])
    await until(lambda: coord.queue.size == 0, what="the batch taken by the worker")
    await coord.stop(timeout=0.02)
    assert await coord.wait_finished(ticket, 0.01)
    assert ticket.lost == 3


async def test_retry_after_follows_depth_and_drain_rate() -> None:
    coord = WriteCoordinator[int](sink=RecordingSink(), capacity=1000, bus=FeedbackBus())
    assert coord.retry_after() == 1  # empty queue
    await coord.submit_many(list(range(600)))
    assert coord.retry_after() == 5  # nothing drained yet: a fixed guess
    coord.stats.drain.rate = lambda: 100.0  # type: ignore[method-assign]  # as if measured
    assert coord.retry_after() == 6  # 600 queued / 100 per s
    for _ in range(5):
        await coord.breaker.on_failure()
    assert coord.retry_after() >= 59  # open breaker: at least until it half-opens


def test_drain_meter_measures_a_rate() -> None:
    meter = DrainMeter(window=10)
    assert meter.rate() == 0.0
    meter.record(0)
    meter._samples[0] = (meter._samples[0][0] - 2.0, 0)
    meter.record(500)
    assert 200 < meter.rate() < 300


async def test_forced_stop_during_bisection_dead_letters_only_the_unfinished_rest(
    tmp_path: Path,
) -> None:
    """Poison 0 is isolated and dead-lettered; the stop then cancels the write of
    1..3: only those are rescued, and the ticket counts each item once."""

    class PoisonThenHang:
        async def write(self, batch: Sequence[int]) -> None:
            if 0 in batch:
                raise ValueError("poison")
            await asyncio.sleep(10)

    dlq = DeadLetterQueue[int](tmp_path / "dlq.ndjson")
    coord = WriteCoordinator[int](
        sink=PoisonThenHang(),
        capacity=10,
        workers=1,
        batch_size=4,
        flush_interval=0,
        dead_letter_queue=dlq,
        bus=FeedbackBus(),
    )
    await coord.start()
    ticket = await coord.submit_all([0, 1, 2, 3])
    await until(dlq.count, what="the poison dead-lettered")
    await coord.stop(drain=True, timeout=0.2)
    assert await coord.wait_finished(ticket, 0.01)
    assert (ticket.count, ticket.lost, ticket.written) == (4, 4, 0)
    assert sorted(i for r in await dlq.records() for i in r.items) == [0, 1, 2, 3]


async def test_consumer_cancelled_while_announcing_recovery_keeps_numbering_intact() -> None:
    gate, blocked = asyncio.Event(), asyncio.Event()

    async def slow_on_low() -> None:
        blocked.set()
        await gate.wait()

    q = BoundedQueue[int](
        10, high_watermark=8, low_watermark=5, on_low=slow_on_low, bus=FeedbackBus()
    )
    await q.put_many(list(range(10)))
    a = asyncio.create_task(q.take_batch(5, 0))  # recovers the level: blocks in on_low
    await until(blocked.is_set, what="A blocked in on_low")
    start_b, items_b = await q.take_batch(3, 0)
    assert (start_b, items_b) == (0, [0, 1, 2])  # A took nothing yet
    a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await a
    start, rest = q.take_all()
    assert (start, rest) == (3, [3, 4, 5, 6, 7, 8, 9])
    q.finish(start_b, 3)
    q.finish(start, len(rest))
    assert q.completions.done_until == 10
    assert q.free() == 10
