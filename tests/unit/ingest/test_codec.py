"""Decoding bodies (``ingest.codec``): numbers kept exact, and a body or bar that does
not type re-read field by field, every problem named; never anything but a client error."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from market_data_store.ingest import (
    JSON,
    MAX_REPORTED_ERRORS,
    MSGPACK,
    BarDecoder,
    InvalidBodyError,
    MalformedBodyError,
    TooManyBarsError,
)
from tests.support.bars import NOW, peak_bytes, rows_of_body, rows_of_payload
from tests.support.bars import one_bar_body as body


def test_json_numbers_keep_their_literal_text() -> None:
    raw = (
        b'{"provider": "p", "bars": [{"symbol": "A", "ts": "2024-01-02T00:00:00Z",'
        b' "open": 10.10, "high": 12.000000000000000001, "low": 9, "close": 11.5,'
        b' "volume": 123456789012345678901e-2}]}'
    )
    (row,) = rows_of_body(raw, JSON, 10)
    assert (row.open, row.high, row.low, row.close) == (
        "10.10",
        "12.000000000000000001",
        "9",
        "11.5",
    )
    assert row.volume == "1234567890123456789.01"


def test_msgpack_numbers_decode_exactly() -> None:
    (row,) = rows_of_payload(body(open=10.1, close=11.25, high=12, low=9), MSGPACK)
    assert (row.open, row.close, row.high) == ("10.1", "11.25", "12")


@pytest.mark.parametrize(
    ("data", "media_type"),
    [(b"[" * 500 + b"]" * 500, JSON), (b"\x91" * 1000 + b"\xc0", MSGPACK)],
)
def test_deeply_nested_small_bodies_are_a_client_error_not_a_crash(
    data: bytes, media_type: str
) -> None:
    with pytest.raises((MalformedBodyError, InvalidBodyError)):
        rows_of_body(data, media_type, 10)


def test_empty_bars_and_bad_provider_are_both_reported() -> None:
    with pytest.raises(InvalidBodyError) as info:
        rows_of_payload({"provider": " ", "bars": []})
    assert {(e.index, e.field) for e in info.value.errors} == {(None, "provider"), (None, "bars")}
    with pytest.raises(InvalidBodyError) as info:
        rows_of_body(msgspec.json.encode({"provider": 1, "bars": []}), JSON, 10)
    assert {(e.index, e.field) for e in info.value.errors} == {(None, "provider"), (None, "bars")}


def test_mangled_bodies_only_ever_raise_client_errors() -> None:
    """Seeded fuzzing: truncations, byte flips, swapped values. Any other exception
    would surface as a 500."""
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
            rows_of_body(data, media, 10)
        except (InvalidBodyError, MalformedBodyError, TooManyBarsError):
            seen += 1
    assert seen > 1000  # most mutations are indeed refused


@pytest.mark.parametrize("media_type", [JSON, MSGPACK])
def test_a_nested_price_is_a_422_never_a_500(media_type: str) -> None:
    """A price nested as deep as a bar's size allows, or deeper (the bar is then not
    decoded at all): still the client's mistake, reported, never a 500."""
    decoder = BarDecoder()
    padding = [body()["bars"][0]] * 8  # room in the body for one over-size bar
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
            decoder.rows_of(data, media_type, 10, NOW)
        except (MalformedBodyError, InvalidBodyError) as exc:  # 400 (deeper than decoded) or 422
            fields = [(e.index, e.field) for e in getattr(exc, "errors", [])]
            outcomes.append((depth, "400" if isinstance(exc, MalformedBodyError) else str(fields)))
    # 400: deeper than the decoder reads at all (its own depth limit)
    assert {o for _, o in outcomes} == {str([(0, "open")]), str([(0, "$")]), "400"}


def test_msgpack_field_names_that_are_not_strings_are_a_422() -> None:
    payload = body()
    payload["bars"][0][1] = "x"
    with pytest.raises(InvalidBodyError) as info:
        rows_of_body(msgspec.msgpack.encode(payload), MSGPACK, 10)
    assert [(e.index, e.field, e.message) for e in info.value.errors] == [
        (0, "$", "field names must be strings")
    ]


def test_unknown_bar_and_top_level_fields_are_each_named() -> None:
    payload: dict[str, Any] = body(timeframe="1m")
    payload["bars"].append({**body()["bars"][0], "foo": 1, "bar": [2]})
    payload["extra"] = True
    with pytest.raises(InvalidBodyError) as info:
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
    with pytest.raises(InvalidBodyError) as info:
        rows_of_payload({"provider": "p", "bars": bars}, media_type)
    assert [(e.index, e.field) for e in info.value.errors] == [
        (1, "open"),
        (2, "low"),
        (3, "timeframe"),
        (4, "ts"),
        (4, "symbol"),
    ]


def test_the_errors_of_a_body_full_of_bad_bars_are_counted_not_kept() -> None:
    data = b'{"provider":"p","bars":[' + b",".join([b"{}"] * 20_000) + b"]}"
    with pytest.raises(InvalidBodyError) as info:
        rows_of_body(data, JSON, 50_000)
    assert info.value.total == 20_000 * 7  # seven required fields missing in each
    assert len(info.value.errors) == MAX_REPORTED_ERRORS
    # the raw bytes of each bar (a 48-byte object) and a little: never a dict per bar
    decoder = BarDecoder()
    assert peak_bytes(lambda: decoder.rows_of(data, JSON, 50_000, NOW)) < (
        2 * len(data) + 100 * 20_000
    )
