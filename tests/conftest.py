"""Shared fixtures (helpers live in tests/support)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from market_data_store.coordinator import FeedbackBus, feedback_bus
from tests.support.feedback import Recorder
from tests.support.postgres import REQUIRE_SERVICES, DatabaseFactory, start_embedded
from tests.support.redis_server import shared_redis
from tests.support.tcp_proxy import TcpProxy, upstream_of


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def bus(recorder: Recorder) -> FeedbackBus:
    """A private bus with ``recorder`` subscribed."""
    b = FeedbackBus()
    b.subscribe(recorder)
    return b


@pytest.fixture
def fresh_bus() -> Iterator[FeedbackBus]:
    """The process default bus, emptied before and after the test: only for tests of
    what goes through it (``feedback_bus()``, queues and broadcasters given no bus);
    any other test takes ``bus``, a private one."""
    b = feedback_bus()
    b._subs.clear()
    yield b
    b._subs.clear()


# -- PostgreSQL -----------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A PostgreSQL server for the session: the CI one, or an embedded one."""
    url = os.environ.get("MDS_TEST_DATABASE_URL")
    if url:
        yield url
        return
    if REQUIRE_SERVICES:
        pytest.fail("MDS_TEST_REQUIRE_SERVICES=1 but MDS_TEST_DATABASE_URL is not set")
    # not under pytest's base temp: another pytest session of this user (a second
    # checkout's suite) prunes old base temps, and the server's data with them
    with tempfile.TemporaryDirectory(prefix="mds-test-pg-") as folder:
        server, uri = start_embedded(Path(folder) / "data")
        try:
            yield uri
        finally:
            server.cleanup()


@pytest.fixture(scope="session")
def db_factory(pg_server_url: str) -> DatabaseFactory:
    return DatabaseFactory(pg_server_url)


@pytest.fixture
async def database_url(db_factory: DatabaseFactory) -> AsyncIterator[str]:
    """A brand-new, empty database for this test."""
    url = await db_factory.create()
    try:
        yield url
    finally:
        await db_factory.drop(url)


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of this test's database, to cut or hang it for real."""
    p = await TcpProxy(upstream_of(database_url)).start()
    yield p
    await p.close()


# -- Redis ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis for the session: the CI one, or a private ``redis-server``."""
    with (
        tempfile.TemporaryDirectory(prefix="mds-test-redis-") as folder,
        shared_redis(Path(folder)) as url,
    ):
        yield url
