"""Compatibility path of the original library: ``HttpFeedbackBroadcaster`` lives in
``market_data_store.feedback`` (the delivery channels). Imported lazily, so importing
``coordinator`` never imports the delivery channels (or httpx); silent (no warning).
The one place the coordinator reaches into ``feedback``: the import-layer check
(``make lint``) names it as its only exception."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from .bus import feedback_bus
from .events import FeedbackEvent

if TYPE_CHECKING:
    from market_data_store.feedback.webhook import HttpFeedbackBroadcaster

__all__ = ["HTTPX_AVAILABLE", "FeedbackEvent", "HttpFeedbackBroadcaster", "feedback_bus"]

HTTPX_AVAILABLE: Final = True
"""Always true: httpx is a dependency of this package, not an optional extra (the
original library degraded to a no-op broadcaster without it)."""


def __getattr__(name: str) -> Any:
    if name == "HttpFeedbackBroadcaster":
        from market_data_store.feedback.webhook import HttpFeedbackBroadcaster

        return HttpFeedbackBroadcaster
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
