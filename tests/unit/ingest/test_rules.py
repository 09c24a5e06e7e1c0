"""The value rules of a bar (``ingest.rules``), as the service applies them to bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from market_data_store.ingest import JSON, MSGPACK, SYMBOL_RULE, BarIn, InvalidBodyError
from market_data_store.ingest.rules import check_bar
from tests.support.bars import one_bar_body as body
from tests.support.bars import rows_of_payload


def test_check_bar_answers_the_stored_form_or_every_problem() -> None:
    """Without decoding: a valid bar's stored form (symbol trimmed and upper-cased, ts
    in UTC, numbers in positional notation), or each broken rule by field."""
    ts = datetime.fromisoformat("2024-01-02T14:30:00+01:00")
    assert check_bar(BarIn(" msft ", ts, "1E+1", "12", "9", "11", 5)) == (
        "MSFT", "1d", datetime(2024, 1, 2, 13, 30, tzinfo=UTC), "10", "12", "9", "11", "5"
    )  # fmt: skip
    naive = datetime(2024, 1, 2)
    assert check_bar(BarIn("", naive, "10", "9", "12", "11", "-1", resolution="1y")) == [
        ("symbol", SYMBOL_RULE),
        ("ts", "must include a timezone (e.g. 2024-01-02T14:30:00Z)"),
        ("resolution", "must be <n><s|m|h|d|w|mo>, e.g. 1m, 5m, 1h, 1d, 1mo"),
        ("volume", "must be >= 0"),
        ("low", "must be <= min(open, close)"),
        ("high", "must be >= max(open, close)"),
    ]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("1E+2", "100"),
        ("100.00", "100.00"),
        (1e2, "100.0"),
        ("0.000000000000000001", "0.000000000000000001"),
        ("1e-18", "0.000000000000000001"),
    ],
)
def test_unusual_but_valid_numbers_pass_the_slow_path(given: Any, stored: str) -> None:
    (row,) = rows_of_payload(body(open=given, close=given, high="1000", low="0", volume=given))
    assert row.open == stored
    assert Decimal(row.open) == Decimal(str(given))


@pytest.mark.parametrize(
    "value", [True, None, [], {}, "", "abc", "1.2.3", "--1", "nan", "Infinity"]
)
def test_what_is_not_a_number_is_refused(value: Any) -> None:
    with pytest.raises(InvalidBodyError) as info:
        rows_of_payload(body(open=value))
    assert [(e.index, e.field) for e in info.value.errors] == [(0, "open")]


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamps_at_the_ends_of_the_calendar_are_refused(ts: str) -> None:
    payload = body(ts=ts)
    payload["bars"] = [body()["bars"][0], payload["bars"][0]]  # the fast path's request
    with pytest.raises(InvalidBodyError) as info:
        rows_of_payload(payload)
    assert [(e.index, e.field) for e in info.value.errors] == [(1, "ts")]


def test_huge_integers_are_refused_without_converting_them() -> None:
    with pytest.raises(InvalidBodyError) as info:
        rows_of_payload(body(volume=10**600, open=-(10**21)))
    assert [(e.field, e.message) for e in info.value.errors] == [
        ("open", "must be below 10^20 in magnitude"),
        ("volume", "must be below 10^20 in magnitude"),
    ]


@pytest.mark.parametrize(
    "symbol", ["\u0410\u0410PL", "\uff21\uff21\uff30\uff2c", "stra\u00dfe", "A\u00a0B", "\u00c4"]
)
def test_symbols_are_printable_ascii(symbol: str) -> None:
    payload = body(symbol=symbol)
    payload["bars"].insert(0, body()["bars"][0])  # the fast path's request too
    with pytest.raises(InvalidBodyError) as info:
        rows_of_payload(payload)
    assert [(e.index, e.field) for e in info.value.errors] == [(1, "symbol")]


@pytest.mark.parametrize(
    "provider", ["\uff49\uff42\uff4b\uff52", "\u0399bkr", "ibkr\u200b", "\u3000"]
)
def test_providers_are_printable_ascii(provider: str) -> None:
    with pytest.raises(InvalidBodyError) as info:
        rows_of_payload({**body(), "provider": provider})
    assert [(e.index, e.field) for e in info.value.errors] == [(None, "provider")]


@pytest.mark.parametrize(
    "text", [" 5", "5 ", "+5", "1_000", "\u0665", "05", "00.5", ".5", "5.", "0x10", "5e", "١٢"]
)
@pytest.mark.parametrize("media_type", [JSON, MSGPACK])
def test_number_strings_follow_the_json_number_grammar(text: str, media_type: str) -> None:
    payload = body(volume=text)
    payload["bars"].insert(0, body()["bars"][0])
    with pytest.raises(InvalidBodyError) as info:
        rows_of_payload(payload, media_type)
    assert [(e.index, e.field) for e in info.value.errors] == [(1, "volume")]


@pytest.mark.parametrize(
    ("given", "stored"), [("1E+2", "100"), ("-0", "-0"), ("0.50", "0.50"), ("2e-18", "2E-18")]
)
def test_number_strings_in_the_grammar_are_accepted(given: str, stored: str) -> None:
    (row,) = rows_of_payload(body(volume=given, low="0", high="100"))
    assert Decimal(row.volume) == Decimal(given)


@pytest.mark.parametrize("symbol", ["\u001cAAPL", "\tAAPL\n", "AAPL\r", "\x7fAAPL", "AA\x00PL"])
def test_control_characters_in_symbols_are_refused_not_stripped(symbol: str) -> None:
    payload = body(symbol=symbol)
    payload["bars"].insert(0, body()["bars"][0])
    with pytest.raises(InvalidBodyError) as info:
        rows_of_payload(payload)
    assert [(e.index, e.field) for e in info.value.errors] == [(1, "symbol")]


@pytest.mark.parametrize("provider", ["\u001cp", "\tibkr", "ibkr\n", " ibkr\x0b "])
def test_control_characters_in_providers_are_refused_not_stripped(provider: str) -> None:
    with pytest.raises(InvalidBodyError) as info:
        rows_of_payload({**body(), "provider": provider})
    assert [(e.index, e.field) for e in info.value.errors] == [(None, "provider")]


def test_surrounding_spaces_are_trimmed() -> None:
    (row,) = rows_of_payload({**body(symbol="  aapl "), "provider": "  ibkr  "})
    assert (row.provider, row.symbol) == ("ibkr", "AAPL")


def test_a_timestamp_rounded_up_to_2200_is_refused_with_the_exact_rule() -> None:
    with pytest.raises(InvalidBodyError) as info:
        rows_of_payload(body(ts="2199-12-31T23:59:59.9999999Z"))
    ((error,),) = [info.value.errors]
    assert error.field == "ts"
    assert "before 2200-01-01T00:00:00Z" in error.message
    assert "rounding" in error.message
    (row,) = rows_of_payload(body(ts="2199-12-31T23:59:59.999999Z"))
    assert row.ts.year == 2199
