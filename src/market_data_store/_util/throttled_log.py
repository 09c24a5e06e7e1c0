"""Log a recurring failure once per interval instead of once per occurrence.

A failing subscriber or sink can fail thousands of times a second; logging each
one costs more than the work itself and buries everything else in the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable


class ThrottledLog:
    """Emit at most one record per ``key`` every ``interval`` seconds.

    The record that does get through says how many were suppressed since the
    previous one, so counts are never lost.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[Hashable, float] = {}
        self._suppressed: dict[Hashable, int] = {}

    def log(self, level: int, key: Hashable, msg: str, *args: object, exc: bool = False) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d similar suppressed in the last %.0fs)"
            args = (*args, suppressed, self._interval)
        self._logger.log(level, msg, *args, exc_info=exc)
