"""Compatibility path of the original library: the in-process feedback bus lives in
``coordinator.bus`` (this module's name said the same as the ``feedback`` delivery
package). Kept silent: importing it warns about nothing."""

from market_data_store.contracts import FeedbackEvent as CoreFeedbackEvent

from .bus import FeedbackBus, FeedbackSubscriber, feedback_bus
from .events import BackpressureLevel, FeedbackEvent

__all__ = [
    "BackpressureLevel",
    "CoreFeedbackEvent",
    "FeedbackBus",
    "FeedbackEvent",
    "FeedbackSubscriber",
    "feedback_bus",
]
