"""Where test databases come from.

``MDS_TEST_DATABASE_URL`` (set by ``.ci/run``) names a server and a database
owned by this run; without it an embedded PostgreSQL (pgserver) is started for
the session. Each test that needs one gets a brand-new database on that server.
"""

from __future__ import annotations

import hashlib
import os
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import asyncpg

REQUIRE_SERVICES = os.environ.get("MDS_TEST_REQUIRE_SERVICES") == "1"


def start_embedded(data_dir: Path) -> tuple[Any, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # XDG_RUNTIME_DIR unset
        from pgserver.postgres_server import get_server

        server = get_server(data_dir, cleanup_mode="stop")
    return server, str(server.get_uri())


def replace_url(
    url: str,
    *,
    user: str | None = None,
    password: str | None = None,
    database: str | None = None,
) -> str:
    """``url`` with its user, password or database replaced (percent-encoded); the rest
    is kept as written, the query above all: pgserver's URLs name their unix-socket
    folder in it (``postgresql://postgres:@/postgres?host=/tmp/…``), and without it a
    client reaches whatever server listens on the machine's default socket."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    old_user, colon, old_password = userinfo.partition(":")
    if user is not None:
        old_user = quote(user, safe="")
    if password is not None:
        old_password, colon = quote(password, safe=""), ":"
    userinfo = f"{old_user}{colon}{old_password}"
    netloc = f"{userinfo}@{hostport}" if userinfo or at else hostport
    path = parts.path if database is None else "/" + quote(database, safe="")
    query = f"?{parts.query}" if parts.query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{parts.scheme}://{netloc}{path}{query}{fragment}"


def database_of(url: str) -> str:
    """The database a PostgreSQL URL names (its path, decoded; never the query)."""
    return unquote(urlsplit(url).path.removeprefix("/"))


class DatabaseFactory:
    """Creates and drops throw-away databases on one server."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        base = database_of(server_url) or "postgres"
        self.prefix = f"{base[:30]}_t{os.getpid()}"
        self._created: list[str] = []

    async def create(self) -> str:
        name = f"{self.prefix}_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(self.server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self._created.append(name)
        return replace_url(self.server_url, database=name)

    async def drop(self, url: str) -> None:
        """Drop the database and its reader role (migration 0004 makes one per database:
        roles are cluster-wide, and would pile up run after run)."""
        name = database_of(url)
        conn = await asyncpg.connect(self.server_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'DROP ROLE IF EXISTS "{reader_role_of(name)}"')
        finally:
            await conn.close()


def reader_role_of(database: str) -> str:
    """The reader role migration 0004 makes for ``database``."""
    return "mds_reader_" + hashlib.md5(database.encode()).hexdigest()[:16]


async def stored_bars(url: str) -> list[asyncpg.Record]:
    """Every row of ``bars``, read on a connection of its own (not the service's)."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch("SELECT * FROM bars ORDER BY provider, symbol, ts")
    finally:
        await conn.close()


async def count_bars(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM bars"))
    finally:
        await conn.close()


async def stored_at_least(url: str, n: int) -> bool:
    """Whether ``bars`` holds ``n`` rows or more (a condition for ``waits.until``)."""
    return await count_bars(url) >= n


@asynccontextmanager
async def refusing(url: str, table: str, check: str) -> AsyncIterator[None]:
    """While in the block, the database refuses rows of ``table`` that fail ``check``
    (a CHECK constraint ``no_poison`` the service does not know of: a fault caused for
    real, so the rows are dead-lettered with the constraint's name as their reason)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT no_poison CHECK ({check})")
        try:
            yield
        finally:
            await conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT no_poison")
    finally:
        await conn.close()
