"""The pool's background reconnection during an outage: a line, not a traceback storm."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from pathlib import Path

import pytest

from market_data_store.storage.embedded import EmbeddedPostgres
from market_data_store.storage.monitor import DatabaseMonitor
from market_data_store.storage.pool import RECONNECT_LOG, close_pool, open_pool
from tests.support.tcp_proxy import TcpProxy, upstream_of
from tests.support.waits import until

ATTEMPTS = 3  # asyncpg retries after 1, 2, 4... s: three failures within ~3 s


async def test_reconnect_failures_log_one_line_per_outage(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await TcpProxy(upstream_of(database_url)).start()
    url = proxy.url_for(database_url)
    pool = await open_pool(url, min_size=2, max_size=2)
    monitor = DatabaseMonitor(url, timeout=2.0)
    try:
        assert (await monitor.check()).reachable
        caplog.set_level(logging.INFO)
        RECONNECT_LOG.outage_over()
        proxy.cut()  # the pool's connections drop; asyncpg restores its floor, failing
        await until(
            lambda: RECONNECT_LOG.failures >= ATTEMPTS,
            timeout=30,
            what=f"asyncpg trying {ATTEMPTS} times",
            interval=0.1,
        )
        assert RECONNECT_LOG.failures >= ATTEMPTS
        assert not (await monitor.check()).reachable
        proxy.restore()
        assert (await monitor.check()).reachable
    finally:
        await monitor.stop()
        await close_pool(pool)
        await proxy.close()
    from_pool = [r for r in caplog.records if r.name == "asyncpg.pool"]
    assert len(from_pool) == 1, [r.getMessage() for r in from_pool]
    (line,) = from_pool
    assert line.exc_info is None
    assert "\n" not in line.getMessage()
    assert line.getMessage().startswith("database pool lost connections; reconnecting")
    back = [r.getMessage() for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(back) == 1
    assert "reconnection attempt(s)" in back[0]


async def test_an_embedded_database_that_dies_is_said_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bundled server stopped under the service (its postmaster killed or shut
    down): its unix socket is gone, and the log says so in words, no traceback."""
    folder = Path(tempfile.mkdtemp(prefix="mds-pg-"))  # short: the socket lives here
    await asyncio.to_thread(folder.chmod, 0o755)
    pg = EmbeddedPostgres(folder / "data")
    url = await pg.start()
    monitor = DatabaseMonitor(url, timeout=5.0)
    try:
        assert (await monitor.check()).reachable
        caplog.set_level(logging.INFO)
        await pg.stop()
        status = await monitor.check()
    finally:
        await monitor.stop()
        await pg.stop()
        shutil.rmtree(folder, ignore_errors=True)
    assert not status.reachable
    assert status.error == "unreachable"  # the public probes' one word
    assert status.detail == "the database server is not running (its unix socket is gone)"
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in said] == [
        f"database unreachable (unreachable): {status.detail}"
    ]
    assert all(r.exc_info is None for r in said)
