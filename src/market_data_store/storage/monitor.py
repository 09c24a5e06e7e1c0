"""Background database health check, so probes never touch the database.

Every ``interval`` seconds a pooled ``SELECT 1`` runs with a ``timeout``; the
result is kept in memory. Health and readiness read it - they cost nothing,
never open a connection and never hang on a hung database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pool import DbPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatabaseStatus:
    reachable: bool
    checked_at: float  # time.time() of the last check; 0 before the first
    latency_ms: float | None = None
    error: str | None = None
    since: float = 0.0  # when ``reachable`` last changed


class DatabaseMonitor:
    def __init__(self, pool: DbPool, interval: float = 2.0, timeout: float = 1.0) -> None:
        self._pool = pool
        self._interval = interval
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self.status = DatabaseStatus(reachable=False, checked_at=0.0, error="not checked yet")

    async def start(self) -> None:
        """Run a first check now (so readiness is right from the start), then loop."""
        await self.check()
        self._task = asyncio.create_task(self._loop(), name="database-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._probe is not None:
            self._probe.cancel()

    async def check(self) -> DatabaseStatus:
        """One check. A query that does not answer in time counts as unreachable at
        once; it is cancelled in the background and never waited on again (a hung
        server can also hang the cancellation)."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._select_one(), name="database-check")
        probe = self._probe
        started = time.perf_counter()
        done, _ = await asyncio.wait({probe}, timeout=self._timeout)
        if not done:
            probe.cancel()
            self._record(False, None, f"no answer within {self._timeout:g}s")
        elif (exc := probe.exception()) is not None:
            self._record(False, None, f"{type(exc).__name__}: {exc}".rstrip(": "))
        else:
            self._record(True, (time.perf_counter() - started) * 1000, None)
        return self.status

    async def _select_one(self) -> None:
        async with self._pool.acquire(timeout=self._timeout) as conn:
            await conn.fetchval("SELECT 1")

    def _record(self, reachable: bool, latency_ms: float | None, error: str | None) -> None:
        now = time.time()
        previous = self.status
        since = previous.since if previous.reachable == reachable and previous.since else now
        if previous.reachable != reachable and previous.checked_at:
            if reachable:
                log.info("database reachable again")
            else:
                log.warning("database unreachable: %s", error)
        self.status = DatabaseStatus(reachable, now, latency_ms, error, since)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()
