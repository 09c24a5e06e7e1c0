"""Which database errors are worth retrying.

Retryable: anything that says the database or the connection is unavailable,
overloaded or in conflict (connection loss, serialization failure, deadlock,
lock timeout, statement timeout, shutdown, too many connections...). Not
retryable: errors about the data itself (class 22 data exceptions, class 23
constraint violations, class 54 program limits such as an index row too large,
class P0 errors a PL/pgSQL trigger raises about a row) - retrying the same rows
cannot succeed, so the writer isolates and dead-letters them instead.
"""

from __future__ import annotations

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


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, _DATA_ERRORS):
        return False
    return isinstance(exc, _UNAVAILABLE)
