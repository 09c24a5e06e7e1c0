"""Credits: the window follows the queue found at each take, split among producers;
workers write at once while producers wait for commits."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import pytest

from market_data_store.coordinator import Credits, FeedbackBus, WriteCoordinator
from market_data_store.coordinator.credits import CUT, MIN_CREDIT, RECOUNT_AFTER, RELAX
from tests.support.waits import until

from .sinks import RecordingSink


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def credits(clock: Clock, **kwargs: int) -> Credits:
    options = {
        "capacity": 2000,
        "high_watermark": 1600,
        "low_watermark": 1000,
        "batch_size": 100,
        "workers": 1,
    }
    options.update(kwargs)
    return Credits(clock=clock, **options)


def takes(
    c: Credits,
    clock: Clock,
    found: int,
    *,
    waited: float | None = None,
    times: int = 10,
    every: float = 0.01,
    drain: float = 20_000.0,
) -> None:
    """``times`` batches taken ``every`` s apart, each finding ``found`` items, while
    producers use their whole window."""
    for _ in range(times):
        clock.now += every
        c.observe(found, int(c.total), drain, waited=waited)


def test_targets_sit_under_the_low_watermark_and_start_the_window_inside_them() -> None:
    c = credits(Clock())
    assert (c.low_target, c.high_target) == (100, 800)
    assert c.ceiling == 1699  # with a batch in hand, the queue stays under the high watermark
    assert c.floor == 100
    assert c.floor <= c.total <= c.ceiling


def test_each_worker_counts_as_holding_at_most_half_the_queue() -> None:
    c = credits(Clock(), batch_size=5000, workers=4)  # batches larger than the queue
    assert c.ceiling == 1599 + 4 * 1000


def test_a_take_that_finds_the_queue_hard_cuts_a_bound_that_relaxes() -> None:
    clock = Clock()
    c = credits(clock, workers=4)
    c.observe(0, 0, 0.0)
    while c.total < c.ceiling:  # producers use their window; no queue stands
        takes(c, clock, 0, waited=0.0, times=1)
    before = c.total
    takes(c, clock, 1700, waited=0.0, times=1)  # a burst: hard
    assert c.bound == pytest.approx(before * CUT)
    assert c.total <= c.bound
    cut = c.bound
    takes(c, clock, 1650, waited=0.0, times=1)  # the same burst: one cut
    assert c.bound == cut
    takes(c, clock, 0, waited=0.0, every=0.1)  # one second without a hard take
    assert c.bound == pytest.approx(min(c.ceiling, cut * math.exp(RELAX * 1.0)), rel=0.02)
    assert c.total == pytest.approx(c.bound)


def test_an_empty_queue_grows_the_window_a_full_one_shrinks_it() -> None:
    clock = Clock()
    c = credits(clock)
    c.observe(0, 0, 0.0)  # the first take only starts the clock
    start = c.total
    takes(c, clock, 0)  # producers use their window; queue empty
    grown = c.total
    assert grown > start
    takes(c, clock, 1900)
    assert c.total < grown


def test_a_request_taken_as_it_arrives_is_not_a_standing_queue() -> None:
    clock = Clock()
    c = credits(clock)
    c.observe(0, 0, 0.0)
    start = c.total
    # a whole request (more than the target) found, but it arrived a moment ago: the
    # reader was waiting for it, so the window is what keeps the store short
    takes(c, clock, 900, waited=0.001)
    grown = c.total
    assert grown > start
    takes(c, clock, 900, waited=0.2)  # it sat there: a queue
    assert c.total < grown
    shrunk = c.total
    # above the low watermark (soft) everything found counts, however fresh
    takes(c, clock, 1200, waited=0.0)
    assert c.total < shrunk


def test_the_window_does_not_grow_while_producers_leave_it_unused() -> None:
    clock = Clock()
    c = credits(clock)
    c.observe(0, 0, 0.0)
    start = c.total
    for _ in range(50):
        clock.now += 0.05
        c.observe(0, 0, 100.0)  # nothing outstanding: demand, not the window, is short
    assert c.total == start


def test_the_window_stays_within_floor_and_ceiling() -> None:
    clock = Clock()
    c = credits(clock)
    c.observe(0, 0, 0.0)
    for _ in range(500):
        clock.now += 0.25
        c.observe(0, 10**6, 10**6)
    assert c.total == c.ceiling
    for _ in range(500):
        clock.now += 0.25
        c.observe(10**6, int(c.total), 10**6)
    assert c.total == c.floor


def test_the_target_follows_the_drain_and_the_producers() -> None:
    clock = Clock()
    c = credits(
        clock, capacity=10_000, high_watermark=8000, low_watermark=5000, batch_size=500, workers=4
    )
    assert c.target(0.0) == 500  # at least a batch
    assert c.target(40_000.0) == 2000  # 50 ms of the drain
    assert c.target(10**6) == 4000  # at most 80 % of the low watermark
    for i in range(12):
        c.enter(f"p{i}")
    assert c.target(0.0) == 3000  # 250 per producer


def test_active_producers_share_the_window_evenly() -> None:
    clock = Clock()
    c = credits(clock)
    c.total = 1200.0
    assert c.per_producer() == 1200  # nobody seen: one share
    for name in ("a", "b", "c"):
        c.enter(name)
        c.leave(name)
    assert c.per_producer() == 400
    clock.now += 1.0  # b and c went quiet; a still has a request inside
    c.enter("a")
    assert c.active() == 1
    assert c.per_producer() == 1200
    c.total = 10.0
    assert c.per_producer() == MIN_CREDIT


def test_producers_beyond_the_bound_are_not_remembered() -> None:
    clock = Clock()
    c = credits(clock)
    c.max_producers = 3
    for name in ("a", "b", "c", "d"):
        c.enter(name)
    assert c.active() == 3
    clock.now += 1.0
    for name in ("a", "b", "c"):
        c.leave(name)
    clock.now += 1.0
    c.enter("d")  # the idle ones are forgotten to make room
    assert c.active() == 1


class GatedSink(RecordingSink):
    """Holds each write until ``release`` is set (then keeps it set)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.started = 0

    async def write(self, batch: Sequence[int]) -> None:
        self.started += 1
        await self.release.wait()
        await super().write(batch)


async def test_a_short_batch_is_written_at_once_while_its_producer_waits(
    bus: FeedbackBus,
) -> None:
    sink = RecordingSink()
    async with WriteCoordinator[int](
        sink=sink, capacity=1000, workers=1, batch_size=500, flush_interval=3600, bus=bus
    ) as coordinator:
        quiet = await coordinator.submit_all(list(range(10)))
        await asyncio.sleep(0.05)
        assert sink.batches == []  # nobody waits: the worker waits for a fuller batch
        waited = await coordinator.submit_all(list(range(10, 20)))
        assert await coordinator.wait_finished(waited, timeout=30)
        assert quiet.finished
        assert sink.batches == [list(range(20))]


async def test_a_second_worker_waits_for_enough_while_another_writes(bus: FeedbackBus) -> None:
    sink = GatedSink()
    async with WriteCoordinator[int](
        sink=sink, capacity=1000, workers=2, batch_size=500, flush_interval=3600, bus=bus
    ) as coordinator:
        enough = max(1, coordinator.credits.low_target // 2)
        first = await coordinator.submit_all([0])
        waiting = asyncio.create_task(coordinator.wait_finished(first, timeout=60))
        await until(lambda: sink.started == 1)
        second = await coordinator.submit_all(list(range(1, 3)))
        also = asyncio.create_task(coordinator.wait_finished(second, timeout=60))
        await asyncio.sleep(0.05)
        assert sink.started == 1  # two items, another write under way: wait for it
        third = await coordinator.submit_all(list(range(3, 3 + enough)))
        await until(lambda: sink.started == 2)  # enough for a write of its own
        sink.release.set()
        assert await coordinator.wait_finished(third, timeout=30)
        assert await waiting
        assert await also
        assert sorted(sink.items) == list(range(3 + enough))


async def test_events_carry_the_drain_rate_and_the_credit(bus: FeedbackBus) -> None:
    async with WriteCoordinator[int](
        sink=RecordingSink(), capacity=100, workers=1, batch_size=10, bus=bus
    ) as coordinator:
        ticket = await coordinator.submit_all(list(range(50)))
        assert await coordinator.wait_finished(ticket, timeout=30)
        event = coordinator.feedback_event()
    assert event.credit is not None
    assert event.credit >= MIN_CREDIT
    assert event.drain_rate is not None
    assert event.drain_rate >= 0


def test_producers_that_ignore_the_credit_do_not_shrink_it() -> None:
    clock = Clock()
    c = credits(clock)
    c.observe(0, 0, 0.0)
    start = c.total
    for _ in range(20):
        clock.now += 0.05
        c.observe(1900, 1900, 20_000.0)  # a full queue, far more than the window allows
    assert c.total == start


def test_the_count_of_producers_is_reused_briefly_but_a_new_one_counts_at_once() -> None:
    clock = Clock()
    c = credits(clock)
    for name in ("a", "b"):
        c.enter(name)
        c.leave(name)
    assert c.active() == 2
    clock.now += c.idle_after + 0.01
    assert c.active() == 1  # both went quiet
    c.enter("a")
    c.enter("b")  # known ones back: the count of a moment ago stands...
    assert c.active() == 1
    c.enter("c")  # ...a new one is counted at once
    assert c.active() == 3
    c.leave("c")
    clock.now += RECOUNT_AFTER
    assert c.active() == 3  # a and b are inside, c was seen just now
