"""The driver's types as the rest of ``storage`` (and its callers) name them.

Their own module, so a module that only needs a name (the sink, the reader, the
migrations) does not import the pool's machinery, and the pool imports none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    DbPool = asyncpg.Pool[asyncpg.Record]
    DbConnection = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:  # asyncpg.Pool is not subscriptable at runtime, and Litestar evaluates annotations
    DbPool = asyncpg.Pool
    DbConnection = asyncpg.Connection


class ConnectionInit(Protocol):
    """A pool's per-connection set-up (asyncpg's ``create_pool(init=...)``), run once for
    each new connection: the owner of the pool passes the hooks its writers need."""

    async def __call__(self, conn: asyncpg.Connection[asyncpg.Record], /) -> None: ...


__all__ = ["ConnectionInit", "DbConnection", "DbPool"]
