"""Migrations on a real PostgreSQL: ordered, recorded, idempotent, safe when racing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import pytest

from market_data_store.storage import (
    Migration,
    MigrationError,
    apply_migrations,
    load_migrations,
    schema_state,
)


async def ledger(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
    finally:
        await conn.close()


def test_shipped_migrations_are_ordered_plain_sql() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == ["0001", "0002", "0003", "0004", "0005"]
    assert migrations[0].name == "create_bars"
    assert "CREATE TABLE bars" in migrations[0].sql
    assert len(migrations[0].checksum) == 64


async def test_apply_creates_bars_and_records_each_file(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        applied = await apply_migrations(conn)
        assert [m.version for m in applied] == ["0001", "0002", "0003", "0004", "0005"]
        columns = {
            r["column_name"]: r["data_type"]
            for r in await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'bars'"
            )
        }
        assert columns["ts"] == "timestamp with time zone"
        assert columns["open"] == "numeric"
        assert {"ingested_at", "updated_at", "delayed", "provider"} <= set(columns)
        pk = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'bars'::regclass AND contype = 'p'"
        )
        assert pk == "PRIMARY KEY (provider, symbol, resolution, ts, tenant_id)"
        state = await schema_state(conn)
        assert state.version == "0005"
        assert state.pending == []
    finally:
        await conn.close()


async def test_apply_is_idempotent(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert len(await apply_migrations(conn)) == 5
        assert await apply_migrations(conn) == []
    finally:
        await conn.close()
    assert sorted(await ledger(database_url)) == ["0001", "0002", "0003", "0004", "0005"]


async def test_concurrent_connections_apply_once(database_url: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(apply_migrations(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(len(r) for r in results) == [0, 0, 0, 5]
    assert sorted(await ledger(database_url)) == ["0001", "0002", "0003", "0004", "0005"]


def test_two_processes_migrating_at_once(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    cmd = [sys.executable, "-m", "market_data_store.cli", "migrate"]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    said = sorted(out for out, _ in outputs)
    assert said[0].startswith("schema version 0005: 0001_create_bars, 0002_timescale")
    assert said[1] == "schema version 0005: nothing to apply\n"
    assert sorted(asyncio.run(ledger(database_url))) == ["0001", "0002", "0003", "0004", "0005"]


async def test_failing_migration_rolls_back_entirely(database_url: str) -> None:
    broken = [
        *load_migrations(),
        Migration("0099", "half_done", "CREATE TABLE half (x int); SELECT 1/0;"),
    ]
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(MigrationError, match=r"0099_half_done\.sql failed: DivisionByZero"):
            await apply_migrations(conn, broken)
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert await conn.fetchval("SELECT to_regclass('bars')") is None  # same transaction
    finally:
        await conn.close()


async def test_edited_applied_migration_is_refused(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await apply_migrations(conn)
        first, *rest = load_migrations()
        edited = [Migration(first.version, first.name, first.sql + "\n-- sneaky edit"), *rest]
        with pytest.raises(MigrationError, match="was changed after it was applied"):
            await apply_migrations(conn, edited)
    finally:
        await conn.close()


async def test_bars_stays_plain_without_timescaledb(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await apply_migrations(conn)
        has_timescale = await conn.fetchval(
            "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
        )
        available = await conn.fetchval(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        )
        if not available:
            assert has_timescale == 0
        assert await conn.fetchval("SELECT count(*) FROM bars") == 0
    finally:
        await conn.close()
