"""The one backoff schedule of every retry loop in the service and its client.

``backoff_delay(n)`` is the wait before retry number ``n`` (1-based): ``initial *
multiplier**(n-1)`` seconds, capped at ``maximum``; with ``jitter`` a random 50-100 %
of that, so many retrying parties (workers, replicas, producers) do not retry in
lockstep. A caller that wants the schedule to stop growing after some attempts (the
write path's ``RetryPolicy``) passes ``min(n, that)``.
"""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int,
    *,
    initial: float,
    maximum: float,
    multiplier: float = 2.0,
    jitter: bool = False,
) -> float:
    """Seconds to wait before retry number ``attempt`` (see the module docstring)."""
    base = initial
    if attempt > 1 and multiplier != 1:
        try:
            base = initial * multiplier ** (attempt - 1)
        except OverflowError:  # far past the cap
            base = maximum
    base = min(base, maximum)
    if jitter:
        base *= random.uniform(0.5, 1.0)
    return base
