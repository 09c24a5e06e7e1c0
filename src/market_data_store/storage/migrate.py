"""Schema migrations: ordered plain-SQL files, applied once, safely from many replicas.

Files in ``migrations/`` named ``NNNN_description.sql`` are applied in order,
all pending ones in one transaction, under a transaction-scoped advisory lock:
replicas starting together queue on the lock, and the later ones find the work
done. Each applied file is recorded in ``schema_migrations`` with a checksum; an
applied file that was edited afterwards is refused rather than silently ignored.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING

import asyncpg

from .errors import StorageError

if TYPE_CHECKING:
    from .types import DbConnection

log = logging.getLogger(__name__)

LOCK_KEY = 0x6D64735F6D696772  # "mds_migr": one lock id for this schema's migrations
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text        PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(StorageError, RuntimeError):
    """A migration could not be applied, or the applied history does not match the
    files; nothing of the pending migrations was applied (one transaction)."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class AppliedMigration:
    version: str
    name: str
    applied_at: datetime


@dataclass(frozen=True)
class SchemaState:
    version: str | None
    applied: list[AppliedMigration]
    pending: list[str]


def load_migrations() -> list[Migration]:
    """The migration files shipped in the package, in order."""
    found: list[Migration] = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(match[1], match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {versions}")
    return found


async def apply_migrations(
    conn: DbConnection, migrations: list[Migration] | None = None
) -> list[Migration]:
    """Apply what is pending (all or nothing); return what was applied."""
    migrations = load_migrations() if migrations is None else migrations
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await conn.execute(_CREATE_LEDGER)
        recorded = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for m in migrations:
            if m.version in recorded and recorded[m.version] != m.checksum:
                raise MigrationError(
                    f"migration {m.version}_{m.name}.sql was changed after it was applied; "
                    "add a new migration instead of editing an applied one"
                )
        pending = [m for m in migrations if m.version not in recorded]
        for m in pending:
            try:
                await conn.execute(m.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {m.version}_{m.name}.sql failed: {type(exc).__name__}: {exc}"
                ) from exc
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                m.version,
                m.name,
                m.checksum,
            )
            log.info("applied migration %s_%s", m.version, m.name)
    return pending


async def schema_state(conn: DbConnection) -> SchemaState:
    """Applied migrations (from the ledger) and the shipped ones still pending."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    rows = (
        await conn.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
        if exists
        else []
    )
    applied = [AppliedMigration(r["version"], r["name"], r["applied_at"]) for r in rows]
    done = {a.version for a in applied}
    pending = [m.version for m in load_migrations() if m.version not in done]
    return SchemaState(applied[-1].version if applied else None, applied, pending)
