"""Operator routes behind the admin bearer token: schema version, migrations."""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency

from market_data_store.storage import DbPool, apply_migrations, schema_state

from ..guards import admin_token_guard


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

    @get("/schema/version", summary="Applied and pending schema migrations")
    async def schema_version(self, db_pool: NamedDependency[DbPool]) -> SchemaVersionBody:
        async with db_pool.acquire() as conn:
            state = await schema_state(conn)
        return SchemaVersionBody(
            state.version,
            [AppliedMigrationBody(a.version, a.name, a.applied_at) for a in state.applied],
            state.pending,
        )

    @post("/migrate", summary="Apply pending migrations", status_code=200)
    async def migrate(self, db_pool: NamedDependency[DbPool]) -> MigrateBody:
        async with db_pool.acquire() as conn:
            applied = await apply_migrations(conn)
            state = await schema_state(conn)
        return MigrateBody([f"{m.version}_{m.name}" for m in applied], state.version)
