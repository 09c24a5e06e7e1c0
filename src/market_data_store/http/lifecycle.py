"""Running or shutting down: the signal long-lived responses and probes watch.

uvicorn waits for open connections to finish *before* it runs the lifespan
shutdown, so the shutdown must be announced earlier: the server sets this on
SIGTERM. Readiness turns 503 at once, ingest refuses, streams end by themselves.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


class Lifecycle:
    def __init__(self) -> None:
        self.shutdown_event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def shutting_down(self) -> bool:
        return self.shutdown_event.is_set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the serving loop, so ``begin_shutdown_threadsafe`` can reach it."""
        self._loop = loop

    def begin_shutdown(self) -> None:
        if not self.shutdown_event.is_set():
            log.info("shutdown started: readiness now fails, new work is refused")
            self.shutdown_event.set()

    def begin_shutdown_threadsafe(self) -> None:
        """Callable from a signal handler or another thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.begin_shutdown)
