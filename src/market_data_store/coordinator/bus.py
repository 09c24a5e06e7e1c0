"""In-process pub/sub for backpressure feedback.

Queues publish here; delivery channels (SSE, webhook, Redis) and pipelines in
the same process subscribe. ``publish`` awaits subscribers in order, so a
subscriber must be quick: anything slow (network I/O) belongs behind the
subscriber's own bounded buffer, as the feedback delivery channels do.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol

from market_data_store._util import ThrottledLog

from .events import FeedbackEvent

log = logging.getLogger(__name__)


class FeedbackSubscriber(Protocol):
    """An async callable taking a FeedbackEvent."""

    async def __call__(self, event: FeedbackEvent, /) -> None: ...


class FeedbackBus:
    """Fans feedback events out to subscribers, isolating their failures.

    Conforms to Core's ``FeedbackPublisher`` protocol (``async publish(event)``).
    """

    def __init__(self) -> None:
        self._subs: list[FeedbackSubscriber] = []
        self._failures = ThrottledLog(log)

    def subscribe(self, callback: FeedbackSubscriber) -> None:
        """Add ``callback``; subscribing the same callable twice is a no-op."""
        if callback not in self._subs:
            self._subs.append(callback)

    def unsubscribe(self, callback: FeedbackSubscriber) -> None:
        """Remove ``callback``; unknown callables are ignored."""
        with contextlib.suppress(ValueError):
            self._subs.remove(callback)

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    async def publish(self, event: FeedbackEvent) -> None:
        """Deliver ``event`` to every subscriber; one failing does not stop the rest."""
        for callback in tuple(self._subs):
            try:
                await callback(event)
            except Exception:
                self._failures.log(
                    logging.WARNING,
                    id(callback),
                    "feedback subscriber %r failed",
                    callback,
                    exc=True,
                )


_default_bus: FeedbackBus | None = None


def feedback_bus() -> FeedbackBus:
    """The process-wide default bus, used by queues not given a bus of their own."""
    global _default_bus
    if _default_bus is None:
        _default_bus = FeedbackBus()
    return _default_bus
