"""``service.components``: the service's parts without HTTP (what ``mds-store migrate``,
benchmarks and embedding code use), and its one-line start-up errors."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from market_data_store.service import StartupError, components, migrate, open_database
from market_data_store.storage import BARS, Migration, ReadQuery, apply_migrations, load_migrations
from tests.support.bars import rows
from tests.support.service import service_settings
from tests.support.waits import until

SECRET = "hunter2-Qx7"


async def test_components_store_bars_and_end_in_order_without_http(
    database_url: str, tmp_path: Path
) -> None:
    settings = service_settings(database_url, str(tmp_path))
    async with components(settings) as built:
        # database up, breaker closed: the first check may miss the tests' 0.1 s health
        # timeout on a loaded machine (a fresh connection); the next one, 0.1 s on, counts
        await until(lambda: built.health_sources.render("readiness")[1], what="readiness")
        assert built.feedback_fanout.snapshot()  # the coordinator's level, published at start
        await built.coordinator.submit_many(rows(3))
        await built.coordinator.wait_idle()
        page = await built.reader.page(
            BARS, ReadQuery("default", "ibkr", symbols=("AAPL",), fixed=("1m",), limit=10)
        )
        assert len(page.rows) == 3
        assert page.after is None
        assert not built.lifecycle.shutting_down
    # leaving: shutdown announced first, then everything stopped, the pool closed last
    assert built.lifecycle.shutting_down
    assert built.coordinator.queue.closed
    assert built.db_pool.is_closing()


async def test_two_services_in_one_process_share_no_state(
    database_url: str, tmp_path: Path
) -> None:
    settings = service_settings(database_url, str(tmp_path))
    async with components(settings) as one, components(settings) as two:
        for part in ("feedback_bus", "coordinator", "bar_decoder", "health_sources", "lifecycle"):
            assert getattr(one, part) is not getattr(two, part), part
        assert one.bar_decoder.known is not two.bar_decoder.known
        assert one.bar_decoder.clock is not two.bar_decoder.clock


async def test_a_failing_migration_is_one_redacted_line(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration whose SQL fails (for real, in PostgreSQL) with a URL in its words:
    ``migrate`` (and so ``serve`` and ``mds-store migrate``) says it in one line, the
    password masked."""
    bad = Migration(
        "9999",
        "bad",
        f"DO $$ BEGIN RAISE EXCEPTION 'see postgresql://u:{SECRET}@db.example/x'; END $$;",
    )
    monkeypatch.setattr(
        "market_data_store.service.database.apply_migrations",
        functools.partial(apply_migrations, migrations=[*load_migrations(), bad]),
    )
    settings = service_settings(database_url, str(tmp_path))
    async with open_database(settings, pool_size=1) as db:
        with pytest.raises(StartupError) as failed:
            await migrate(db.pool, settings)
    message = str(failed.value)
    assert SECRET not in message
    assert "postgresql://u:***@db.example/x" in message
    assert "\n" not in message
