"""PostgreSQL storage: pool, migrations, the bars and fact sinks and readers, health
checks, embedded server.

Nothing here knows about HTTP or the coordinator: ``BarsSink`` satisfies the
coordinator's ``Sink`` protocol structurally, and ``is_retryable`` is handed to
the coordinator's retry policy by the application that wires them together.
"""

from .bars_sink import BarsSink, prepare_connection
from .embedded import EmbeddedDatabaseInUseError
from .errors import DatabaseUnavailableError, InvalidQueryError, StorageError, is_retryable
from .facts import FACT_TABLES, FactReader, FactRow, FactSink, FactTable, copy_text
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
from .sink import Row, StoreSink, decode_row
from .types import ConnectionInit, DbConnection, DbPool

__all__ = [
    "DEFAULT_TENANT",
    "FACT_TABLES",
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
    "FactReader",
    "FactRow",
    "FactSink",
    "FactTable",
    "InvalidQueryError",
    "Migration",
    "MigrationError",
    "Row",
    "SchemaState",
    "StorageError",
    "StoreSink",
    "StoredBar",
    "apply_migrations",
    "connection",
    "copy_text",
    "decode_row",
    "is_retryable",
    "load_migrations",
    "open_pool",
    "prepare_connection",
    "schema_state",
]
