"""Plain in-memory counters of a coordinator.

Hot paths bump integers here; telemetry reads them when scraped (observable
instruments), so the per-item cost of metrics is one integer add.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

WriteListener = Callable[[int, float], None]


class DrainMeter:
    """Items finished per second over the last ``window`` seconds (for Retry-After)."""

    def __init__(self, window: float = 10.0) -> None:
        self._window = window
        self._samples: deque[tuple[float, int]] = deque()

    def record(self, finished_total: int) -> None:
        now = time.monotonic()
        samples = self._samples
        samples.append((now, finished_total))
        while len(samples) > 2 and now - samples[1][0] > self._window:
            samples.popleft()

    def rate(self) -> float:
        """Items/s; 0.0 when nothing was finished within the window."""
        samples = self._samples
        now = time.monotonic()
        if len(samples) < 2 or now - samples[-1][0] > self._window:
            return 0.0
        (t0, n0), (_, n1) = samples[0], samples[-1]
        # up to now, not to the last sample: a stall shows at once as a falling rate
        return (n1 - n0) / (now - t0) if now > t0 else 0.0


"""Called with (items, seconds) after each successful batch write."""


@dataclass
class CoordinatorStats:
    submitted: int = 0
    dropped: Counter[str] = field(default_factory=lambda: Counter(overflow=0, shutdown=0))
    batches_written: int = 0
    items_written: int = 0
    write_errors: Counter[str] = field(default_factory=Counter)
    dead_lettered: int = 0
    finished: int = 0  # written, dead-lettered or evicted
    write_listeners: list[WriteListener] = field(default_factory=list)
    drain: DrainMeter = field(default_factory=lambda: DrainMeter())
    recent_drain: DrainMeter = field(default_factory=lambda: DrainMeter(window=1.0))
    """The drain of the last second (the credit's target; ``drain`` smooths Retry-After)."""

    def record_finished(self, items: int) -> None:
        self.finished += items
        self.drain.record(self.finished)
        self.recent_drain.record(self.finished)

    def record_write(self, items: int, seconds: float) -> None:
        self.batches_written += 1
        self.items_written += items
        for listener in self.write_listeners:
            listener(items, seconds)
