"""The store's FeedbackEvent: Core's contract plus ``reason``, ``utilization``,
``drain_rate`` and ``credit``.

It subclasses Core's model, so every event we publish serialises to JSON that
``market_data_core.telemetry.FeedbackEvent.model_validate_json`` accepts; the
extra fields are ignored by consumers that only know Core.
"""

from __future__ import annotations

import time

from pydantic import ConfigDict, Field

from market_data_store.contracts import BackpressureLevel
from market_data_store.contracts import FeedbackEvent as CoreFeedbackEvent

__all__ = ["MAX_EXTENSION", "BackpressureLevel", "FeedbackEvent"]

MAX_EXTENSION = 1_000_000_000
"""Bound of ``drain_rate`` and ``credit`` (also when another replica sends them)."""


class FeedbackEvent(CoreFeedbackEvent):
    """Backpressure feedback emitted when a queue crosses a watermark."""

    model_config = ConfigDict(frozen=True)

    reason: str | None = None
    drain_rate: float | None = Field(default=None, ge=0, le=MAX_EXTENSION, allow_inf_nan=False)
    """Items written per second over the last second (what the store can take now)."""
    credit: int | None = Field(default=None, ge=0, le=MAX_EXTENSION)
    """Items one producer may have sent and not yet answered (see ``Credits``)."""

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
        *,
        drain_rate: float | None = None,
        credit: int | None = None,
    ) -> FeedbackEvent:
        """Build an event stamped now, with ``source="store"``."""
        return cls(
            coordinator_id=coordinator_id,
            queue_size=queue_size,
            capacity=capacity,
            level=level,
            reason=reason,
            drain_rate=drain_rate,
            credit=credit,
            source="store",
            ts=time.time(),
        )
