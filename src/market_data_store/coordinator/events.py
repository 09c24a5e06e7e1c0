"""The store's FeedbackEvent: Core's contract plus a ``reason`` and ``utilization``.

It subclasses Core's model, so every event we publish serialises to JSON that
``market_data_core.telemetry.FeedbackEvent.model_validate_json`` accepts; the
extra ``reason`` field is ignored by consumers that only know Core.
"""

from __future__ import annotations

import time

from pydantic import ConfigDict

from market_data_store.contracts import BackpressureLevel
from market_data_store.contracts import FeedbackEvent as CoreFeedbackEvent

__all__ = ["BackpressureLevel", "FeedbackEvent"]


class FeedbackEvent(CoreFeedbackEvent):
    """Backpressure feedback emitted when a queue crosses a watermark."""

    model_config = ConfigDict(frozen=True)

    reason: str | None = None

    @property
    def utilization(self) -> float:
        """Queue fill ratio, 0.0 to 1.0."""
        return self.queue_size / self.capacity if self.capacity > 0 else 0.0

    @classmethod
    def create(
        cls,
        coordinator_id: str,
        queue_size: int,
        capacity: int,
        level: BackpressureLevel,
        reason: str | None = None,
    ) -> FeedbackEvent:
        """Build an event stamped now, with ``source="store"``."""
        return cls(
            coordinator_id=coordinator_id,
            queue_size=queue_size,
            capacity=capacity,
            level=level,
            reason=reason,
            source="store",
            ts=time.time(),
        )
