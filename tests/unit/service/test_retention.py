"""``[retention]`` mapped to ``storage.Retention``'s rules and arguments."""

from __future__ import annotations

from typing import cast

from market_data_store.config import load_settings
from market_data_store.service.retention import build_retention, retention_rules
from market_data_store.storage import DbPool, RetentionRule
from market_data_store.storage.retention import TABLES


def test_the_settings_rules_are_the_kinds_set_in_table_order() -> None:
    settings = load_settings(
        {"MDS_RETENTION_NEWS": "52w", "MDS_RETENTION_BARS": "365d", "MDS_RETENTION_BATCH_ROWS": "5"}
    )
    assert retention_rules(settings) == [
        RetentionRule("bars", "365d"),
        RetentionRule("news", "52w"),
    ]
    assert retention_rules(load_settings({})) == []
    built = build_retention(settings, cast(DbPool, None))
    assert [r.table for r in built.rules] == ["bars", "news"]


def test_every_table_has_a_setting() -> None:
    every = {f"MDS_RETENTION_{t.upper()}": "1d" for t in TABLES}
    assert [r.table for r in retention_rules(load_settings(every))] == list(TABLES)
