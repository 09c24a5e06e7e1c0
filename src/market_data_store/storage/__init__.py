"""PostgreSQL storage: pool, migrations, the bars sink, health checks, embedded server.

Nothing here knows about HTTP or the coordinator: ``BarsSink`` satisfies the
coordinator's ``Sink`` protocol structurally, and ``is_retryable`` is handed to
the coordinator's retry policy by the application that wires them together.
"""

from .bars_sink import BarsSink, prepare_connection
from .embedded import EmbeddedDatabaseInUseError
from .errors import DatabaseUnavailableError, InvalidQueryError, StorageError, is_retryable
from .migrate import (
    Migration,
    MigrationError,
    SchemaState,
    apply_migrations,
    load_migrations,
    schema_state,
)
from .monitor import DatabaseMonitor, DatabaseStatus
from .pool import connection, open_pool
from .queries import BarReader, StoredBar
from .rows import DEFAULT_TENANT, BarRow
from .types import ConnectionInit, DbConnection, DbPool

__all__ = [
    "DEFAULT_TENANT",
    "BarReader",
    "BarRow",
    "BarsSink",
    "ConnectionInit",
    "DatabaseMonitor",
    "DatabaseStatus",
    "DatabaseUnavailableError",
    "DbConnection",
    "DbPool",
    "EmbeddedDatabaseInUseError",
    "InvalidQueryError",
    "Migration",
    "MigrationError",
    "SchemaState",
    "StorageError",
    "StoredBar",
    "apply_migrations",
    "connection",
    "is_retryable",
    "load_migrations",
    "open_pool",
    "prepare_connection",
    "schema_state",
]
