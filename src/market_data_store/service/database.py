"""The database part of the service: the pool on the configured (or the embedded)
PostgreSQL, migrated when configured. ``serve`` and ``mds-store migrate`` both open it
here, and both say a failure in one line (``StartupError``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from market_data_store.config import Settings, redact_text, redact_url
from market_data_store.storage import (
    ConnectionInit,
    DatabaseUnavailableError,
    DbPool,
    EmbeddedDatabaseInUseError,
    Migration,
    MigrationError,
    SchemaState,
    apply_migrations,
    connection,
    schema_state,
)
from market_data_store.storage.database import CONNECT_ERRORS, database, describe_failure
from market_data_store.storage.pool import describe_connect_error

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The service (or a command) cannot start; the message says why in one line, with
    every URL in it redacted."""


@dataclass(frozen=True)
class Database:
    pool: DbPool
    url: str
    """Where the pool connects: the configured URL, or the embedded server's."""


@asynccontextmanager
async def open_database(
    settings: Settings,
    *,
    init: ConnectionInit | None = None,
    pool_size: int | None = None,
    give_up: asyncio.Event | None = None,
) -> AsyncIterator[Database]:
    """The pool (``pool_size`` connections, else the configured bounds), each new
    connection set up by ``init``; waited for up to ``database.startup_timeout``, or
    until ``give_up`` is set. Closed (and the embedded server stopped) on the way out."""
    db = settings.database
    size = (db.pool_min_size, db.pool_max_size) if pool_size is None else (pool_size, pool_size)
    async with AsyncExitStack() as stack:
        try:
            pool, url = await stack.enter_async_context(
                database(
                    settings.database_url,
                    db.embedded_dir,
                    min_size=size[0],
                    max_size=size[1],
                    connect_timeout=db.connect_timeout,
                    command_timeout=db.command_timeout,
                    startup_timeout=db.startup_timeout,
                    give_up=give_up,
                    init=init,
                )
            )
        except EmbeddedDatabaseInUseError as exc:  # nothing started, joined or stopped
            raise StartupError(str(exc)) from None
        except CONNECT_ERRORS as exc:
            target = redact_url(settings.database_url) if settings.database_url else "(embedded)"
            shutting_down = give_up is not None and give_up.is_set()
            why = describe_failure(target, exc, db.startup_timeout, shutting_down=shutting_down)
            raise StartupError(redact_text(why)) from None
        yield Database(pool, url)


async def migrate(pool: DbPool, settings: Settings) -> tuple[list[Migration], SchemaState]:
    """Apply pending migrations: those applied now, and the schema's state after.
    ``StartupError`` when one fails or the database cannot be used."""
    try:
        async with connection(pool, timeout=settings.database.connect_timeout) as conn:
            applied = await apply_migrations(conn)
            return applied, await schema_state(conn)
    except MigrationError as exc:
        raise StartupError(redact_text(str(exc))) from None
    except DatabaseUnavailableError as exc:  # the driver's words, not only its class
        why = describe_connect_error(exc.__cause__ or exc)
        raise StartupError(redact_text(f"schema migration: {why}")) from None
