"""Compatibility path of the original library: ``HttpFeedbackBroadcaster`` lives in
``market_data_store.feedback`` (the delivery channels). Imported lazily, so importing
``coordinator`` never imports the delivery channels (or httpx); silent (no warning).
The one place the coordinator reaches into ``feedback``: the import-layer check
(``make lint``) names it as its only exception."""

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
