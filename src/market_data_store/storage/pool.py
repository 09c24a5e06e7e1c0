"""The asyncpg connection pool, opened patiently at startup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from market_data_store._util import backoff_delay

from .errors import PERMANENT_ERRORS, translated, unavailable
from .types import ConnectionInit, DbConnection, DbPool

log = logging.getLogger(__name__)


def describe_connect_error(exc: BaseException) -> str:
    """One line for a failed connection attempt. A unix socket that is gone (the
    embedded PostgreSQL, or a local server, stopped or was killed) is said in words:
    asyncpg only reports ``FileNotFoundError: No such file or directory``."""
    if isinstance(exc, FileNotFoundError):
        return "the database server is not running (its unix socket is gone)"
    return " ".join(f"{type(exc).__name__}: {exc}".split()).rstrip(": ")


class PoolReconnectLog(logging.Filter):
    """asyncpg's pool logs "Failed to restore the pool connection floor; retrying" with
    a full traceback at every reconnection attempt (1, 2, 4... 60 s apart) for as long
    as the database is away. Installed on asyncpg's logger, this keeps one line when an
    outage begins, then one every ``interval`` seconds with the count of failed attempts
    - no traceback; ``outage_over`` (the database monitor calls it when the database
    answers again) reports the total and starts counting afresh."""

    MESSAGE = "Failed to restore the pool connection floor"

    def __init__(self, interval: float = 300.0) -> None:
        super().__init__()
        self.interval = interval
        self.failures = 0  # in the current outage
        self.total = 0  # since the process started
        self._shown_at: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.MESSAGE):
            return True
        self.failures += 1
        self.total += 1
        now = time.monotonic()
        exc = record.exc_info[1] if record.exc_info else None
        reason = describe_connect_error(exc) if exc else "unknown error"
        if self._shown_at is None:
            record.msg = "database pool lost connections; reconnecting in the background (%s)"
            record.args = (reason,)
        elif now - self._shown_at >= self.interval:
            record.msg = "database pool still reconnecting: %d failed attempts so far (last: %s)"
            record.args = (self.failures, reason)
        else:
            return False
        self._shown_at = now
        record.exc_info = record.exc_text = None
        return True

    def outage_over(self) -> int:
        """The number of failed attempts of the outage that ended; counting restarts."""
        failures, self.failures, self._shown_at = self.failures, 0, None
        return failures


RECONNECT_LOG = PoolReconnectLog()


def _install_reconnect_log() -> None:
    asyncpg_log = logging.getLogger("asyncpg.pool")
    if RECONNECT_LOG not in asyncpg_log.filters:
        asyncpg_log.addFilter(RECONNECT_LOG)


async def open_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 5.0,
    command_timeout: float = 60.0,
    startup_timeout: float = 30.0,
    give_up: asyncio.Event | None = None,
    init: ConnectionInit | None = None,
) -> DbPool:
    """Open a pool, retrying while the database is not reachable yet; ``init`` sets up
    each new connection (the caller's writers know what they need: ``BarsSink``'s
    staging table, for one).

    A database that is still starting (a fresh pod, a failover) is waited for up
    to ``startup_timeout`` seconds, or until ``give_up`` is set (shutdown); then
    ``DatabaseUnavailableError`` is raised (the driver's error chained). Wrong
    credentials or an unknown database are raised at once, ``permanent``. While it
    waits, each kind of error (its exception type) is logged once, not once per attempt.
    """
    _install_reconnect_log()
    deadline = time.monotonic() + startup_timeout
    attempt = 0
    said: set[type[BaseException]] = set()
    while True:
        attempt += 1
        delay = backoff_delay(attempt, initial=0.2, maximum=2.0)
        try:
            pool: DbPool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout,
                command_timeout=command_timeout,
                init=init,
            )
            return pool
        except PERMANENT_ERRORS as exc:
            raise unavailable(exc) from exc
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            if time.monotonic() + delay > deadline:
                raise unavailable(exc) from exc
            if type(exc) not in said:
                said.add(type(exc))
                log.warning(
                    "database not reachable yet (%s); retrying for up to %.0fs",
                    describe_connect_error(exc),
                    deadline - time.monotonic(),
                )
            else:
                log.debug("database still not reachable (%s)", describe_connect_error(exc))
            if give_up is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(give_up.wait(), delay)
                if give_up.is_set():
                    raise unavailable(exc) from exc


@asynccontextmanager
async def connection(pool: DbPool, *, timeout: float) -> AsyncIterator[DbConnection]:
    """A connection of ``pool`` for the block, waited for at most ``timeout`` seconds.
    Driver and network errors, acquiring it or while the block uses it, are raised as
    ``StorageError``s (``DatabaseUnavailableError``, ``InvalidQueryError``)."""
    with translated():
        async with pool.acquire(timeout=timeout) as conn:
            yield conn


POOL_CLOSE_TIMEOUT = 10.0


async def close_pool(pool: DbPool) -> None:
    """Close gracefully; terminate connections still busy after ``POOL_CLOSE_TIMEOUT``."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_TIMEOUT)
    except TimeoutError:
        log.warning("pool did not close within %ss; terminating connections", POOL_CLOSE_TIMEOUT)
        pool.terminate()
    log.info("database pool closed")
