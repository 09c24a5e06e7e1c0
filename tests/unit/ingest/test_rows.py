"""Rows of valid bars (``ingest.rows``): the fast path and the exact check agree, every
problem of every bar is reported, a key sent twice keeps its last bar."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from market_data_store.ingest import CHUNK_BARS, JSON, BarDecoder, InvalidBodyError
from market_data_store.ingest import errors as ingest_errors
from tests.support.bars import NOW, peak_bytes, rows_of_payload
from tests.support.bars import one_bar_body as body


def test_valid_bar_becomes_a_row() -> None:
    (row,) = rows_of_payload(body())
    assert (row.provider, row.symbol, row.resolution) == ("ibkr", "MSFT", "1d")
    assert row.ts == datetime(2024, 1, 2, 13, 30, tzinfo=UTC)
    assert (row.open, row.volume, row.delayed, row.received_at) == ("10", "5", False, NOW)


@pytest.mark.parametrize("offset", ["+23:59", "-23:59", "+16:00", "-00:00", "+05:30"])
def test_timestamps_leave_in_utc(offset: str) -> None:
    (row,) = rows_of_payload(body(ts=f"2024-01-02T14:30:00{offset}"))
    assert row.ts.tzinfo is UTC
    assert row.ts == datetime.fromisoformat(f"2024-01-02T14:30:00{offset}")


@pytest.mark.parametrize("long_values", [False, True])
def test_fast_and_exact_checks_agree(long_values: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every combination of prices around the edges the fast path decides with floats
    (ties, values equal as floats but not as decimals, equal values written
    differently), in one request: every bar gets the verdict ``Decimal`` gives, and a
    valid one keeps its value. With long values in the request, every bar takes the
    exact path."""
    base = ["100.25", "100.250", "100.2500000000001", "-0", "0", "9007199254740993",
            "9007199254740992", "12345678901234567"]  # fmt: skip
    volumes = ["0", "-0", "-1", "12.5", "1" * 19]
    if long_values:
        base += ["99999999999999999999", "100000000000000000000", "100.25000000000000001"]
        volumes.append("1" * 21)
    bars: list[dict[str, Any]] = []
    for i, (o, h, lo, c) in enumerate(itertools.product(base, repeat=4)):
        bars.append({"symbol": "X", "ts": "2024-01-02T00:00:00Z", "open": o, "high": h,
                     "low": lo, "close": c, "volume": volumes[i % len(volumes)],
                     "resolution": "1m"})  # fmt: skip
    invalid = set()
    for index, bar in enumerate(bars):
        do, dh, dl, dc, dv = (Decimal(bar[k]) for k in ("open", "high", "low", "close", "volume"))
        if not (dl <= min(do, dc) and dh >= max(do, dc) and dv >= 0 and max(dh, dv) < 10**20):
            invalid.add(index)
    assert 100 < len(invalid) < len(bars) - 100
    monkeypatch.setattr(ingest_errors, "MAX_REPORTED_ERRORS", len(bars) * 10)  # keep them all
    with pytest.raises(InvalidBodyError) as info:
        rows_of_payload({"provider": "p", "bars": bars}, limit=100_000)
    assert {e.index for e in info.value.errors} == invalid
    valid = [{**bar, "ts": f"2024-01-02T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"}
             for i, bar in enumerate(bars) if i not in invalid]  # fmt: skip
    rows = rows_of_payload({"provider": "p", "bars": valid}, limit=100_000)
    assert len(rows) == len(valid)
    for bar, row in zip(valid, rows, strict=True):
        for key in ("open", "high", "low", "close", "volume"):
            assert Decimal(getattr(row, key)) == Decimal(bar[key])


def test_errors_of_many_bars_are_all_reported() -> None:
    payload = body()
    payload["bars"] = [payload["bars"][0], {**payload["bars"][0], "low": "20"}, payload["bars"][0]]
    payload["bars"].append({**payload["bars"][0], "volume": "-3", "resolution": "7y"})
    with pytest.raises(InvalidBodyError) as info:
        rows_of_payload(payload)
    assert [(e.index, e.field) for e in info.value.errors] == [
        (1, "low"),
        (3, "resolution"),
        (3, "volume"),
    ]


def test_a_key_sent_twice_keeps_its_last_bar_across_chunks() -> None:
    """Symbol, resolution and ts make the key; the later bar in the request wins, in
    the place of the first."""
    bars = [body(ts=f"2024-01-02T00:{i % 60:02d}:00Z", volume=str(i))["bars"][0]
            for i in range(CHUNK_BARS + 60)]  # fmt: skip
    rows = rows_of_payload({"provider": "p", "bars": bars}, limit=1000)
    assert [row.ts.minute for row in rows] == list(range(60))  # first sent first
    last = {i % 60: str(i) for i in range(CHUNK_BARS, CHUNK_BARS + 60)}  # in the last chunk
    assert {row.ts.minute: row.volume for row in rows} == last


def test_a_full_request_costs_a_small_multiple_of_its_body() -> None:
    """What the service runs holds the body, a raw view per bar and the rows: no typed
    copy of every bar besides them (a typed copy of the whole request peaked at ~7.7x)."""
    bars = [
        {
            **body()["bars"][0],
            "symbol": f"S{i % 500}",
            "ts": f"2024-01-02T{i // 60 % 24:02d}:{i % 60:02d}:00Z",
            "open": "101.25",
            "high": "102.5",
            "low": "100.75",
            "close": "101.5",
            "volume": "12345",
            "resolution": "1m",
        }
        for i in range(10_000)
    ]
    data = msgspec.json.encode({"provider": "p", "bars": bars})
    decoder = BarDecoder()
    assert len(decoder.rows_of(data, JSON, 10_000, NOW)) == 10_000
    assert peak_bytes(lambda: decoder.rows_of(data, JSON, 10_000, NOW)) < 5 * len(data)
