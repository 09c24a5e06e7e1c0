"""Compatibility path of the original library: ``HttpFeedbackBroadcaster`` lives in
``market_data_store.feedback``. Imported lazily, so importing ``coordinator``
never imports the delivery channels (or httpx)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from market_data_store.feedback.webhook import HttpFeedbackBroadcaster

__all__ = ["HttpFeedbackBroadcaster"]


def __getattr__(name: str) -> Any:
    if name == "HttpFeedbackBroadcaster":
        from market_data_store.feedback.webhook import HttpFeedbackBroadcaster

        return HttpFeedbackBroadcaster
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
