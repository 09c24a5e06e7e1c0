"""Write coordinator: bounded queue → batching workers → sink, with backpressure feedback.

No HTTP and no SQL here: sinks are injected, feedback goes to a ``FeedbackBus``.
The public names below are those of the original coordinator library, so its
users can switch without changing imports.
"""

from typing import TYPE_CHECKING, Any

from .bus import FeedbackBus, FeedbackSubscriber, feedback_bus
from .completions import Ticket
from .credits import Credits
from .dlq import DeadLetterQueue, DLQRecord, ItemDecoder
from .events import BackpressureLevel, FeedbackEvent
from .policy import CircuitBreaker, CircuitOpenError, RetryPolicy, default_retry_classifier
from .queue import BoundedQueue
from .shares import Shares
from .stats import CoordinatorStats
from .types import (
    BackpressureCallback,
    OverflowStrategy,
    QueueClosedError,
    QueueFullError,
    Sink,
    T,
)
from .worker import SinkWorker
from .write_coordinator import CoordinatorHealth, WriteCoordinator

if TYPE_CHECKING:
    from .http_broadcast import HttpFeedbackBroadcaster as HttpFeedbackBroadcaster


def __getattr__(name: str) -> Any:
    """``coordinator.HttpFeedbackBroadcaster``, as the original library exported it: the
    webhook lives in ``market_data_store.feedback``; reached through the one
    compatibility module, ``coordinator.http_broadcast``, only when asked for (importing
    ``coordinator`` never imports the delivery channels, nor httpx). In ``__all__`` as in
    the original, so only ``from market_data_store.coordinator import *`` loads it."""
    if name == "HttpFeedbackBroadcaster":
        from .http_broadcast import HttpFeedbackBroadcaster

        return HttpFeedbackBroadcaster
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BackpressureCallback",
    "BackpressureLevel",
    "BoundedQueue",
    "CircuitBreaker",
    "CircuitOpenError",
    "CoordinatorHealth",
    "CoordinatorStats",
    "Credits",
    "DLQRecord",
    "DeadLetterQueue",
    "FeedbackBus",
    "FeedbackEvent",
    "FeedbackSubscriber",
    "HttpFeedbackBroadcaster",
    "ItemDecoder",
    "OverflowStrategy",
    "QueueClosedError",
    "QueueFullError",
    "RetryPolicy",
    "Shares",
    "Sink",
    "SinkWorker",
    "T",
    "Ticket",
    "WriteCoordinator",
    "default_retry_classifier",
    "feedback_bus",
]
