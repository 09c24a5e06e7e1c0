"""Plain in-memory counters of a coordinator.

Hot paths bump integers here; telemetry reads them when scraped (observable
instruments), so the per-item cost of metrics is one integer add.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

WriteListener = Callable[[int, float], None]
"""Called with (items, seconds) after each successful batch write."""


@dataclass
class CoordinatorStats:
    submitted: int = 0
    dropped: Counter[str] = field(default_factory=lambda: Counter(overflow=0, shutdown=0))
    batches_written: int = 0
    items_written: int = 0
    write_errors: Counter[str] = field(default_factory=Counter)
    dead_lettered: int = 0
    write_listeners: list[WriteListener] = field(default_factory=list)

    def record_write(self, items: int, seconds: float) -> None:
        self.batches_written += 1
        self.items_written += items
        for listener in self.write_listeners:
            listener(items, seconds)
