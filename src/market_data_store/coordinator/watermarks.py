"""Turns queue-size changes into ok → soft → hard → ok transitions.

Kept apart from the queue so the rules are plain arithmetic, testable without
an event loop, and so a bulk enqueue can be checked once yet produce exactly
the transitions that item-by-item enqueues would have produced.
"""

from __future__ import annotations

from dataclasses import dataclass

from .events import BackpressureLevel

NEVER = 1 << 62


@dataclass(frozen=True, slots=True)
class Transition:
    """A level change and the queue size it reports.

    For rises this is the size at which the threshold was crossed, the size an
    item-by-item enqueue would have reported; for the recovery it is the size
    after the items were taken.
    """

    level: BackpressureLevel
    queue_size: int
    reason: str | None = None


class WatermarkTracker:
    """State machine over the queue size.

    - ``hard`` when the size first reaches ``high``;
    - ``soft`` once when the size enters the open interval (``low``, ``high``);
    - ``ok`` (reason ``queue_recovered``) when it falls back to ``<= low``
      after soft or hard.
    """

    def __init__(self, high: int, low: int) -> None:
        if not 0 <= low < high:
            raise ValueError(f"watermarks need 0 <= low ({low}) < high ({high})")
        self.high = high
        self.low = low
        self.level = BackpressureLevel.ok
        self.next_rise = low + 1
        """Smallest size at which a rise can change the level (cheap hot-path check)."""

    def rise(self, old: int, new: int) -> list[Transition]:
        """Transitions caused by the size growing from ``old`` to ``new``."""
        out: list[Transition] = []
        if new < self.next_rise:
            return out
        if self.level is BackpressureLevel.ok and self.low + 1 < self.high:
            out.append(Transition(BackpressureLevel.soft, max(old + 1, self.low + 1)))
            self.level = BackpressureLevel.soft
        if new >= self.high and self.level is not BackpressureLevel.hard:
            out.append(Transition(BackpressureLevel.hard, max(old + 1, self.high)))
            self.level = BackpressureLevel.hard
        self.next_rise = self.high if self.level is BackpressureLevel.soft else NEVER
        return out

    def fall(self, new: int) -> Transition | None:
        """The recovery caused by the size shrinking to ``new``, if any."""
        if self.level is BackpressureLevel.ok or new > self.low:
            return None
        self.level = BackpressureLevel.ok
        self.next_rise = self.low + 1
        return Transition(BackpressureLevel.ok, new, "queue_recovered")
