"""PostgreSQL storage: pool, migrations, the bars and fact sinks and readers, health
checks, embedded server.

Nothing here knows about HTTP or the coordinator: ``BarsSink`` satisfies the
coordinator's ``Sink`` protocol structurally, and ``is_retryable`` is handed to
the coordinator's retry policy by the application that wires them together.
"""

from .bars_sink import BarsSink, prepare_connection
from .embedded import EmbeddedDatabaseInUseError
from .errors import DatabaseUnavailableError, InvalidQueryError, StorageError, is_retryable
from .facts import FACT_TABLES, FactRow, FactSink, FactTable, copy_text
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
from .queries import Export, ExportsBusyError, Page, Reader, StoredBar
from .reads import BARS, SHAPES, Bucket, Format, ReadQuery, ReadShape, resample_problem
from .retention import Retention, RetentionBusyError, RetentionResult, RetentionRule
from .rows import DEFAULT_TENANT, BarRow
from .sink import Row, StoreSink, decode_row
from .types import ConnectionInit, DbConnection, DbPool

__all__ = [
    "BARS",
    "DEFAULT_TENANT",
    "FACT_TABLES",
    "SHAPES",
    "BarRow",
    "BarsSink",
    "Bucket",
    "ConnectionInit",
    "DatabaseMonitor",
    "DatabaseStatus",
    "DatabaseUnavailableError",
    "DbConnection",
    "DbPool",
    "EmbeddedDatabaseInUseError",
    "Export",
    "ExportsBusyError",
    "FactRow",
    "FactSink",
    "FactTable",
    "Format",
    "InvalidQueryError",
    "Migration",
    "MigrationError",
    "Page",
    "ReadQuery",
    "ReadShape",
    "Reader",
    "Retention",
    "RetentionBusyError",
    "RetentionResult",
    "RetentionRule",
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
    "resample_problem",
    "schema_state",
]
