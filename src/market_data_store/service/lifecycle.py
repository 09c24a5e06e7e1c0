"""Running or shutting down: the signal long-lived responses and probes watch.

uvicorn waits for open connections to finish *before* it runs the lifespan
shutdown, so the shutdown must be announced earlier: the server sets this on
SIGTERM. Readiness turns 503 at once, ingest refuses, streams end by themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


TransportLookup = Callable[[Any], asyncio.BaseTransport | None]


def _no_transport(scope: Any) -> asyncio.BaseTransport | None:
    return None


class Lifecycle:
    def __init__(self) -> None:
        self.shutdown_event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.transport_of: TransportLookup = _no_transport
        """The connection serving an ASGI scope, when the server can tell (``server.py``
        sets it for uvicorn): a long-lived response whose client stopped reading aborts
        it, since ending the response cannot get through a full buffer."""

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
