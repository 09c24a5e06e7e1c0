"""BoundedQueue: watermark signals, callbacks and feedback events."""

from __future__ import annotations

import asyncio

import pytest

from market_data_store.coordinator import BoundedQueue, FeedbackBus, FeedbackEvent
from market_data_store.coordinator.events import BackpressureLevel
from tests.support.feedback import Recorder


async def test_watermark_signals_fire_once_and_recover(bus: FeedbackBus) -> None:
    high_called = 0
    low_called = 0

    async def on_high() -> None:
        nonlocal high_called
        high_called += 1

    async def on_low() -> None:
        nonlocal low_called
        low_called += 1

    q = BoundedQueue[int](
        capacity=10, high_watermark=8, low_watermark=4, on_high=on_high, on_low=on_low, bus=bus
    )
    for i in range(8):
        await q.put(i)
    assert q.size == 8
    assert high_called == 1  # before put returned: no sleep needed

    for _ in range(5):  # 8 -> 3
        await q.get()
    assert low_called == 1

    for i in range(4):  # 3 -> 7
        await q.put(100 + i)
    assert high_called == 1  # below high again: no re-fire yet

    await q.put(999)  # 8: re-armed by the recovery, fires again
    assert high_called == 2


async def test_feedback_published_before_put_returns(bus: FeedbackBus, recorder: Recorder) -> None:
    q = BoundedQueue[int](10, 8, 4, coord_id="q1", bus=bus)
    for i in range(5):
        await q.put(i)
    assert recorder.transitions() == [("soft", 5, None)]
    for i in range(3):
        await q.put(i)
    assert recorder.transitions() == [("soft", 5, None), ("hard", 8, None)]
    while q.size > 4:
        await q.get()
    assert recorder.transitions()[-1] == ("ok", 4, "queue_recovered")
    event = recorder.events[-1]
    assert isinstance(event, FeedbackEvent)
    assert event.coordinator_id == "q1"
    assert event.capacity == 10
    assert event.source == "store"
    assert event.utilization == pytest.approx(0.4)


async def test_put_does_not_yield_while_there_is_room(bus: FeedbackBus) -> None:
    """A competing task never runs while a producer fills free room."""
    q = BoundedQueue[int](100, bus=bus)
    ran = False

    async def other() -> None:
        nonlocal ran
        ran = True

    task = asyncio.create_task(other())
    for i in range(50):  # stays below every watermark: no transitions to publish
        await q.put(i)
    await q.put_many(list(range(20)))
    assert not ran
    await task
    assert ran


async def test_level_property_follows_transitions(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](10, 8, 4, bus=bus)
    assert q.level is BackpressureLevel.ok
    await q.put_many(list(range(6)))
    assert q.level is BackpressureLevel.soft
    await q.put_many([1, 2])
    assert q.level is BackpressureLevel.hard
    await q.get_batch(8, 0)
    assert q.level is BackpressureLevel.ok
    assert q.feedback_event().level is BackpressureLevel.ok


async def test_put_many_emits_the_same_transitions_as_put(bus: FeedbackBus) -> None:
    singles, bulk = Recorder(), Recorder()
    bus_a, bus_b = FeedbackBus(), FeedbackBus()
    bus_a.subscribe(singles)
    bus_b.subscribe(bulk)
    qa = BoundedQueue[int](100, 80, 40, bus=bus_a)
    qb = BoundedQueue[int](100, 80, 40, bus=bus_b)
    for chunk in ([1] * 30, [2] * 30, [3] * 30):
        for item in chunk:
            await qa.put(item)
        await qb.put_many(chunk)
    assert singles.transitions() == bulk.transitions() == [("soft", 41, None), ("hard", 80, None)]


async def test_default_watermarks_are_80_and_50_percent(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](1000, bus=bus)
    assert (q.high_watermark, q.low_watermark) == (800, 500)
    tiny = BoundedQueue[int](1, bus=bus)
    assert (tiny.high_watermark, tiny.low_watermark) == (1, 0)


async def test_uses_process_bus_by_default(fresh_bus: FeedbackBus, recorder: Recorder) -> None:
    fresh_bus.subscribe(recorder)
    q = BoundedQueue[int](4, 2, 1, coord_id="default-bus")
    await q.put_many([1, 2])
    assert recorder.levels() == ["hard"]


async def test_failing_callback_does_not_break_put(bus: FeedbackBus, recorder: Recorder) -> None:
    async def boom() -> None:
        raise RuntimeError("callback bug")

    q = BoundedQueue[int](4, 2, 1, on_high=boom, bus=bus)
    await q.put_many([1, 2])
    assert q.size == 2
    assert recorder.levels() == ["hard"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"capacity": 0}, "capacity"),
        ({"capacity": 10, "overflow_strategy": "nope"}, "overflow_strategy"),
        ({"capacity": 10, "high_watermark": 11}, "high_watermark"),
        ({"capacity": 10, "high_watermark": 5, "low_watermark": 5}, "watermarks"),
    ],
)
async def test_bad_arguments_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BoundedQueue[int](**kwargs)  # type: ignore[arg-type]
