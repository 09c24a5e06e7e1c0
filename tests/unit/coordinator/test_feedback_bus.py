"""FeedbackBus: fan-out, failure isolation, rate-limited failure logging."""

from __future__ import annotations

import logging

import pytest

from market_data_store.coordinator import (
    BackpressureLevel,
    FeedbackBus,
    FeedbackEvent,
    feedback_bus,
)
from tests.support.feedback import Recorder


def event(level: BackpressureLevel = BackpressureLevel.soft) -> FeedbackEvent:
    return FeedbackEvent.create("c1", 6, 10, level)


async def test_publish_reaches_every_subscriber_in_order() -> None:
    bus = FeedbackBus()
    order: list[str] = []

    async def first(e: FeedbackEvent) -> None:
        order.append("first")

    async def second(e: FeedbackEvent) -> None:
        order.append("second")

    bus.subscribe(first)
    bus.subscribe(second)
    bus.subscribe(first)  # duplicate: ignored
    assert bus.subscriber_count == 2
    await bus.publish(event())
    assert order == ["first", "second"]


async def test_unsubscribe_is_safe_to_repeat(recorder: Recorder) -> None:
    bus = FeedbackBus()
    bus.subscribe(recorder)
    bus.unsubscribe(recorder)
    bus.unsubscribe(recorder)
    await bus.publish(event())
    assert recorder.events == []
    assert bus.subscriber_count == 0


async def test_failing_subscriber_is_isolated_and_logged_rate_limited(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    bus = FeedbackBus()

    async def broken(e: FeedbackEvent) -> None:
        raise RuntimeError("subscriber down")

    bus.subscribe(broken)
    bus.subscribe(recorder)
    caplog.set_level(logging.WARNING)
    for _ in range(500):
        await bus.publish(event())
    assert len(recorder.events) == 500
    failures = [r for r in caplog.records if "feedback subscriber" in r.getMessage()]
    assert len(failures) == 1  # not one per event
    assert failures[0].exc_info is not None


async def test_subscriber_may_unsubscribe_during_publish(recorder: Recorder) -> None:
    bus = FeedbackBus()

    async def once(e: FeedbackEvent) -> None:
        bus.unsubscribe(once)

    bus.subscribe(once)
    bus.subscribe(recorder)
    await bus.publish(event())
    await bus.publish(event())
    assert len(recorder.events) == 2
    assert bus.subscriber_count == 1


def test_process_bus_is_a_singleton() -> None:
    assert feedback_bus() is feedback_bus()
