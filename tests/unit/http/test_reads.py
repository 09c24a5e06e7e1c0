"""What a read's query asks for: the format (Accept), gzip, symbols, cursors, limits."""

from __future__ import annotations

import pytest

from market_data_store._util.cursor import MAX_CURSOR_CHARS, decode_cursor, encode_cursor
from market_data_store.http.reads import (
    MAX_SYMBOLS,
    accepts_gzip,
    check_limit,
    cursor_of,
    symbols_of,
    wanted_format,
)
from market_data_store.storage import BARS, SHAPES


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        (None, "rows"),
        ("", "rows"),
        ("application/json", "rows"),
        ("*/*", "rows"),
        ("text/csv", "csv"),
        ("TEXT/CSV; charset=utf-8", "csv"),
        ("application/x-ndjson", "ndjson"),
        ("text/csv;q=0.5, application/x-ndjson", "ndjson"),
        ("application/json;q=0.1, text/csv;q=0.9", "csv"),
        ("text/csv;q=0, application/json", "rows"),
        ("text/csv;q=nonsense, application/json", "rows"),
        ("image/png", "rows"),  # what we do not make is ignored: a JSON page
        ("text/csv, application/x-ndjson", "csv"),  # a tie: the first
    ],
)
def test_the_format_follows_accept(accept: str | None, fmt: str) -> None:
    assert wanted_format(accept) == fmt


@pytest.mark.parametrize(
    ("header", "gzip"),
    [
        (None, False),
        ("identity", False),
        ("gzip", True),
        ("br, GZIP;q=0.5", True),
        ("gzip;q=0", False),
        ("x-gzip", True),
        ("deflate", False),
    ],
)
def test_gzip_when_accepted(header: str | None, gzip: bool) -> None:
    assert accepts_gzip(header) is gzip


def test_symbols_are_trimmed_upper_cased_and_kept_once_in_order() -> None:
    errors: list[dict[str, str]] = []
    assert symbols_of(None, " msft,aapl ,MSFT", errors) == ("MSFT", "AAPL")
    assert symbols_of("ibm", None, errors) == ("IBM",)
    assert symbols_of(None, None, errors) is None
    assert errors == []


def test_every_bad_symbol_is_named() -> None:
    errors: list[dict[str, str]] = []
    symbols_of(None, "A,,\u0410,B C", errors)
    assert [e["key"] for e in errors] == ["symbols[1]", "symbols[2]", "symbols[3]"]
    errors.clear()
    symbols_of(None, ",".join(["A"] * (MAX_SYMBOLS + 1)), errors)
    assert [e["key"] for e in errors] == ["symbols"]
    errors.clear()
    symbols_of("A", "B", errors)
    assert errors == [{"key": "symbols", "message": "give symbol or symbols, not both"}]


def test_a_cursor_round_trips_and_must_fit_its_kind() -> None:
    cursor = encode_cursor(["AAPL", "1m", "2024-01-01T00:00:00+00:00"])
    errors: list[dict[str, str]] = []
    assert cursor_of(cursor, BARS, errors) == ("AAPL", "1m", "2024-01-01T00:00:00+00:00")
    assert cursor_of(None, BARS, errors) is None
    assert errors == []
    for bad in (encode_cursor(["AAPL"]), "!!!", "e30", encode_cursor(["x" * 300] * 3)):
        assert cursor_of(bad, BARS, errors) is None
    assert len(errors) == 4
    assert cursor_of(cursor, SHAPES["quotes"], errors) is None  # another kind's order


@pytest.mark.parametrize(
    "cursor",
    ["", "====", "a" * (MAX_CURSOR_CHARS + 1), "\u00e9", encode_cursor([]), "W10", "bnVsbA"],
)
def test_what_is_not_a_cursor(cursor: str) -> None:
    assert decode_cursor(cursor) is None


def test_limits() -> None:
    errors: list[dict[str, str]] = []
    assert check_limit(None, "rows", errors) == 1000
    assert check_limit(10_000, "rows", errors) == 10_000
    assert check_limit(None, "csv", errors) is None  # an export: every row
    assert check_limit(50_000, "ndjson", errors) == 50_000
    assert errors == []
    check_limit(10_001, "rows", errors)
    assert errors == [{"key": "limit", "message": "at most 10000 in a JSON page"}]
