"""What storage raises, and which database errors are worth retrying.

Driver errors are translated here, at the package's edge: callers see
``DatabaseUnavailableError`` (the database cannot be used now) or
``InvalidQueryError`` (a value the database refused in a read), both
``StorageError``; the driver's exception stays chained as ``__cause__``. Nothing
above ``storage`` needs to import asyncpg.

Retryable (``is_retryable``): anything that says the database or the connection
is unavailable, overloaded or in conflict (connection loss, serialization
failure, deadlock, lock timeout, statement timeout, shutdown, too many
connections...). Not retryable: errors about the data itself (class 22 data
exceptions, class 23 constraint violations, class 54 program limits such as an
index row too large, class P0 errors a PL/pgSQL trigger raises about a row) -
retrying the same rows cannot succeed, so the writer isolates and dead-letters
them instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

_DATA_ERRORS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
    asyncpg.exceptions.PLPGSQLError,
)
# InternalClientError: the client's protocol state broke, typically because the
# server dropped the connection mid-conversation.
_UNAVAILABLE = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
# Errors no amount of waiting fixes: wrong credentials, no such database.
PERMANENT_ERRORS = (
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidCatalogNameError,
)


class StorageError(Exception):
    """Base of everything ``storage`` raises on purpose."""


class DatabaseUnavailableError(StorageError):
    """The database could not be used for this call: unreachable, refusing
    connections, no pooled connection free in time, or the connection failed
    during the call. Whatever the call was doing in a transaction was rolled back;
    a caller may retry later. ``permanent`` says waiting will not help (wrong
    credentials, no such database): an operator has to fix the configuration.
    The message names the kind of failure only (never the URL or credentials)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class InvalidQueryError(StorageError):
    """The database refused a value of a read (e.g. a timestamp out of its range);
    nothing is wrong with the database: the same read will fail again."""


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, _DATA_ERRORS):
        return False
    return isinstance(exc, _UNAVAILABLE)


def unavailable(exc: BaseException) -> DatabaseUnavailableError:
    """The ``DatabaseUnavailableError`` for a driver or network error (chain it: ``from exc``)."""
    if isinstance(exc, PERMANENT_ERRORS):
        return DatabaseUnavailableError(
            f"the database refuses this service's credentials or database name "
            f"({type(exc).__name__})",
            permanent=True,
        )
    if isinstance(exc, TimeoutError):
        return DatabaseUnavailableError("the database did not answer in time")
    return DatabaseUnavailableError(f"the database is unavailable ({type(exc).__name__})")


@contextmanager
def translated() -> Iterator[None]:
    """Raise driver and network errors of the block as ``StorageError``s: data errors
    as ``InvalidQueryError``, everything that says the database cannot be used as
    ``DatabaseUnavailableError``. Other exceptions pass unchanged."""
    try:
        yield
    except asyncpg.DataError as exc:
        raise InvalidQueryError(str(exc)) from exc
    except _UNAVAILABLE as exc:
        raise unavailable(exc) from exc
