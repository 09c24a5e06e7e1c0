"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from market_data_store.coordinator import FeedbackBus, FeedbackEvent, feedback_bus


class Recorder:
    """A feedback subscriber that keeps every event."""

    def __init__(self) -> None:
        self.events: list[FeedbackEvent] = []

    async def __call__(self, event: FeedbackEvent) -> None:
        self.events.append(event)

    def levels(self) -> list[str]:
        return [e.level.value for e in self.events]

    def transitions(self) -> list[tuple[str, int, str | None]]:
        return [(e.level.value, e.queue_size, e.reason) for e in self.events]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def bus(recorder: Recorder) -> FeedbackBus:
    """A private bus with ``recorder`` subscribed."""
    b = FeedbackBus()
    b.subscribe(recorder)
    return b


@pytest.fixture
def fresh_bus() -> Iterator[FeedbackBus]:
    """The process default bus, emptied before and after the test."""
    b = feedback_bus()
    b._subs.clear()
    yield b
    b._subs.clear()
