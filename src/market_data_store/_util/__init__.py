"""Helpers every room of the house shares and none owns: the throttled log of a
recurring failure, and the one backoff schedule every retry loop waits by.

Imports nothing of ours (the import-layer check in ``make lint`` keeps it so).
"""

from .backoff import backoff_delay
from .throttled_log import ThrottledLog

__all__ = ["ThrottledLog", "backoff_delay"]
