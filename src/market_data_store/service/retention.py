"""Retention as configured: ``[retention]`` mapped to ``storage.Retention``'s plain
arguments, here only."""

from __future__ import annotations

from market_data_store.config import Settings
from market_data_store.storage import DbPool, Retention, RetentionRule


def retention_rules(settings: Settings) -> list[RetentionRule]:
    """One rule per kind whose retention is set (table name = kind), in this order."""
    r = settings.retention
    kept = {
        "bars": r.bars,
        "options": r.options,
        "quotes": r.quotes,
        "trades": r.trades,
        "fundamentals": r.fundamentals,
        "news": r.news,
    }
    return [RetentionRule(table, keep) for table, keep in kept.items() if keep is not None]


def build_retention(settings: Settings, pool: DbPool) -> Retention:
    """The service's retention: batches of ``retention.batch_rows``, at most
    ``retention.max_seconds`` per apply, each statement within
    ``database.command_timeout``, a connection waited for ``database.connect_timeout``
    (the pool keeps one beside the writers and readers for admin calls)."""
    r, d = settings.retention, settings.database
    return Retention(
        pool,
        retention_rules(settings),
        batch_rows=r.batch_rows,
        max_seconds=r.max_seconds,
        acquire_timeout=d.connect_timeout,
        statement_timeout=d.command_timeout,
    )
