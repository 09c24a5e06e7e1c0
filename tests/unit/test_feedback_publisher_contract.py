"""Our publishers conform to Core's FeedbackPublisher protocol."""

from __future__ import annotations

import inspect

from market_data_store.contracts import FeedbackPublisher
from market_data_store.coordinator import BackpressureLevel, FeedbackBus, FeedbackEvent
from tests.conftest import Recorder


def test_feedback_bus_conforms_to_protocol() -> None:
    bus = FeedbackBus()
    assert isinstance(bus, FeedbackPublisher)
    assert inspect.iscoroutinefunction(bus.publish)


async def test_feedback_bus_publish_accepts_feedback_event(recorder: Recorder) -> None:
    bus = FeedbackBus()
    bus.subscribe(recorder)
    publisher: FeedbackPublisher = bus
    event = FeedbackEvent.create("c", 1, 10, BackpressureLevel.ok)
    await publisher.publish(event)
    assert recorder.events == [event]
