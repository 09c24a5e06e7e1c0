"""The database the settings point at (or the embedded one) and a pool on it.

One way to get there for the service and for ``mds-store migrate``: a configured
URL wins; without one, the bundled PostgreSQL is started, and stopped again
when the context ends, after the pool is closed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import asyncpg

from .embedded import EmbeddedPostgres
from .errors import PERMANENT_ERRORS, DatabaseUnavailableError
from .pool import close_pool, describe_connect_error, open_pool
from .types import DbPool

# What opening the database can fail with: unreachable, refused, timed out, wrong
# credentials, no such database. Start-up code answers them in one line
# (``describe_failure``), never with a traceback.
CONNECT_ERRORS = (
    DatabaseUnavailableError,
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def describe_failure(
    target: str, exc: BaseException, startup_timeout: float, *, shutting_down: bool = False
) -> str:
    """``database <target> <why>: <error>`` in one line, for ``serve`` and ``migrate``
    alike; ``target`` is the redacted URL or ``(embedded)``."""
    permanent = isinstance(exc, PERMANENT_ERRORS)
    if isinstance(exc, DatabaseUnavailableError):  # the pool's words: the driver's error chained
        permanent, exc = exc.permanent, exc.__cause__ or exc
    if shutting_down:
        why = "shutdown requested while waiting for it"
    elif permanent:
        why = "not usable"
    else:
        why = f"not reachable within {startup_timeout:g}s"
    return f"database {target} {why}: {describe_connect_error(exc)}"


@asynccontextmanager
async def database(
    url: str | None, embedded_dir: str, **pool_options: Any
) -> AsyncIterator[tuple[DbPool, str]]:
    """Yield ``(pool, url)``; ``pool_options`` go to ``open_pool``."""
    async with AsyncExitStack() as stack:
        if url is None:
            embedded = EmbeddedPostgres(embedded_dir)
            url = await embedded.start()
            stack.push_async_callback(embedded.stop)
        pool = await open_pool(url, **pool_options)
        stack.push_async_callback(close_pool, pool)
        yield pool, url
