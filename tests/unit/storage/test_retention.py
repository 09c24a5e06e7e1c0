"""Retention's rules without a database: periods, cutoffs, what a result says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest

from market_data_store.storage import DbPool, Retention, RetentionResult, RetentionRule
from market_data_store.storage.retention import TABLES, TableRetention, period_of

NOW = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("keep", "period"),
    [
        ("1s", timedelta(seconds=1)),
        ("90m", timedelta(minutes=90)),
        ("36h", timedelta(hours=36)),
        ("365d", timedelta(days=365)),
        ("2w", timedelta(days=14)),
        ("999999w", timedelta(weeks=999999)),
    ],
)
def test_a_period_is_a_count_and_a_unit(keep: str, period: timedelta) -> None:
    assert period_of(keep) == period


@pytest.mark.parametrize("keep", ["", "0d", "01d", "1", "d", "1y", "1.5d", "1000000d", " 1d"])
def test_anything_else_is_not_a_period(keep: str) -> None:
    with pytest.raises(ValueError, match="count and a unit"):
        period_of(keep)


def test_a_rule_names_a_known_table() -> None:
    with pytest.raises(ValueError, match="no retention for table 'candles'"):
        RetentionRule("candles", "1d")
    assert TABLES == ("bars", "options", "quotes", "trades", "fundamentals", "news")
    columns = {t: (RetentionRule(t, "1d").column, RetentionRule(t, "1d").is_date) for t in TABLES}
    assert columns == {
        "bars": ("ts", False), "options": ("ts", False), "quotes": ("timestamp", False),
        "trades": ("ts", False), "fundamentals": ("asof", True), "news": ("published_at", False),
    }  # fmt: skip


def test_the_cutoff_is_now_minus_the_period_in_utc() -> None:
    paris = NOW.astimezone(timezone(timedelta(hours=1)))
    assert RetentionRule("bars", "36h").cutoff(paris) == datetime(2026, 2, 28, 0, 30, tzinfo=UTC)
    assert RetentionRule("bars", "36h").cutoff(paris).tzinfo == UTC


def test_a_date_columns_cutoff_is_its_days_midnight() -> None:
    # 2026-02-28 00:30 -> rows before 2026-02-28 go: the day partly kept is kept
    cutoff = RetentionRule("fundamentals", "36h").cutoff(NOW)
    assert cutoff == datetime(2026, 2, 28, tzinfo=UTC)


def test_a_period_longer_than_the_calendar_keeps_everything() -> None:
    assert RetentionRule("bars", "999999w").cutoff(NOW) == datetime.min.replace(tzinfo=UTC)


def test_a_result_is_complete_when_every_table_is() -> None:
    def table(complete: bool) -> TableRetention:
        return TableRetention("bars", "1d", NOW, 0, complete)

    assert RetentionResult(()).complete
    assert RetentionResult((table(True), table(True))).complete
    assert not RetentionResult((table(True), table(False))).complete


def make(rules: list[RetentionRule], **options: Any) -> Retention:
    arguments: dict[str, Any] = {
        "batch_rows": 10, "max_seconds": 1.0, "acquire_timeout": 1.0, "statement_timeout": 1.0,
        **options,
    }  # fmt: skip
    return Retention(cast(DbPool, None), rules, **arguments)


def test_one_rule_per_table_and_batches_of_one_row_at_least() -> None:
    with pytest.raises(ValueError, match="one retention rule per table"):
        make([RetentionRule("bars", "1d"), RetentionRule("bars", "2d")])
    with pytest.raises(ValueError, match="batch_rows"):
        make([], batch_rows=0)


async def test_without_rules_an_apply_touches_no_database() -> None:
    retention = make([])  # its pool is None: any use would fail
    assert (await retention.apply()).tables == ()
    assert retention.stats.deleted == dict.fromkeys(TABLES, 0)
