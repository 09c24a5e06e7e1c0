"""CSV bodies (``text/csv``, a restore of the export): the same rows as JSON bars of the
same values, every problem listed by data row index, the header's columns in any order,
``updated_at`` as the rows' ``received_at``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from market_data_store.ingest import (
    CSV,
    CSV_COLUMNS,
    INLINE_DECODE_BYTES,
    JSON,
    MAX_BAR_BYTES,
    BarDecoder,
    InvalidBodyError,
    MalformedBodyError,
    TooManyBarsError,
)
from market_data_store.ingest.bounds import CsvBound
from market_data_store.ingest.csv_body import CSV_CHUNK_ROWS, FUTURE_RULE, check_row
from market_data_store.storage import BarRow
from tests.support.bars import NOW, rows_of_body, wire_bars

HEADER = ",".join(CSV_COLUMNS)
BASIC = "provider,symbol,resolution,ts,open,high,low,close,volume"
UPDATED = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)


def csv_line(bar: dict[str, Any], provider: str = "ibkr", **extra: str) -> str:
    values = [provider, bar["symbol"], bar.get("resolution", "1d"), bar["ts"]]
    values += [str(bar[name]) for name in ("open", "high", "low", "close", "volume")]
    values += extra.values()
    return ",".join(values)


def body(*lines: str, header: str = BASIC, end: str = "\n") -> bytes:
    return (end.join((header, *lines)) + end).encode()


def errors_of(data: bytes, limit: int = 100) -> list[tuple[int | None, str, str]]:
    with pytest.raises(InvalidBodyError) as caught:
        rows_of_body(data, CSV, limit)
    return [(e.index, e.field, e.message) for e in caught.value.errors]


def json_errors(bars: list[dict[str, Any]]) -> list[tuple[int | None, str, str]]:
    with pytest.raises(InvalidBodyError) as caught:
        rows_of_body(msgspec.json.encode({"provider": "ibkr", "bars": bars}), JSON, 100)
    return [(e.index, e.field, e.message) for e in caught.value.errors]


# -- the same rows as JSON ----------------------------------------------------------


@pytest.mark.parametrize("n", [3, 2 * CSV_CHUNK_ROWS + 5])
def test_the_rows_of_json_bars_and_of_their_csv_are_the_same(n: int) -> None:
    """Without updated_at the rows are accepted now, as JSON bars are: equal rows, on
    the exact check (no symbol known) and on the fast path (known)."""
    bars = wire_bars(
        n,
        symbol=lambda i: ["aapl", " MSFT ", "brk.b"][i % 3],
        ts=lambda i: (
            ["2024-01-02T14:30:00+01:00", "2024-01-02T14:30:00Z"][i % 2]
            if i < 4
            else f"2024-01-03T00:00:00.{i:06d}Z"
        ),
        open=lambda i: ["187.15", "1E+2", "0.000001", "-3"][i % 4],
        high=lambda i: ["187.40", "100", "0.00001", "0"][i % 4],
        low=lambda i: ["186.90", "99.5", "0", "-3.5"][i % 4],
        close=lambda i: ["187.02", "100", "0.000001", "-3"][i % 4],
        volume=lambda i: str(i),
        resolution=lambda i: ["1m", "1d", "5m"][i % 3],
        delayed=lambda i: i % 2 == 0,
    )
    as_json = rows_of_body(msgspec.json.encode({"provider": " ibkr ", "bars": bars}), JSON, n)
    lines = [csv_line(bar, " ibkr ", delayed="true" if bar["delayed"] else "false") for bar in bars]
    as_csv = rows_of_body(body(*lines, header=BASIC + ",delayed"), CSV, n)
    assert as_csv == as_json
    assert as_csv[1].open == "100"  # 1E+2 written out, as JSON's


def test_an_export_restores_as_it_was_written() -> None:
    """The export's exact text: columns in its order, fractions of updated_at, prices
    as PostgreSQL prints them; updated_at is the row's received_at."""
    data = (
        f"{HEADER}\n"
        "ibkr,AAPL,1m,2024-01-02T03:04:05Z,101.50,102.00,101.00,101.60,1200,false,"
        "2025-06-01T12:00:00.123456Z\n"
        'ibkr,"A,B",1d,2024-01-02T03:04:05.5Z,0.000001,1,0,1,0,true,2025-06-01T12:00:00Z\n'
    ).encode()
    first, second = rows_of_body(data, CSV, 10)
    assert first == BarRow(
        "ibkr", "AAPL", "1m", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        "101.50", "102.00", "101.00", "101.60", "1200", False, UPDATED,
    )  # fmt: skip
    assert (second.symbol, second.delayed, second.ts.microsecond) == ("A,B", True, 500000)
    assert second.received_at == datetime(2025, 6, 1, 12, tzinfo=UTC)


def test_columns_in_any_order_and_the_optional_ones_left_out() -> None:
    line = "ibkr,AAPL,1m,2024-01-02T03:04:05Z,1,2,0.5,1.5,10"
    expected = rows_of_body(body(line), CSV, 10)
    assert expected[0].received_at == NOW
    assert expected[0].delayed is False
    shuffled = "volume,close,low,high,open,ts,resolution,symbol,provider"
    reversed_line = ",".join(reversed(line.split(",")))
    assert rows_of_body(body(reversed_line, header=shuffled), CSV, 10) == expected
    with_updated = rows_of_body(
        body("2025-06-01T14:00:00.123456+02:00," + line, header="updated_at," + BASIC), CSV, 10
    )
    assert with_updated[0].received_at == UPDATED  # in UTC
    assert with_updated[0].received_at.tzinfo is UTC


@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_crlf_a_byte_order_mark_blank_lines_and_quotes(end: str) -> None:
    lines = ['"ibkr","aapl","1m","2024-01-02T03:04:05Z","1","2","0.5","1.5","10"', "", ""]
    data = (
        b"\xef\xbb\xbf" + b"\n" + body(*lines, "ibkr,x,1m,2024-01-02T03:04:05Z,1,1,1,1,1", end=end)
    )
    rows = rows_of_body(data, CSV, 10)
    assert [row.symbol for row in rows] == ["AAPL", "X"]
    quoted = body('"i ""b"" k",AAPL,1m,2024-01-02T03:04:05Z,1,1,1,1,1', end=end)
    assert rows_of_body(quoted, CSV, 10)[0].provider == 'i "b" k'


def test_the_latest_updated_at_of_a_key_given_twice_is_kept() -> None:
    header = BASIC + ",updated_at"
    old = "ibkr,AAPL,1m,2024-01-02T03:04:05Z,1,1,1,1,1,2025-06-02T00:00:00Z"
    new = "ibkr,aapl,1m,2024-01-02T04:04:05+01:00,2,2,2,2,2,2025-06-03T00:00:00Z"
    later_line = "ibkr,AAPL,1m,2024-01-02T03:04:05Z,3,3,3,3,3,2025-06-03T00:00:00Z"
    (row,) = rows_of_body(body(new, old, header=header), CSV, 10)
    assert row.open == "2"  # the later updated_at, though given first
    (row,) = rows_of_body(body(new, later_line, header=header), CSV, 10)
    assert row.open == "3"  # the same updated_at: the later row
    other = "other,AAPL,1m,2024-01-02T03:04:05Z,1,1,1,1,1,2025-06-02T00:00:00Z"
    assert len(rows_of_body(body(old, other, header=header), CSV, 10)) == 2  # providers


def test_rows_are_the_tenants() -> None:
    data = body("ibkr,AAPL,1m,2024-01-02T03:04:05Z,1,1,1,1,1")
    (row,) = BarDecoder().rows_of(data, CSV, 10, NOW, tenant="desk-a")
    assert row.tenant == "desk-a"


# -- every problem listed ---------------------------------------------------------


def test_the_bar_rules_give_the_errors_json_gives() -> None:
    """The same bars, bad in every way JSON can say of a value: the same (index, field,
    message) list."""
    bars = wire_bars(
        6,
        symbol=lambda i: ["AAPL", "", "A B", "AAPL", "AAPL", "ÄAPL"][i],
        ts=lambda i: ["2024-01-02T14:30:00Z", "1799-12-31T23:59:59Z", "2024-01-02T14:30:00",
                      "2024-13-01T00:00:00Z", "2199-12-31T23:59:59.9999999Z", "x"][i],
        high=lambda i: ["1", "187.40", "1.0000000000000000001", "1E+21", "nan", "+1"][i],
        volume=lambda i: ["120034", "-1", "1e", "0", " 1", "1_0"][i],
        resolution=lambda i: ["1m", "0m", "1y", "10000mo", "1m", "1m"][i],
    )  # fmt: skip
    expected = json_errors(bars)
    assert len(expected) > 12
    assert errors_of(body(*(csv_line(bar) for bar in bars))) == sorted(
        expected, key=lambda e: (e[0], [*CSV_COLUMNS].index(e[1]))
    )


def test_every_row_problem_is_listed_by_data_row_index() -> None:
    good = "ibkr,AAPL,1m,2024-01-02T03:04:05Z,1,1,1,1,1"
    lines = [
        good,
        "",  # blank lines are not rows
        "ibkr,AAPL,1m,2024-01-02T03:04:05Z,1,1,1",  # 1: too few fields
        good + ",1",  # 2: too many
        'ibkr,"AAPL,1m,2024-01-02T03:04:05Z,1,1,1,1,1',  # 3: an unterminated quote
        'ibkr,"AA"PL,1m,2024-01-02T03:04:05Z,1,1,1,1,1',  # 4: a quote inside a value
        "ibkr,AAPL,1m,2024-01-02T03:04:05Z,1,1,1,1," + "1" * MAX_BAR_BYTES,  # 5: too long
        "ib\tkr,AAPL,1m,2024-01-02T03:04:05Z,1,1,1,1,1",  # 6: a control character
        "ibkr,AAPL,1m,2024-01-02T03:04:05Z,1,1,1,1,1\rx",  # 7: a lone carriage return
        good,
    ]
    found = errors_of(body(*lines))
    assert [(index, field) for index, field, _ in found] == [
        (1, "$"), (2, "$"), (3, "$"), (4, "$"), (5, "$"), (6, "provider"), (7, "$"),
    ]  # fmt: skip
    assert found[0][2] == "7 fields; the header row names 9"
    assert found[1][2] == "10 fields; the header row names 9"
    assert "not valid CSV" in found[2][2]
    assert "at most 1024 bytes" in found[4][2]


def test_delayed_and_updated_at_rules() -> None:
    header = BASIC + ",delayed,updated_at"
    base = "ibkr,AAPL,1m,2024-01-02T03:04:05Z,1,1,1,1,1"
    lines = [
        base + ",yes,2025-06-01T00:00:00Z",
        base + ",true,2025-06-01T00:00:00",
        base + ",false,1799-12-31T23:59:59Z",
        base + ",false,2026-01-01T00:00:00.000001Z",  # a microsecond after now (NOW)
        base + ",false,",
        base + ",,not a time",
    ]
    assert errors_of(body(*lines, header=header)) == [
        (0, "delayed", "must be true or false"),
        (1, "updated_at", "must include a timezone (e.g. 2024-01-02T14:30:00Z)"),
        (2, "updated_at", "must be from 1800-01-01T00:00:00Z to before 2200-01-01T00:00:00Z "
                          "(after rounding to microseconds)"),
        (3, "updated_at", FUTURE_RULE),
        (4, "updated_at", "invalid RFC3339 encoded datetime"),
        (5, "delayed", "must be true or false"),
        (5, "updated_at", "invalid RFC3339 encoded datetime"),
    ]  # fmt: skip
    now = base + ",false,2026-01-01T00:00:00Z"  # exactly now: accepted
    assert rows_of_body(body(now, header=header), CSV, 10)[0].received_at == NOW


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (BASIC + ",timeframe", [(None, "timeframe", "unknown column")]),
        (BASIC + ",symbol", [(None, "symbol", "column named twice in the header row")]),
        (BASIC.replace(",volume", ""), [(None, "volume", "required column missing")]),
        ("Provider" + BASIC[8:], [(None, "Provider", "unknown"), (None, "provider", "required")]),
        (BASIC + ",", [(None, "", "unknown column")]),
        ('provider,"symbol', [(None, "$", "the header row is not valid CSV")]),
    ],
)
def test_a_bad_header_is_every_column_named(
    header: str, expected: list[tuple[None, str, str]]
) -> None:
    found = errors_of(body("ibkr,AAPL,1m,2024-01-02T03:04:05Z,1,1,1,1,1", header=header))
    assert [(index, field) for index, field, _ in found] == [(i, f) for i, f, _ in expected]
    for (_, _, message), (_, _, start) in zip(found, expected, strict=True):
        assert message.startswith(start), message


@pytest.mark.parametrize("data", [b"", b"\n\r\n\n", (BASIC + "\n\n").encode()])
def test_no_header_or_no_rows_is_422(data: bytes) -> None:
    ((index, field, message),) = errors_of(data)
    assert (index, field) == (None, "$")
    assert "header row" in message


def test_more_errors_are_counted_beyond_those_shown() -> None:
    lines = ["ibkr,AAPL,1m,2024-01-02T03:04:05Z,1,1,1,1,-1"] * 1500
    with pytest.raises(InvalidBodyError) as caught:
        rows_of_body(body(*lines), CSV, 2000)
    assert caught.value.total == 1500
    assert len(caught.value.errors) == 100
    assert caught.value.errors[-1].index == 99


def test_not_utf8_is_400() -> None:
    with pytest.raises(MalformedBodyError, match="UTF-8"):
        rows_of_body(BASIC.encode() + b"\nibkr,\xff", CSV, 10)


def test_check_row_is_the_exact_check() -> None:
    values = ["p", "s", "1m", "2024-01-02T03:04:05Z", "1", "2", "0", "1", "5"]
    named = dict(zip(BASIC.split(","), values, strict=True))
    row = check_row(named, NOW, "t")
    assert isinstance(row, BarRow)
    assert (row.symbol, row.tenant, row.received_at) == ("S", "t", NOW)
    assert check_row({**named, "low": "3"}, NOW) == [("low", "must be <= min(open, close)")]


# -- bounds -----------------------------------------------------------------------


def test_more_rows_than_the_cap_are_413() -> None:
    lines = [f"ibkr,AAPL,1m,2024-01-02T03:{i // 60:02d}:{i % 60:02d}Z,1,1,1,1,1" for i in range(11)]
    assert len(rows_of_body(body(*lines[:10]), CSV, 10)) == 10
    with pytest.raises(TooManyBarsError, match="11 bars in one request; at most 10"):
        rows_of_body(body(*lines), CSV, 10)


def test_the_line_count_refuses_a_body_as_it_arrives() -> None:
    bound = CsvBound(10)
    bound.feed(b"\n" * 75)  # the header, 10 rows, 64 blank lines
    with pytest.raises(TooManyBarsError, match="76 lines"):
        bound.feed(b"\n")
    with pytest.raises(TooManyBarsError, match="bytes"):
        CsvBound(10).feed(b"x" * (64 * 1024 + 1024 + 1))  # one line may be a bar at most


async def pieces(data: bytes, size: int, read: list[int]) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        read.append(len(data[at : at + size]))
        yield data[at : at + size]
        await asyncio.sleep(0)


async def test_a_body_over_the_cap_is_refused_as_it_arrives_and_read_to_its_end() -> None:
    data = body(*["ibkr,AAPL,1m,2024-01-02T03:04:05Z,1,1,1,1,1"] * 200)
    read: list[int] = []
    with pytest.raises(TooManyBarsError, match="lines in the body"):
        await BarDecoder().rows(pieces(data, 100, read), CSV, 10)
    assert sum(read) == len(data)


async def test_a_large_body_is_decoded_in_steps_as_the_one_in_memory() -> None:
    start = datetime(2024, 1, 2, tzinfo=UTC)
    lines = [
        f"p{i % 3},S{i % 7},1m,{(start + timedelta(minutes=i)).isoformat()},1,2,0.5,1.5,{i},"
        f"{'true' if i % 2 else 'false'},2025-06-01T00:00:00Z"
        for i in range(3000)
    ]
    data = body(*lines, header=HEADER)
    assert len(data) > INLINE_DECODE_BYTES
    decoder = BarDecoder()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    rows = await decoder.rows(pieces(data, 65536, []), CSV, 5000)
    ticker.cancel()
    assert rows == decoder.rows_of(data, CSV, 5000, NOW)  # updated_at: no clock in them
    assert len(rows) == 3000
    assert ticks >= 3000 // CSV_CHUNK_ROWS  # the loop ran between the steps


def test_an_error_in_one_chunk_keeps_the_indices_of_all() -> None:
    lines = [f"ibkr,AAPL,1m,2024-01-02T00:00:00Z,1,1,1,1,{i}" for i in range(3 * CSV_CHUNK_ROWS)]
    lines[CSV_CHUNK_ROWS + 7] = lines[CSV_CHUNK_ROWS + 7].replace(",1,1,1,1,", ",1,1,2,1,")
    lines.insert(5, "")  # a blank line moves no index
    found = errors_of(body(*lines), 10_000)
    assert found == [(CSV_CHUNK_ROWS + 7, "low", "must be <= min(open, close)")]


@pytest.mark.parametrize("extra", [",true", ",true,2024-06-01T00:00:00Z", ","])
def test_fields_beyond_the_header_are_refused_on_the_fast_path_too(extra: str) -> None:
    # no quote anywhere in the chunk (the fast path): the row of more fields than the
    # header names must not fill the columns the header leaves out
    lines = ["ibkr,XTRA,1m,2024-01-02T00:00:07Z,1,2,0.5,1.5,10" + extra]
    found = errors_of(body(*lines))
    assert [(index, field) for index, field, _ in found] == [(0, "$")]
    assert found[0][2].endswith("fields; the header row names 9")
