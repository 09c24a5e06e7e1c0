"""A feedback subscriber for tests (the ``recorder`` fixture is one)."""

from __future__ import annotations

from market_data_store.coordinator import FeedbackEvent


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
