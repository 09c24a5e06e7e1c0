"""Background database health check, so probes never touch the database.

Every ``interval`` seconds a ``SELECT 1`` runs, with a ``timeout``, on a
connection of the monitor's own - not the pool's: a pool busy with writes and
reads says nothing about the database being reachable, and must not make
readiness fail. The result is kept in memory; health and readiness read it,
cost nothing, never open a connection and never hang on a hung database.

While the database is unreachable, or ``failing()`` says writes are failing (the
circuit breaker is not closed), checks run every ``failing_interval`` instead, so
a recovery is seen within that; every check that finds the database reachable
calls ``on_reachable`` (the service lets its circuit breaker try again at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from .pool import RECONNECT_LOG, describe_connect_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatabaseStatus:
    reachable: bool
    checked_at: float  # time.time() of the last check; 0 before the first
    latency_ms: float | None = None
    error: str | None = None
    """A short category (``error_category``), safe for unauthenticated probes."""
    since: float = 0.0  # when ``reachable`` last changed
    detail: str | None = None
    """The driver's own words (may name hosts, users, databases): logs and operators only."""


def error_category(exc: BaseException | None) -> str:
    """What kind of failure a check met, in one word an unauthenticated probe may show
    (``None``: the check got no answer in time)."""
    if exc is None or isinstance(exc, TimeoutError):
        return "timeout"
    for kinds, category in _CATEGORIES:
        if isinstance(exc, kinds):
            return category
    return "error"


_CATEGORIES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (
        (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError),
        "auth_failed",
    ),
    (asyncpg.InvalidCatalogNameError, "database_missing"),
    (asyncpg.TooManyConnectionsError, "too_many_connections"),
    (asyncpg.CannotConnectNowError, "not_accepting_connections"),  # starting, stopping
    (
        (
            asyncpg.ConnectionDoesNotExistError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
            ConnectionResetError,
            EOFError,
        ),
        "connection_lost",
    ),
    (OSError, "unreachable"),  # refused, no route, name not resolved
)


class DatabaseMonitor:
    def __init__(
        self,
        url: str,
        interval: float = 1.0,
        timeout: float = 1.0,
        *,
        failing_interval: float | None = None,
        failing: Callable[[], bool] | None = None,
        on_reachable: Callable[[], object] | None = None,
    ) -> None:
        self._url = url
        self._interval = interval
        self._failing_interval = min(interval, failing_interval or interval)
        self._failing = failing
        self._on_reachable = on_reachable
        self._timeout = timeout
        self._conn: asyncpg.Connection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self.status = DatabaseStatus(
            reachable=False, checked_at=0.0, error="not_checked_yet", detail="not checked yet"
        )
        self._detail_logged_at = 0.0

    async def start(self) -> None:
        """Run a first check now (so readiness is right from the start), then loop."""
        await self.check()
        self._task = asyncio.create_task(self._loop(), name="database-monitor")

    async def stop(self) -> None:
        for task in (self._task, self._probe):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({task}, timeout=self._timeout)
        self._task = self._probe = None
        self._drop_connection()

    async def check(self) -> DatabaseStatus:
        """One check. A query that does not answer in time counts as unreachable at
        once; its connection is dropped and the query never waited on again (a hung
        server can also hang a cancellation)."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._select_one(), name="database-check")
        probe = self._probe
        started = time.perf_counter()
        done, _ = await asyncio.wait({probe}, timeout=self._timeout)
        if not done or probe.cancelled():
            probe.cancel()
            self._drop_connection()
            self._record(False, None, "timeout", f"no answer within {self._timeout:g}s")
        elif (exc := probe.exception()) is not None:
            self._drop_connection()
            self._record(False, None, error_category(exc), describe_connect_error(exc))
        else:
            self._record(True, (time.perf_counter() - started) * 1000, None, None)
            if self._on_reachable is not None:
                self._on_reachable()
        return self.status

    async def _select_one(self) -> None:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._url, timeout=self._timeout)
        await self._conn.fetchval("SELECT 1")

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    def _record(
        self, reachable: bool, latency_ms: float | None, error: str | None, detail: str | None
    ) -> None:
        now = time.time()
        previous = self.status
        since = previous.since if previous.reachable == reachable and previous.since else now
        if previous.reachable != reachable and previous.checked_at:
            if reachable:
                failed = RECONNECT_LOG.outage_over()
                meanwhile = f" (the pool failed {failed} reconnection attempt(s))" if failed else ""
                log.info("database reachable again%s", meanwhile)
            else:
                self._detail_logged_at = now
                log.warning("database unreachable (%s): %s", error, detail)
        elif not reachable and detail != previous.detail and now - self._detail_logged_at >= 60:
            # the failure changed its nature while down: say so, once a minute at most
            self._detail_logged_at = now
            log.warning("database still unreachable (%s): %s", error, detail)
        self.status = DatabaseStatus(reachable, now, latency_ms, error, since, detail)

    def _hurry(self) -> bool:
        """Check every ``failing_interval``: the database is gone or writes fail."""
        return not self.status.reachable or (self._failing is not None and self._failing())

    async def _loop(self) -> None:
        last = time.monotonic()
        while True:
            # wake at the short interval, check when due: a failure that starts
            # between two checks shortens the wait for the next one
            await asyncio.sleep(self._failing_interval)
            try:
                due = self._failing_interval if self._hurry() else self._interval
                if time.monotonic() - last < due * 0.99:
                    continue
                last = time.monotonic()
                await self.check()
            except Exception:  # a monitor that dies would freeze readiness for good
                log.exception("database check failed unexpectedly")
