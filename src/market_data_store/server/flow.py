"""uvicorn's flow control, timed: how long the server itself did not read is never held
against a slow client (the body clock of ``server.protocol`` subtracts it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from uvicorn.protocols.http.flow_control import FlowControl


class TimedFlowControl(FlowControl):
    """uvicorn's flow control, also adding up how long reading was paused (the
    server's own doing, never held against a slow client)."""

    def __init__(self, transport: asyncio.Transport, clock: Callable[[], float]) -> None:
        super().__init__(transport)
        self._clock = clock
        self._paused_since = 0.0
        self._paused_total = 0.0

    def pause_reading(self) -> None:
        if not self.read_paused:
            self._paused_since = self._clock()
        super().pause_reading()

    def resume_reading(self) -> None:  # called for every request: inlined
        if self.read_paused:
            self._paused_total += self._clock() - self._paused_since
            self.read_paused = False
            self._transport.resume_reading()

    def paused_time(self, now: float) -> float:
        """Seconds reading has been paused since the connection opened, up to ``now``."""
        if self.read_paused:
            return self._paused_total + now - self._paused_since
        return self._paused_total


__all__ = ["TimedFlowControl"]
