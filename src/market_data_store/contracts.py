"""The market-data-core contracts this service speaks, from one place.

Everything we send must validate as these Core models; our own extensions are
extra fields on subclasses (see ``coordinator.events``), never renamed fields.
"""

from market_data_core import Bar
from market_data_core.protocols import FeedbackPublisher
from market_data_core.telemetry import (
    BackpressureLevel,
    FeedbackEvent,
    HealthComponent,
    HealthState,
    HealthStatus,
)

__all__ = [
    "BackpressureLevel",
    "Bar",
    "FeedbackEvent",
    "FeedbackPublisher",
    "HealthComponent",
    "HealthState",
    "HealthStatus",
]
