"""The reads' SQL: resampling rules and buckets (against PostgreSQL's own arithmetic),
one statement per listed symbol from the cursor's on."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from market_data_store.storage import BARS, SHAPES, Bucket, ReadQuery, resample_problem
from market_data_store.storage.reads import statements


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("1m", "5m"), ("1m", "1h"), ("30s", "1m"), ("1h", "1d"), ("1d", "1w"), ("1m", "1w"),
        ("1h", "1mo"), ("1d", "1mo"), ("1mo", "3mo"), ("1mo", "12mo"), ("2d", "4d"),
        ("15m", "1mo"),
    ],
)  # fmt: skip
def test_exact_resamplings(source: str, target: str) -> None:
    assert resample_problem(source, target) is None


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("1m", "1m"), ("1h", "1m"), ("2m", "7m"), ("2d", "1w"), ("3d", "1w"), ("1w", "1mo"),
        ("1mo", "1d"), ("2mo", "3mo"), ("7h", "1mo"), ("1mo", "1mo"), ("1w", "3d"),
    ],
)  # fmt: skip
def test_inexact_resamplings(source: str, target: str) -> None:
    problem = resample_problem(source, target)
    assert problem is not None
    assert source in problem
    assert target in problem


def test_weeks_keep_to_mondays() -> None:
    # weekly bars lie on Mondays: 2w buckets (every other Monday) hold whole ones
    assert resample_problem("1w", "2w") is None
    assert resample_problem("1d", "2w") is None
    # 2-day bars lie on the epoch's grid (a Thursday): a Monday splits some
    assert resample_problem("2d", "1w") is not None


INSTANTS = [
    datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1970, 1, 4, 23, 0, tzinfo=UTC),  # the Sunday before the first Monday
    datetime(1970, 1, 5, tzinfo=UTC),
    datetime(2024, 1, 1, 0, 0, 30, 5, tzinfo=UTC),
    datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC),
    datetime(2024, 12, 31, 12, tzinfo=UTC),
    datetime(1899, 3, 15, 7, 45, tzinfo=UTC),
]


def expected(instant: datetime, target: str) -> datetime:
    """The bucket start by plain arithmetic."""
    count = int(target.rstrip("smhdwo"))
    unit = target[len(str(count)) :]
    if unit == "mo":
        months = (instant.year - 1970) * 12 + instant.month - 1
        start = months - months % count
        return datetime(1970 + start // 12, start % 12 + 1, 1, tzinfo=UTC)
    seconds = count * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    origin = datetime(1970, 1, 5 if unit == "w" else 1, tzinfo=UTC)
    offset = int((instant - origin).total_seconds()) // seconds * seconds
    return origin + (instant - origin).__class__(seconds=offset)


@pytest.mark.parametrize(
    "target", ["1s", "15s", "5m", "1h", "4h", "1d", "3d", "1w", "2w", "1mo", "3mo", "12mo"]
)
async def test_buckets_start_where_arithmetic_says(database_url: str, target: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        sql = Bucket("1s", target).sql("$1::timestamptz")
        for instant in INSTANTS:
            assert await conn.fetchval(f"SELECT {sql}", instant) == expected(instant, target)
    finally:
        await conn.close()


def test_a_list_is_read_symbol_by_symbol_from_the_cursors_on() -> None:
    query = ReadQuery("t", "p", symbols=("MSFT", "AAPL", "IBM"), fixed=("1m",))
    assert len(statements(BARS, query, "rows")) == 3
    after = ReadQuery(
        "t", "p", symbols=("MSFT", "AAPL", "IBM"), fixed=("1m",), after=("AAPL", "1m", "x")
    )
    plan = statements(BARS, after, "rows")
    assert len(plan) == 2  # AAPL from after the cursor, then IBM
    assert "x" in plan[0].args
    assert "x" not in plan[1].args
    gone = ReadQuery("t", "p", symbols=("MSFT",), fixed=("1m",), after=("ZZZ", "1m", "x"))
    assert statements(BARS, gone, "rows") == []  # a cursor of no listed symbol: nothing left


def test_all_symbols_and_news_are_one_statement() -> None:
    assert len(statements(BARS, ReadQuery("t", "p", fixed=("1m",)), "csv")) == 1
    news = ReadQuery("t", "p", symbols=("AAPL", "MSFT"))
    (one,) = statements(SHAPES["news"], news, "ndjson")
    assert "&&" in one.sql
