"""Bars as sent by the client: exact decimal text, RFC 3339 UTC times, early refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from market_data_core import Bar

from market_data_store.client import InvalidBarError
from market_data_store.client.wire import (
    WireBar,
    as_dicts,
    decode_answer,
    decode_feedback,
    decode_problem,
    encode_body,
    retry_after,
    to_wire,
)

TS = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def fields(**overrides: Any) -> dict[str, Any]:
    bar: dict[str, Any] = {
        "symbol": "AAPL",
        "ts": TS,
        "open": Decimal("187.15"),
        "high": Decimal("187.40"),
        "low": Decimal("186.90"),
        "close": Decimal("187.02"),
        "volume": Decimal("120034"),
    }
    bar.update(overrides)
    return bar


def test_core_bar_and_dict_become_the_same_wire_bar() -> None:
    from_model = to_wire(Bar(**fields(), resolution="1m"), 0)
    from_dict = to_wire(fields(resolution="1m"), 0)
    assert (
        from_model
        == from_dict
        == WireBar(
            "AAPL", "2024-01-02T14:30:00Z", "187.15", "187.40", "186.90", "187.02", "120034", "1m"
        )
    )


def test_decimals_keep_every_digit_in_plain_notation() -> None:
    bar = to_wire(
        fields(open=Decimal("1.500"), high=Decimal("1E+2"), low=Decimal("0.000000000000000001")),
        0,
    )
    assert (bar.open, bar.high, bar.low) == ("1.500", "100", "0.000000000000000001")


def test_numbers_of_other_types() -> None:
    bar = to_wire(fields(open=187.15, high=188, low="186.9", volume=0), 0)
    assert (bar.open, bar.high, bar.low, bar.volume) == ("187.15", "188", "186.9", "0")


def test_times_in_other_zones_are_sent_in_utc_and_text_passes_through() -> None:
    eastern = timezone(timedelta(hours=-5))
    bar = to_wire(fields(ts=datetime(2024, 1, 2, 9, 30, 0, 123456, tzinfo=eastern)), 0)
    assert bar.ts == "2024-01-02T14:30:00.123456Z"
    assert to_wire(fields(ts="2024-01-02T14:30:00+01:00"), 0).ts == "2024-01-02T14:30:00+01:00"


@pytest.mark.parametrize(
    ("bar", "field", "message"),
    [
        (fields(ts=datetime(2024, 1, 2)), "ts", "timezone-aware"),
        (fields(ts=1704205800), "ts", "datetime or RFC 3339"),
        (fields(open=Decimal("NaN")), "open", "finite"),
        (fields(high=float("inf")), "high", "finite"),
        (fields(volume=True), "volume", "boolean"),
        (fields(close=[1]), "close", "decimal string or a number"),
        (fields(symbol=7), "symbol", "string"),
        (fields(resolution=1), "resolution", "string"),
        (fields(delayed="no"), "delayed", "true or false"),
        ({k: v for k, v in fields().items() if k != "low"}, "low", "required"),
    ],
)
def test_bars_that_can_never_be_sent_are_refused_at_once(
    bar: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidBarError) as info:
        to_wire(bar, 3)
    assert (info.value.index, info.value.field) == (3, field)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_other_objects_are_refused() -> None:
    with pytest.raises(InvalidBarError, match=r"bar 0: \$: a Core Bar or a mapping"):
        to_wire(("AAPL", TS), 0)  # type: ignore[arg-type]


def test_body_is_msgpack_with_defaults_left_out() -> None:
    bar = to_wire(fields(delayed=True), 0)
    body = msgspec.msgpack.decode(encode_body("ibkr", [bar, to_wire(fields(), 1)]))
    assert body["provider"] == "ibkr"
    assert body["bars"][0]["delayed"] is True
    assert "delayed" not in body["bars"][1]
    assert "resolution" not in body["bars"][1]  # "1d", the store's default too
    assert as_dicts([bar])[0]["delayed"] is True


def test_answers_feedback_and_problems_decode() -> None:
    answer = decode_answer(
        b'{"accepted":2,"level":"soft","queue_size":6,"capacity":10,"coordinator_id":"a/bars"}'
    )
    assert answer is not None
    assert (answer.accepted, answer.level, answer.coordinator_id) == (2, "soft", "a/bars")
    assert decode_answer(b"<html>") is None
    event = decode_feedback(
        b'{"coordinator_id":"a/bars","queue_size":8,"capacity":10,"level":"hard",'
        b'"source":"store","ts":1.5,"reason":null,"utilization":0.8}',
        "refusal",
    )
    assert (event.level, event.via, event.utilization) == ("hard", "refusal", 0.8)
    assert decode_problem(422, b'{"status":422,"errors":[]}') == {"status": 422, "errors": []}
    assert decode_problem(502, b"<h1>Bad gateway</h1>") == {
        "status": 502,
        "detail": "<h1>Bad gateway</h1>",
    }
    assert decode_problem(502, b"") == {"status": 502, "detail": "HTTP 502"}


def test_retry_after_header_date_and_body() -> None:
    assert retry_after("3") == 3.0
    assert retry_after(" 1.5 ") == 1.5
    later = datetime.now(UTC) + timedelta(seconds=30)
    seconds = retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert seconds is not None
    assert 25 < seconds <= 30
    assert retry_after("soon", {"retry_after": 4}) == 4.0
    assert retry_after("-1") is None
    assert retry_after(None, {"retry_after": True}) is None
    assert retry_after(None) is None
