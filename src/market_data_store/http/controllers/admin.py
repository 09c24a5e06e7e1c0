"""Operator routes behind the admin bearer token: schema version, migrations."""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency

from market_data_store.config import Settings
from market_data_store.storage import DbPool, apply_migrations, connection, schema_state

from ..guards import admin_token_guard
from ..problems import problem_responses

ADMIN_ERRORS = problem_responses(
    s401="No valid admin bearer token (`WWW-Authenticate: Bearer`)",
    s503="The database cannot be used right now; retry after `Retry-After`",
)


class AppliedMigrationBody(msgspec.Struct):
    version: str
    name: str
    applied_at: datetime


class SchemaVersionBody(msgspec.Struct):
    version: str | None
    applied: list[AppliedMigrationBody]
    pending: list[str]


class MigrateBody(msgspec.Struct):
    applied: list[str]
    version: str | None


class AdminController(Controller):
    path = "/admin"
    guards = [admin_token_guard]
    tags = ["admin"]
    security = [{"BearerToken": []}]

    @get("/schema/version", summary="Applied and pending schema migrations", responses=ADMIN_ERRORS)
    async def schema_version(
        self, db_pool: NamedDependency[DbPool], settings: NamedDependency[Settings]
    ) -> SchemaVersionBody:
        async with connection(db_pool, timeout=settings.database.connect_timeout) as conn:
            state = await schema_state(conn)
        return SchemaVersionBody(
            state.version,
            [AppliedMigrationBody(a.version, a.name, a.applied_at) for a in state.applied],
            state.pending,
        )

    @post(
        "/migrate",
        summary="Apply pending migrations",
        description="All pending migrations in one transaction: all applied, or none.",
        status_code=200,
        responses=ADMIN_ERRORS,
    )
    async def migrate(
        self, db_pool: NamedDependency[DbPool], settings: NamedDependency[Settings]
    ) -> MigrateBody:
        async with connection(db_pool, timeout=settings.database.connect_timeout) as conn:
            applied = await apply_migrations(conn)
            state = await schema_state(conn)
        return MigrateBody([f"{m.version}_{m.name}" for m in applied], state.version)
