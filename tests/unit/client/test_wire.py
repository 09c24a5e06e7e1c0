"""Bars as sent by the client: exact decimal text, MessagePack timestamps, early refusals;
what the store makes of them is what it made of 0.4.0's all-text bars."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from market_data_core import Bar

from market_data_store._util import ThrottledLog
from market_data_store.client import InvalidBarError, wire
from market_data_store.client.wire import (
    MAX_COUNT,
    IngestAnswer,
    WireBar,
    as_dicts,
    decode_answer,
    decode_feedback,
    decode_problem,
    encode_body,
    retry_after,
    server_number,
    to_wire,
)
from market_data_store.ingest import MSGPACK, IngestError
from tests.support import wire_0_4_0
from tests.support.bars import rows_of_body

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
            "AAPL",
            TS,
            Decimal("187.15"),
            Decimal("187.40"),
            Decimal("186.90"),
            Decimal("187.02"),
            Decimal("120034"),
            "1m",
        )
    )


def sent(*bars: Any) -> list[dict[str, Any]]:
    """The bars as the body carries them."""
    body = encode_body("p", [to_wire(bar, i) for i, bar in enumerate(bars)])
    decoded: list[dict[str, Any]] = msgspec.msgpack.decode(body)["bars"]
    return decoded


def test_decimals_go_as_text_with_every_digit_in_plain_notation() -> None:
    [bar] = sent(
        fields(open=Decimal("1.500"), high=Decimal("1E+2"), low=Decimal("0.000000000000000001"))
    )
    assert (bar["open"], bar["high"], bar["low"]) == ("1.500", "100", "0.000000000000000001")
    plain, normalized, zero = sent(
        fields(), Bar(**fields(close=Decimal("1.2E+3"))), fields(volume=Decimal("0E-8"))
    )
    assert plain["close"] == "187.02"
    assert (normalized["open"], normalized["close"]) == ("187.15", "1200")
    assert zero["volume"] == "0.00000000"


def test_text_that_looks_scientific_passes_through() -> None:
    [bar] = sent(fields(symbol="X1E+5", open="1E+2", high=Decimal("1E+2")))
    assert (bar["symbol"], bar["open"], bar["high"]) == ("X1E+5", "1E+2", "100")


def test_numbers_of_other_types_go_as_they_are_or_as_text() -> None:
    bar = to_wire(fields(open=187.15, high=188, low="186.9", volume=0), 0)
    assert (bar.open, bar.high, bar.low, bar.volume) == (187.15, 188, "186.9", 0)
    assert to_wire(fields(volume=2**64), 0).volume == str(2**64)  # beyond MessagePack: text
    assert to_wire(fields(volume=-(2**63) - 1), 0).volume == str(-(2**63) - 1)


def test_times_go_as_messagepack_timestamps_and_text_passes_through() -> None:
    eastern = timezone(timedelta(hours=-5))
    when = datetime(2024, 1, 2, 9, 30, 0, 123456, tzinfo=eastern)
    bar = to_wire(fields(ts=when), 0)
    assert bar.ts is when
    sent = msgspec.msgpack.decode(encode_body("p", [bar]))["bars"][0]["ts"]
    assert sent == datetime(2024, 1, 2, 14, 30, 0, 123456, tzinfo=UTC)
    assert to_wire(fields(ts="2024-01-02T14:30:00+01:00"), 0).ts == "2024-01-02T14:30:00+01:00"


def test_a_bar_of_text_goes_as_it_is() -> None:
    text = {"symbol": "AAPL", "ts": "2024-01-02T14:30:00Z", "open": "1.5", "high": "2",
            "low": "1", "close": "1.75", "volume": "100"}  # fmt: skip
    bar = to_wire(text, 0)
    assert msgspec.structs.astuple(bar) == (
        "AAPL",
        "2024-01-02T14:30:00Z",
        "1.5",
        "2",
        "1",
        "1.75",
        "100",
        "1d",
        False,
    )
    assert to_wire({**text, "resolution": "1m", "delayed": True}, 0).delayed is True
    with pytest.raises(InvalidBarError, match="true or false"):  # text, but not a bool
        to_wire({**text, "delayed": "true"}, 1)


@pytest.mark.parametrize(
    ("bar", "field", "message"),
    [
        (fields(ts=datetime(2024, 1, 2)), "ts", "timezone-aware"),
        (fields(ts=1704205800), "ts", "datetime or RFC 3339"),
        (fields(ts=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))), "ts", "range"),
        (fields(ts=datetime.max.replace(tzinfo=timezone(timedelta(hours=-1)))), "ts", "range"),
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


def fields_of(*names: str) -> dict[str, Any]:
    return {name: value for name, value in fields().items() if name in names}


def test_core_bars_built_without_validation_are_checked_too() -> None:
    with pytest.raises(InvalidBarError, match="bar 2: ts: required"):
        to_wire(Bar.model_construct(**fields_of("symbol")), 2)
    with pytest.raises(InvalidBarError, match="bar 0: open: must be a finite number"):
        to_wire(Bar.model_construct(**fields(open=Decimal("NaN"))), 0)


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


def test_failed_bars_come_back_as_text_as_in_0_4_0() -> None:
    eastern = timezone(timedelta(hours=-5))
    bar = to_wire(fields(ts=TS.astimezone(eastern), open=1.5, high=2, low="0.5"), 0)
    assert as_dicts([bar]) == [
        {
            "symbol": "AAPL",
            "ts": "2024-01-02T14:30:00Z",
            "open": "1.5",
            "high": "2",
            "low": "0.5",
            "close": "187.02",
            "volume": "120034",
            "resolution": "1d",
            "delayed": False,
        }
    ]
    assert to_wire(as_dicts([bar])[0], 0) == WireBar(
        "AAPL", "2024-01-02T14:30:00Z", "1.5", "2", "0.5", "187.02", "120034"
    )


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


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warnings of this test's values (they are throttled per kind for 10 s)."""
    monkeypatch.setattr(wire, "_warn", ThrottledLog(wire.log))


def test_retry_after_header_date_and_body() -> None:
    assert retry_after("3", most=60) == 3.0
    assert retry_after(" 1.5 ", most=60) == 1.5
    later = datetime.now(UTC) + timedelta(seconds=30)
    seconds = retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT"), most=60)
    assert seconds is not None
    assert 25 < seconds <= 30
    earlier = datetime.now(UTC) - timedelta(seconds=30)
    assert retry_after(earlier.strftime("%a, %d %b %Y %H:%M:%S GMT"), most=60) == 0.0
    assert retry_after("soon", {"retry_after": 4}, most=60) == 4.0
    assert retry_after(None, {"retry_after": "3"}, most=60) == 3.0
    assert retry_after(None, {"retry_after": True}, most=60) is None
    assert retry_after(None, most=60) is None


@pytest.mark.parametrize(
    ("header", "problem", "seconds"),
    [
        ("120", None, 60.0),  # cut to the hold's cap
        ("9" * 400, None, 60.0),
        ("1e999", None, 60.0),
        ("-1", None, 0.0),
        ("nan", {"retry_after": 2}, 2.0),  # not a number: the body's
        ("inf", None, None),
        ("Fri, 31 Dec 99999 23:59:59 GMT", None, None),
        ("Fri, 31 Dec 9999 23:59:59 GMT", None, 60.0),
        (None, {"retry_after": 10**400}, 60.0),  # float() of it: OverflowError in 0.5.0
        (None, {"retry_after": -(10**400)}, 0.0),
        (None, {"retry_after": -1.5}, 0.0),
        (None, {"retry_after": [1]}, None),
    ],
)
def test_a_hostile_retry_after_is_clamped_or_ignored_with_a_warning(
    header: str | None,
    problem: dict[str, Any] | None,
    seconds: float | None,
    caplog: pytest.LogCaptureFixture,
    fresh_warnings: None,
) -> None:
    assert retry_after(header, problem, most=60) == seconds
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert len(caplog.records[0].getMessage()) < 200  # the value shown cut


@pytest.mark.parametrize(
    ("value", "number"),
    [
        (5, 5.0),
        (2.5, 2.5),
        (" 7 ", 7.0),
        ("1e1", 10.0),
        (-1, 0.0),
        (10**400, 100.0),
        (-(10**400), 0.0),
        ("9" * 5000, 100.0),
        (math.inf, 100.0),
        (math.nan, None),
        (True, None),
        (None, None),
        ("0x10", None),
        ("1_000", None),
        ("", None),
        ({"a": 1}, None),
    ],
)
def test_server_number_clamps_or_ignores_and_never_raises(
    value: object, number: float | None
) -> None:
    assert server_number(value, "a test value", low=0, high=100) == number


def test_numbers_of_answers_and_events_are_bounded(
    caplog: pytest.LogCaptureFixture, fresh_warnings: None
) -> None:
    huge = b"9" * 400
    answer = decode_answer(
        b'{"accepted":-1,"level":"ok","queue_size":'
        + huge
        + b',"capacity":-5,"credit":'
        + huge
        + b',"committed":-2,"dead_lettered":'
        + huge
        + b"}"
    )
    assert answer is not None
    assert (answer.accepted, answer.queue_size, answer.capacity) == (0, MAX_COUNT, 0)
    assert (answer.credit, answer.committed, answer.dead_lettered) == (MAX_COUNT, 0, MAX_COUNT)
    event = decode_feedback(
        b'{"coordinator_id":"a/bars","queue_size":-8,"capacity":' + huge + b',"level":"hard",'
        b'"utilization":1e300,"drain_rate":-1.5,"credit":-3}',
        "stream",
    )
    assert (event.queue_size, event.capacity, event.credit) == (0, MAX_COUNT, 0)
    assert (event.utilization, event.drain_rate) == (MAX_COUNT, 0.0)
    assert caplog.records
    assert {r.levelname for r in caplog.records} == {"WARNING"}
    sane = b'{"accepted":2,"level":"ok","queue_size":6,"capacity":10,"credit":50}'
    assert decode_answer(sane) == msgspec.json.decode(sane, type=IngestAnswer)


# -- what the store makes of the bars: as of 0.4.0's ------------------------------------


def outcome(body: bytes) -> object:
    """The rows the store builds of ``body``, or its refusal (type, errors)."""
    try:
        return rows_of_body(body, MSGPACK, 10_000)
    except IngestError as exc:
        return type(exc), getattr(exc, "errors", None)


def same_as_0_4_0(written: list[Any]) -> object:
    old = [wire_0_4_0.to_wire(bar, i) for i, bar in enumerate(written)]
    new = [to_wire(bar, i) for i, bar in enumerate(written)]
    result = outcome(encode_body("ibkr", new))
    assert result == outcome(wire_0_4_0.encode_body("ibkr", old))
    assert as_dicts(new) == [msgspec.structs.asdict(b) for b in old]  # failures: 0.4.0's text
    return result


ZONES = [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]


def test_the_store_stores_what_it_stored_of_0_4_0_bars() -> None:
    eastern = ZONES[1]
    written: list[Any] = [
        Bar(**fields()),
        fields(ts=TS.astimezone(eastern) + timedelta(minutes=1), resolution="1m"),
        fields(ts=TS + timedelta(minutes=2, microseconds=1), delayed=True),
        fields(ts="2024-01-02T14:33:00+01:00", open="187.150", volume="7"),
        fields(ts=TS + timedelta(minutes=4), open=187.15, high=188, low=186.9, volume=0),
        fields(ts=TS + timedelta(minutes=5), open=Decimal("1.87E+2"), high=Decimal("1.9E+2")),
        fields(ts=TS + timedelta(minutes=6), volume=Decimal("0E-8"), low=Decimal("1e-18")),
        fields(ts=TS + timedelta(minutes=7), volume=2**64, high=1e19),
        fields(ts=datetime(1900, 2, 3, 4, 5, 6, 7, tzinfo=ZONES[2])),
        fields(ts=datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ]
    assert to_wire(fields(ts=datetime(1, 1, 1, 6, tzinfo=ZONES[2])), 0).ts == "0001-01-01T00:30:00Z"
    rows = same_as_0_4_0(written)
    assert isinstance(rows, list)
    assert len(rows) == len(written)
    refused = same_as_0_4_0(
        [fields(low=Decimal("188")), fields(ts=datetime(1700, 1, 1, tzinfo=UTC))]
    )
    assert isinstance(refused, tuple)
    assert refused[1] is not None
    assert len(refused[1]) == 2


numbers = st.one_of(
    st.decimals(min_value=-(10**21), max_value=10**21, allow_nan=False, places=None),
    st.decimals(min_value=-(10**21), max_value=10**21, allow_nan=False).map(Decimal.normalize),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**21), max_value=10**21),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)
times = st.datetimes(
    min_value=datetime(1790, 1, 1), max_value=datetime(2210, 1, 1), timezones=st.sampled_from(ZONES)
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "symbol": st.sampled_from(["AAPL", "msft", " X ", ""]),
                "ts": st.one_of(times, times.map(lambda t: t.isoformat())),
                "open": numbers,
                "high": numbers,
                "low": numbers,
                "close": numbers,
                "volume": numbers,
                "resolution": st.sampled_from(["1d", "1m", "5x"]),
                "delayed": st.booleans(),
            }
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_bars_mean_to_the_store_what_they_meant_in_0_4_0(written: list[Any]) -> None:
    same_as_0_4_0(written)


TEXT = {"symbol": "AAPL", "ts": "2024-01-02T14:30:00Z", "open": "1.5", "high": "2",
        "low": "1", "close": "1.75", "volume": "100"}  # fmt: skip


@pytest.mark.parametrize(
    "bars",
    [
        [TEXT, {**TEXT, "resolution": "1m", "delayed": True, "extra": "ignored"}],
        [TEXT, fields()],  # one not all text: bar by bar
        [TEXT, Bar(**fields())],  # a Core model among dicts
        [{**TEXT, "delayed": 1}],  # an int is no bool: bar by bar, refused there
        [{**TEXT, "volume": 100}],  # a number, as it is
        (dict(TEXT) for _ in range(2)),  # not a list
    ],
)
def test_a_whole_write_becomes_what_each_bar_would(bars: Any) -> None:
    written = list(bars)
    refused = _refusal(lambda: [to_wire(bar, i) for i, bar in enumerate(written)])
    if refused is not None:
        also = _refusal(lambda: wire.to_wire_all(written))
        assert also is not None
        assert (also.index, also.field) == (refused.index, refused.field)
        return
    each = [to_wire(bar, i) for i, bar in enumerate(written)]
    together = wire.to_wire_all(written)
    assert [msgspec.structs.astuple(b) for b in together] == [
        msgspec.structs.astuple(b) for b in each
    ]
    assert encode_body("p", together) == encode_body("p", each)


def _refusal(action: Callable[[], object]) -> InvalidBarError | None:
    try:
        action()
    except InvalidBarError as refused:
        return refused
    return None


def test_a_write_of_text_dicts_is_refused_where_a_bar_lacks_a_field() -> None:
    with pytest.raises(InvalidBarError) as refused:
        wire.to_wire_all([TEXT, {k: v for k, v in TEXT.items() if k != "close"}])
    assert (refused.value.index, refused.value.field) == (1, "close")
