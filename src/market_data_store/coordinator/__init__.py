"""Write coordinator: bounded queue → batching workers → sink, with backpressure feedback.

No HTTP and no SQL here: sinks are injected, feedback goes to a ``FeedbackBus``.
The public names below are those of the original coordinator library, so its
users can switch without changing imports.
"""

from typing import TYPE_CHECKING, Any

from .completions import Ticket
from .dlq import DeadLetterQueue, DLQRecord
from .events import BackpressureLevel, FeedbackEvent
from .feedback import FeedbackBus, FeedbackSubscriber, feedback_bus
from .policy import CircuitBreaker, CircuitOpenError, RetryPolicy, default_retry_classifier
from .queue import BoundedQueue
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
    from market_data_store.feedback.webhook import HttpFeedbackBroadcaster


def __getattr__(name: str) -> Any:
    """``HttpFeedbackBroadcaster`` as the reference library exported it, imported only
    when asked for: importing ``coordinator`` never imports the delivery channels."""
    if name == "HttpFeedbackBroadcaster":
        from market_data_store.feedback.webhook import HttpFeedbackBroadcaster

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
    "DLQRecord",
    "DeadLetterQueue",
    "FeedbackBus",
    "FeedbackEvent",
    "FeedbackSubscriber",
    "HttpFeedbackBroadcaster",
    "OverflowStrategy",
    "QueueClosedError",
    "QueueFullError",
    "RetryPolicy",
    "Sink",
    "SinkWorker",
    "T",
    "Ticket",
    "WriteCoordinator",
    "default_retry_classifier",
    "feedback_bus",
]
