"""What a body may cost, bounded before it is decoded (``ingest.bounds``): 413 for a
body over the cap or larger than its bars may be, 422 for a bar over its size."""

from __future__ import annotations

import functools

import msgspec
import pytest

from market_data_store.ingest import (
    JSON,
    MAX_BAR_BYTES,
    MSGPACK,
    BarDecoder,
    InvalidBodyError,
    MalformedBodyError,
    TooManyBarsError,
)
from market_data_store.ingest.bounds import JsonBound, msgpack_bars_bound
from tests.support.bars import NOW, peak_bytes, rows_of_body
from tests.support.bars import one_bar_body as body


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
    with pytest.raises(TooManyBarsError, match="for at most 0 bar"):
        rows_of_body(data, media_type, 10)


def test_limits_and_malformed_bodies() -> None:
    with pytest.raises(TooManyBarsError):
        rows_of_body(
            msgspec.json.encode({"provider": "p", "bars": [body()["bars"][0]] * 3}), JSON, 2
        )
    with pytest.raises(TooManyBarsError):  # counted on the slow path too
        rows_of_body(msgspec.json.encode({"provider": "p", "bars": [{"open": "x"}] * 3}), JSON, 2)
    with pytest.raises(MalformedBodyError):
        rows_of_body(b"[", JSON, 10)


@pytest.mark.parametrize(
    "element",
    [b"{}", b"1", b'"x"', b"[]", b'{"symbol":"A"}', msgspec.json.encode(body()["bars"][0])],
)
def test_over_cap_bodies_are_refused_before_they_are_decoded(element: bytes) -> None:
    """A body with far more elements than the cap costs a small multiple of its own
    size, not tens of Python objects per element (counted by tracemalloc, not timed)."""
    decoder = BarDecoder()
    count = max(300_000, 4_000_000 // len(element))
    data = b'{"provider":"p","bars":[' + b",".join([element] * count) + b"]}"
    with pytest.raises(TooManyBarsError):
        rows_of_body(data, JSON, 1000)
    assert peak_bytes(lambda: decoder.rows_of(data, JSON, 1000, NOW)) < len(data)
    packed = msgspec.msgpack.encode(
        {"provider": "p", "bars": [msgspec.json.decode(element)] * count}
    )
    with pytest.raises(TooManyBarsError):
        rows_of_body(packed, MSGPACK, 1000)
    assert peak_bytes(lambda: decoder.rows_of(packed, MSGPACK, 1000, NOW)) < len(packed)


def test_an_over_size_bar_is_a_422_for_that_bar_without_decoding_it() -> None:
    """A MessagePack price holding an array of zeros (the attack: 33M of them) is not
    decoded into a list and printed: its bar is refused by its size alone."""
    payload = body(open="X")
    payload["bars"] += [body()["bars"][0]] * 8  # room in the body for one over-size bar
    data = msgspec.msgpack.encode(payload).replace(
        b"\xa1X", b"\xdd" + (3000).to_bytes(4, "big") + b"\x00" * 3000, 1
    )
    with pytest.raises(InvalidBodyError) as info:
        rows_of_body(data, MSGPACK, 10)
    assert [(e.index, e.field, e.message) for e in info.value.errors] == [
        (0, "$", f"a bar may take at most {MAX_BAR_BYTES} bytes; not decoded")
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
        peak = peak_bytes(functools.partial(_refused, data, media_type))
        assert peak < n // 10


def _refused(data: bytes, media_type: str) -> None:
    with pytest.raises(TooManyBarsError, match="for at most 1 bar"):
        rows_of_body(data, media_type, 10)


@pytest.mark.parametrize("media_type", [JSON, MSGPACK])
def test_a_body_full_of_over_size_bars_stays_bounded(media_type: str) -> None:
    """The 422-for-everything path: every bar over the size cap, each refused by its
    size (not decoded), the body bound holding the total."""
    bar = body(symbol="A" * 2000)["bars"][0]
    payload = {"provider": "p", "bars": [bar] * 3 + [body()["bars"][0]] * 6}
    encode = msgspec.json.encode if media_type == JSON else msgspec.msgpack.encode
    with pytest.raises(InvalidBodyError) as info:
        rows_of_body(encode(payload), media_type, 10)
    assert [(e.index, e.field) for e in info.value.errors] == [(0, "$"), (1, "$"), (2, "$")]


def test_a_json_body_counted_in_pieces_is_refused_once_it_holds_too_much() -> None:
    """Fed as it arrives: the piece that takes the count over the cap raises, the rest
    unseen."""
    data = msgspec.json.encode({"provider": "p", "bars": [body()["bars"][0]] * 3})
    fourth = [at for at, byte in enumerate(data) if byte == ord("{")][3]
    bound = JsonBound(2)
    bound.feed(data[:fourth])  # the envelope and two bars
    with pytest.raises(TooManyBarsError, match=r"^4 objects in the body"):
        bound.feed(data[fourth : fourth + 1])  # the third bar begins
    JsonBound(3).feed(data)  # within a cap of 3


@pytest.mark.parametrize("count", [0, 3, 15, 16, 70_000])
def test_msgpack_bars_bound_reads_the_length_the_header_states(count: int) -> None:
    """Without decoding: ``bars`` after the provider or before it; 0 without it."""
    bars = [0] * count
    assert msgpack_bars_bound(msgspec.msgpack.encode({"provider": "p", "bars": bars})) == count
    assert msgpack_bars_bound(msgspec.msgpack.encode({"bars": bars, "provider": "p"})) == count
    assert msgpack_bars_bound(msgspec.msgpack.encode({"provider": "p", "x": bars})) == 0
    assert msgpack_bars_bound(msgspec.msgpack.encode([bars])) == 0
