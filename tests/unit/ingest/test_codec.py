"""Request decoding and validation without HTTP: fast path and slow path agree."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from market_data_store.ingest import codec as bars_input
from market_data_store.ingest.codec import (
    JSON,
    MAX_REPORTED_ERRORS,
    MSGPACK,
    InvalidBody,
    MalformedBody,
    TooManyBars,
    decode,
    rows_of,
    to_rows,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def body(**bar: Any) -> dict[str, Any]:
    base = {"symbol": "msft", "ts": "2024-01-02T14:30:00+01:00", "open": "10", "high": "12",
            "low": "9", "close": "11", "volume": "5"}  # fmt: skip
    return {"provider": " ibkr ", "bars": [{**base, **bar}]}


def both(data: bytes, media_type: str, limit: int) -> list[Any]:
    """``to_rows(decode(...))``, checked to agree with what the service runs
    (``rows_of``: ``rows_in_steps`` run to the end): the same rows, or the same
    exception with the same errors."""
    outcomes: list[Any] = []
    computes: tuple[Callable[[], list[Any]], ...] = (
        lambda: to_rows(decode(data, media_type, limit), NOW),
        lambda: rows_of(data, media_type, limit, NOW),
    )
    for compute in computes:
        try:
            outcomes.append(compute())
        except (InvalidBody, MalformedBody, TooManyBars) as exc:
            errors = getattr(exc, "errors", None)
            outcomes.append((type(exc), str(exc), errors, getattr(exc, "total", None), exc))
    first, second = outcomes
    if isinstance(first, tuple):
        assert isinstance(second, tuple), second
        assert first[:4] == second[:4]
        raise first[4]
    assert first == second
    return first  # type: ignore[no-any-return]


def rows_of_payload(payload: dict[str, Any], media_type: str = JSON, limit: int = 100) -> list[Any]:
    encode = msgspec.json.encode if media_type == JSON else msgspec.msgpack.encode
    return both(encode(payload), media_type, limit)


def test_valid_bar_becomes_a_row() -> None:
    (row,) = rows_of_payload(body())
    assert (row.provider, row.symbol, row.resolution) == ("ibkr", "MSFT", "1d")
    assert row.ts == datetime(2024, 1, 2, 13, 30, tzinfo=UTC)
    assert (row.open, row.volume, row.delayed, row.received_at) == ("10", "5", False, NOW)


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


def test_json_numbers_keep_their_literal_text() -> None:
    raw = (
        b'{"provider": "p", "bars": [{"symbol": "A", "ts": "2024-01-02T00:00:00Z",'
        b' "open": 10.10, "high": 12.000000000000000001, "low": 9, "close": 11.5,'
        b' "volume": 123456789012345678901e-2}]}'
    )
    (row,) = both(raw, JSON, 10)
    assert (row.open, row.high, row.low, row.close) == (
        "10.10",
        "12.000000000000000001",
        "9",
        "11.5",
    )
    assert row.volume == "1234567890123456789.01"


@pytest.mark.parametrize("offset", ["+23:59", "-23:59", "+16:00", "-00:00", "+05:30"])
def test_timestamps_leave_in_utc(offset: str) -> None:
    (row,) = rows_of_payload(body(ts=f"2024-01-02T14:30:00{offset}"))
    assert row.ts.tzinfo is UTC
    assert row.ts == datetime.fromisoformat(f"2024-01-02T14:30:00{offset}")


@pytest.mark.parametrize(
    "value", [True, None, [], {}, "", "abc", "1.2.3", "--1", "nan", "Infinity"]
)
def test_what_is_not_a_number_is_refused(value: Any) -> None:
    with pytest.raises(InvalidBody) as info:
        rows_of_payload(body(open=value))
    assert [(e.index, e.field) for e in info.value.errors] == [(0, "open")]


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
    monkeypatch.setattr(bars_input, "MAX_REPORTED_ERRORS", len(bars) * 10)  # keep them all
    with pytest.raises(InvalidBody) as info:
        rows_of_payload({"provider": "p", "bars": bars}, limit=100_000)
    assert {e.index for e in info.value.errors} == invalid
    valid = [{**bar, "ts": f"2024-01-02T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"}
             for i, bar in enumerate(bars) if i not in invalid]  # fmt: skip
    rows = rows_of_payload({"provider": "p", "bars": valid}, limit=100_000)
    assert len(rows) == len(valid)
    for bar, row in zip(valid, rows, strict=True):
        for key in ("open", "high", "low", "close", "volume"):
            assert Decimal(getattr(row, key)) == Decimal(bar[key])


def test_msgpack_numbers_decode_exactly() -> None:
    (row,) = rows_of_payload(body(open=10.1, close=11.25, high=12, low=9), MSGPACK)
    assert (row.open, row.close, row.high) == ("10.1", "11.25", "12")


def test_errors_of_many_bars_are_all_reported() -> None:
    payload = body()
    payload["bars"] = [payload["bars"][0], {**payload["bars"][0], "low": "20"}, payload["bars"][0]]
    payload["bars"].append({**payload["bars"][0], "volume": "-3", "resolution": "7y"})
    with pytest.raises(InvalidBody) as info:
        rows_of_payload(payload)
    assert [(e.index, e.field) for e in info.value.errors] == [
        (1, "low"),
        (3, "resolution"),
        (3, "volume"),
    ]


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (b"[" * 100_000 + b"]" * 100_000, JSON),
        (b'{"provider": "x", "pad": ' + b"[" * 50_000 + b"]" * 50_000 + b', "bars": []}', JSON),
        (b"\x91" * 100_000 + b"\xc0", MSGPACK),
    ],
)
def test_deeply_nested_bodies_are_refused_before_they_are_decoded(
    data: bytes, media_type: str
) -> None:
    """Larger than the bars they may hold (none): 413 without parsing them."""
    with pytest.raises(TooManyBars, match="for at most 0 bar"):
        both(data, media_type, 10)


@pytest.mark.parametrize(
    ("data", "media_type"),
    [(b"[" * 500 + b"]" * 500, JSON), (b"\x91" * 1000 + b"\xc0", MSGPACK)],
)
def test_deeply_nested_small_bodies_are_a_client_error_not_a_crash(
    data: bytes, media_type: str
) -> None:
    with pytest.raises((MalformedBody, InvalidBody)):
        both(data, media_type, 10)


def test_empty_bars_and_bad_provider_are_both_reported() -> None:
    with pytest.raises(InvalidBody) as info:
        rows_of_payload({"provider": " ", "bars": []})
    assert {(e.index, e.field) for e in info.value.errors} == {(None, "provider"), (None, "bars")}
    with pytest.raises(InvalidBody) as info:
        both(msgspec.json.encode({"provider": 1, "bars": []}), JSON, 10)
    assert {(e.index, e.field) for e in info.value.errors} == {(None, "provider"), (None, "bars")}


def test_limits_and_malformed_bodies() -> None:
    with pytest.raises(TooManyBars):
        both(msgspec.json.encode({"provider": "p", "bars": [body()["bars"][0]] * 3}), JSON, 2)
    with pytest.raises(TooManyBars):  # counted on the slow path too
        both(msgspec.json.encode({"provider": "p", "bars": [{"open": "x"}] * 3}), JSON, 2)
    with pytest.raises(MalformedBody):
        both(b"[", JSON, 10)


def test_mangled_bodies_only_ever_raise_client_errors() -> None:
    """Seeded fuzzing: truncations, byte flips, swapped values. Any other exception
    would surface as a 500."""
    import random

    rng = random.Random(20261126)
    good = [
        msgspec.json.encode(body()),
        msgspec.msgpack.encode(body()),
        msgspec.json.encode(body(open=1e308, close=-0.0, ts=0, resolution=None)),
    ]
    replacements: list[Any] = [None, 0, -1, 1e400, "", "x", [], {}, True, "9" * 400, 2**70]
    seen = 0
    for _ in range(3000):
        base = rng.choice(good)
        media = MSGPACK if base is good[1] else JSON
        kind = rng.randrange(3)
        if kind == 0:
            data = base[: rng.randrange(len(base))]
        elif kind == 1:
            mutable = bytearray(base)
            for _ in range(rng.randrange(1, 4)):
                mutable[rng.randrange(len(mutable))] = rng.randrange(256)
            data = bytes(mutable)
        else:
            payload = body()
            bar = payload["bars"][0]
            bar[rng.choice(list(bar))] = rng.choice(replacements)
            data = msgspec.json.encode(payload)
            media = JSON
        try:
            both(data, media, 10)
        except (InvalidBody, MalformedBody, TooManyBars):
            seen += 1
    assert seen > 1000  # most mutations are indeed refused


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamps_at_the_ends_of_the_calendar_are_refused(ts: str) -> None:
    payload = body(ts=ts)
    payload["bars"] = [body()["bars"][0], payload["bars"][0]]  # the fast path's request
    with pytest.raises(InvalidBody) as info:
        rows_of_payload(payload)
    assert [(e.index, e.field) for e in info.value.errors] == [(1, "ts")]


@pytest.mark.parametrize("media_type", [JSON, MSGPACK])
def test_a_nested_price_is_a_422_never_a_500(media_type: str) -> None:
    """A price nested as deep as a bar's size allows, or deeper (the bar is then not
    decoded at all): still the client's mistake, reported, never a 500."""
    ways: tuple[Callable[[bytes], list[Any]], ...] = (
        lambda data: to_rows(decode(data, media_type, 10), NOW),
        lambda data: rows_of(data, media_type, 10, NOW),
    )
    padding = [body()["bars"][0]] * 8  # room in the body for one over-size bar
    for rows in ways:
        outcomes: list[tuple[int, str]] = []
        for depth in range(300, 1100, 7):
            if media_type == JSON:  # built by hand: encoders refuse such depths themselves
                placeholder, nested = b'"X"', b"[" * depth + b"1" + b"]" * depth
                payload = body(open="X")
                payload["bars"] += padding
                data = msgspec.json.encode(payload).replace(placeholder, nested)
            else:
                placeholder, nested = b"\xa1X", b"\x91" * depth + b"\x01"
                payload = body(open="X")
                payload["bars"] += padding
                data = msgspec.msgpack.encode(payload).replace(placeholder, nested, 1)
            try:
                rows(data)
            except (MalformedBody, InvalidBody) as exc:  # 400 (deeper than decoded) or 422
                fields = [(e.index, e.field) for e in getattr(exc, "errors", [])]
                outcomes.append((depth, "400" if isinstance(exc, MalformedBody) else str(fields)))
        # 400: deeper than the decoder reads at all (its own depth limit)
        assert {o for _, o in outcomes} == {str([(0, "open")]), str([(0, "$")]), "400"}


def test_msgpack_field_names_that_are_not_strings_are_a_422() -> None:
    payload = body()
    payload["bars"][0][1] = "x"
    with pytest.raises(InvalidBody) as info:
        both(msgspec.msgpack.encode(payload), MSGPACK, 10)
    assert [(e.index, e.field, e.message) for e in info.value.errors] == [
        (0, "$", "field names must be strings")
    ]


def test_huge_integers_are_refused_without_converting_them() -> None:
    with pytest.raises(InvalidBody) as info:
        rows_of_payload(body(volume=10**600, open=-(10**21)))
    assert [(e.field, e.message) for e in info.value.errors] == [
        ("open", "must be below 10^20 in magnitude"),
        ("volume", "must be below 10^20 in magnitude"),
    ]


def test_unknown_bar_and_top_level_fields_are_each_named() -> None:
    payload: dict[str, Any] = body(timeframe="1m")
    payload["bars"].append({**body()["bars"][0], "foo": 1, "bar": [2]})
    payload["extra"] = True
    with pytest.raises(InvalidBody) as info:
        rows_of_payload(payload)
    assert {(e.index, e.field) for e in info.value.errors} == {
        (None, "extra"),
        (0, "timeframe"),
        (1, "foo"),
        (1, "bar"),
    }
    assert all("unknown field" in e.message for e in info.value.errors)


@pytest.mark.parametrize("media_type", [JSON, MSGPACK])
def test_a_mistyped_field_does_not_hide_other_bars_errors(media_type: str) -> None:
    good = body()["bars"][0]
    bars = [good, {**good, "open": []}, {**good, "low": "20"}, {**good, "timeframe": "1m"},
            {**good, "ts": 5, "symbol": "\uff21"}, good]  # fmt: skip
    with pytest.raises(InvalidBody) as info:
        rows_of_payload({"provider": "p", "bars": bars}, media_type)
    assert [(e.index, e.field) for e in info.value.errors] == [
        (1, "open"),
        (2, "low"),
        (3, "timeframe"),
        (4, "ts"),
        (4, "symbol"),
    ]


@pytest.mark.parametrize(
    "symbol", ["\u0410\u0410PL", "\uff21\uff21\uff30\uff2c", "stra\u00dfe", "A\u00a0B", "\u00c4"]
)
def test_symbols_are_printable_ascii(symbol: str) -> None:
    payload = body(symbol=symbol)
    payload["bars"].insert(0, body()["bars"][0])  # the fast path's request too
    with pytest.raises(InvalidBody) as info:
        rows_of_payload(payload)
    assert [(e.index, e.field) for e in info.value.errors] == [(1, "symbol")]


@pytest.mark.parametrize(
    "provider", ["\uff49\uff42\uff4b\uff52", "\u0399bkr", "ibkr\u200b", "\u3000"]
)
def test_providers_are_printable_ascii(provider: str) -> None:
    with pytest.raises(InvalidBody) as info:
        rows_of_payload({**body(), "provider": provider})
    assert [(e.index, e.field) for e in info.value.errors] == [(None, "provider")]


@pytest.mark.parametrize(
    "text", [" 5", "5 ", "+5", "1_000", "\u0665", "05", "00.5", ".5", "5.", "0x10", "5e", "١٢"]
)
@pytest.mark.parametrize("media_type", [JSON, MSGPACK])
def test_number_strings_follow_the_json_number_grammar(text: str, media_type: str) -> None:
    payload = body(volume=text)
    payload["bars"].insert(0, body()["bars"][0])
    with pytest.raises(InvalidBody) as info:
        rows_of_payload(payload, media_type)
    assert [(e.index, e.field) for e in info.value.errors] == [(1, "volume")]


@pytest.mark.parametrize(
    ("given", "stored"), [("1E+2", "100"), ("-0", "-0"), ("0.50", "0.50"), ("2e-18", "2E-18")]
)
def test_number_strings_in_the_grammar_are_accepted(given: str, stored: str) -> None:
    (row,) = rows_of_payload(body(volume=given, low="0", high="100"))
    assert Decimal(row.volume) == Decimal(given)


def _peak_bytes(action: Any) -> int:
    import tracemalloc

    tracemalloc.start()
    with contextlib.suppress(InvalidBody, TooManyBars):
        action()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize(
    "element",
    [b"{}", b"1", b'"x"', b"[]", b'{"symbol":"A"}', msgspec.json.encode(body()["bars"][0])],
)
def test_over_cap_bodies_are_refused_before_they_are_decoded(element: bytes) -> None:
    """A body with far more elements than the cap costs a small multiple of its own
    size, not tens of Python objects per element (counted by tracemalloc, not timed)."""
    count = max(300_000, 4_000_000 // len(element))
    data = b'{"provider":"p","bars":[' + b",".join([element] * count) + b"]}"
    with pytest.raises(TooManyBars):
        both(data, JSON, 1000)
    assert _peak_bytes(lambda: decode(data, JSON, 1000)) < len(data)
    packed = msgspec.msgpack.encode(
        {"provider": "p", "bars": [msgspec.json.decode(element)] * count}
    )
    with pytest.raises(TooManyBars):
        both(packed, MSGPACK, 1000)
    assert _peak_bytes(lambda: decode(packed, MSGPACK, 1000)) < len(packed)


def test_the_errors_of_a_body_full_of_bad_bars_are_counted_not_kept() -> None:
    data = b'{"provider":"p","bars":[' + b",".join([b"{}"] * 20_000) + b"]}"
    with pytest.raises(InvalidBody) as info:
        both(data, JSON, 50_000)
    assert info.value.total == 20_000 * 7  # seven required fields missing in each
    assert len(info.value.errors) == MAX_REPORTED_ERRORS
    # the raw bytes of each bar (a 48-byte object) and a little: never a dict per bar
    assert _peak_bytes(lambda: decode(data, JSON, 50_000)) < 2 * len(data) + 100 * 20_000


def test_a_full_request_costs_a_small_multiple_of_its_body() -> None:
    """What the service runs holds the body, a raw view per bar and the rows: no typed
    copy of every bar besides them (``to_rows(decode(...))`` peaks at ~7.7x)."""
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
    assert len(rows_of(data, JSON, 10_000, NOW)) == 10_000
    assert _peak_bytes(lambda: rows_of(data, JSON, 10_000, NOW)) < 5 * len(data)


def test_an_over_size_bar_is_a_422_for_that_bar_without_decoding_it() -> None:
    """A MessagePack price holding an array of zeros (the attack: 33M of them) is not
    decoded into a list and printed: its bar is refused by its size alone."""
    payload = body(open="X")
    payload["bars"] += [body()["bars"][0]] * 8  # room in the body for one over-size bar
    data = msgspec.msgpack.encode(payload).replace(
        b"\xa1X", b"\xdd" + (3000).to_bytes(4, "big") + b"\x00" * 3000, 1
    )
    with pytest.raises(InvalidBody) as info:
        both(data, MSGPACK, 10)
    assert [(e.index, e.field, e.message) for e in info.value.errors] == [
        (0, "$", f"a bar may take at most {bars_input.MAX_BAR_BYTES} bytes; not decoded")
    ]


@pytest.mark.parametrize("media_type", [JSON, MSGPACK])
def test_a_body_larger_than_its_bars_may_be_is_a_413_before_decoding(media_type: str) -> None:
    """One bar holding millions of zeros (MessagePack), digits or whitespace (JSON):
    refused by the body's size against the bars it may hold, nothing parsed."""
    n = 3_000_000
    if media_type == JSON:
        bar = msgspec.json.encode(body()["bars"][0])
        datas = [
            b'{"provider": "p", "bars": [' + bar + b" " * n + b"]}",
            b'{"provider": "p", "bars": [' + bar[:-1] + b', "x": ' + b"1" * n + b"}]}",
        ]
    else:
        huge = b"\xdd" + n.to_bytes(4, "big") + b"\x00" * n
        datas = [msgspec.msgpack.encode(body(open="X")).replace(b"\xa1X", huge, 1)]
    for data in datas:
        peak = _peak_bytes(lambda data=data: _refused(data, media_type))
        assert peak < n // 10


def _refused(data: bytes, media_type: str) -> None:
    with pytest.raises(TooManyBars, match="for at most 1 bar"):
        both(data, media_type, 10)


@pytest.mark.parametrize("media_type", [JSON, MSGPACK])
def test_a_body_full_of_over_size_bars_stays_bounded(media_type: str) -> None:
    """The 422-for-everything path: every bar over the size cap, each refused by its
    size (not decoded), the body bound holding the total."""
    bar = body(symbol="A" * 2000)["bars"][0]
    payload = {"provider": "p", "bars": [bar] * 3 + [body()["bars"][0]] * 6}
    encode = msgspec.json.encode if media_type == JSON else msgspec.msgpack.encode
    with pytest.raises(InvalidBody) as info:
        both(encode(payload), media_type, 10)
    assert [(e.index, e.field) for e in info.value.errors] == [(0, "$"), (1, "$"), (2, "$")]


@pytest.mark.parametrize("symbol", ["\u001cAAPL", "\tAAPL\n", "AAPL\r", "\x7fAAPL", "AA\x00PL"])
def test_control_characters_in_symbols_are_refused_not_stripped(symbol: str) -> None:
    payload = body(symbol=symbol)
    payload["bars"].insert(0, body()["bars"][0])
    with pytest.raises(InvalidBody) as info:
        rows_of_payload(payload)
    assert [(e.index, e.field) for e in info.value.errors] == [(1, "symbol")]


@pytest.mark.parametrize("provider", ["\u001cp", "\tibkr", "ibkr\n", " ibkr\x0b "])
def test_control_characters_in_providers_are_refused_not_stripped(provider: str) -> None:
    with pytest.raises(InvalidBody) as info:
        rows_of_payload({**body(), "provider": provider})
    assert [(e.index, e.field) for e in info.value.errors] == [(None, "provider")]


def test_surrounding_spaces_are_trimmed() -> None:
    (row,) = rows_of_payload({**body(symbol="  aapl "), "provider": "  ibkr  "})
    assert (row.provider, row.symbol) == ("ibkr", "AAPL")


def test_a_timestamp_rounded_up_to_2200_is_refused_with_the_exact_rule() -> None:
    with pytest.raises(InvalidBody) as info:
        rows_of_payload(body(ts="2199-12-31T23:59:59.9999999Z"))
    ((error,),) = [info.value.errors]
    assert error.field == "ts"
    assert "before 2200-01-01T00:00:00Z" in error.message
    assert "rounding" in error.message
    (row,) = rows_of_payload(body(ts="2199-12-31T23:59:59.999999Z"))
    assert row.ts.year == 2199
