"""The database the settings point at (or the embedded one) and a pool on it.

One way to get there for the service and for ``mds-store migrate``: a configured
URL wins; without one, the bundled PostgreSQL is started, and stopped again
when the context ends, after the pool is closed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from .embedded import EmbeddedPostgres
from .pool import DbPool, close_pool, open_pool


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
