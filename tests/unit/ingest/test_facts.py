"""``FactDecoder``: bodies of the other kinds into rows, without HTTP."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

import market_data_store.ingest.facts as fact_ingest
from market_data_store.ingest import JSON, MSGPACK, FactDecoder, InvalidBodyError, TooManyBarsError
from market_data_store.ingest.codec import Codec
from market_data_store.storage import FACT_TABLES
from market_data_store.storage.facts import NULL
from tests.support.facts import KINDS, body, items


def decode(kind: str, payload: Any, media: str = JSON, most: int = 100) -> list[Any]:
    encoded = (msgspec.json if media == JSON else msgspec.msgpack).encode(payload)
    return FactDecoder().rows_of(kind, encoded, media, most)


def problems(kind: str, payload: Any, media: str = JSON) -> set[tuple[int | None, str]]:
    with pytest.raises(InvalidBodyError) as refused:
        decode(kind, payload, media)
    return {(e.index, e.field) for e in refused.value.errors}


@pytest.mark.parametrize("kind", KINDS)
def test_json_and_msgpack_give_the_same_rows(kind: str) -> None:
    as_json = decode(kind, body(kind, 5))
    as_msgpack = decode(kind, body(kind, 5), MSGPACK)
    assert [r.values for r in as_json] == [r.values for r in as_msgpack]
    assert len(as_json) == 5
    assert all(len(r.values) == len(FACT_TABLES[kind].names) for r in as_json)


@pytest.mark.parametrize("media", [JSON, MSGPACK])
@pytest.mark.parametrize(
    ("kind", "field"),
    [("trades", "price"), ("options", "strike"), ("quotes", "bid"), ("fundamentals", "eps")],
)
def test_numbers_of_every_type_and_spelling_give_the_plain_text(
    kind: str, field: str, media: str
) -> None:
    # the chunk's fast check (all plain strings) and each value's own rules agree
    spellings = ["12.50", 12.5, 12, "1.25E+1", "0.000000000000000001"]
    fields: dict[str, Any] = {field: lambda i: spellings[i]}
    rows = decode(kind, body(kind, len(spellings), **fields), media)
    column = FACT_TABLES[kind].names.index(field)
    assert [r.values[column] for r in rows] == [
        "12.50",
        "12.5",
        "12",
        "12.5",
        "0.000000000000000001",
    ]


def test_a_float_price_from_messagepack_alone_in_its_chunk() -> None:
    (row,) = decode("trades", body("trades", 1, price=187.25), MSGPACK)
    assert row.values[FACT_TABLES["trades"].names.index("price")] == "187.25"


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("options", "strike", "0"),
        ("options", "strike", "-0"),
        ("options", "implied_volatility", "-0.01"),
        ("options", "bid", "1e20"),
        ("options", "bid", "0.0000000000000000001"),
        ("options", "bid", "NaN"),
        ("options", "bid", True),
        ("options", "bid", [1]),
        ("quotes", "bid_size", -1),
        ("quotes", "volume", 2**63),
        ("trades", "price", None),
        ("trades", "exchange", ""),
        ("trades", "conditions", ["a b"]),
        ("fundamentals", "asof", "1799-12-31"),
        ("news", "sentiment_score", "1.0000000000000000001"),
        ("news", "sentiment_score", -2),
        ("news", "title", "tab\there"),
        ("news", "title", ""),
        ("news", "url", "javascript:alert(1)"),
        ("news", "symbols", ["A", "B C"]),
        ("news", "published_at", "2024-01-02T14:30:00"),
    ],
)
def test_each_rule_names_its_field(kind: str, field: str, value: Any) -> None:
    payload = body(kind, 2)
    payload[kind][1][field] = value
    assert problems(kind, payload) == {(1, field)}
    assert problems(kind, payload, MSGPACK) == {(1, field)}


def test_envelope_mistakes_are_listed() -> None:
    assert problems("quotes", {"provider": " ", "quotes": [], "bars": []}) == {
        (None, "provider"),
        (None, "quotes"),
        (None, "bars"),
    }
    assert problems("news", {"provider": "p"}) == {(None, "news")}
    assert problems("news", [1]) == {(None, "$")}


def test_a_key_twice_keeps_the_last_and_unknown_fields_are_refused() -> None:
    twice = items("fundamentals", 1) + items("fundamentals", 1, eps="9.99")
    (row,) = decode("fundamentals", {"provider": "p", "fundamentals": twice})
    assert row.values[-1] == "9.99"
    assert row.values[2] == "352583000000.00"
    assert problems("fundamentals", body("fundamentals", 1, revenue="1")) == {(0, "revenue")}


def test_absent_values_are_null_and_text_is_escaped_for_copy() -> None:
    (row,) = decode("trades", body("trades", 1, exchange=None, conditions=['a"b', "c\\d"]))
    names = FACT_TABLES["trades"].names
    assert row.values[names.index("exchange")] == NULL
    assert row.values[names.index("conditions")] == '{"a\\\\"b","c\\\\\\\\d"}'
    assert row.columns()["conditions"] == '{"a\\"b","c\\\\d"}'


def test_too_many_items_is_413_before_decoding() -> None:
    with pytest.raises(TooManyBarsError):
        decode("quotes", body("quotes", 5), most=4)
    with pytest.raises(TooManyBarsError):
        decode("quotes", body("quotes", 5), MSGPACK, most=4)


def test_one_strike_spelt_two_ways_is_one_item_the_later() -> None:
    options = items("options", 1, strike="100") + items("options", 1, strike="100.00", bid="3")
    (row,) = decode("options", {"provider": "p", "options": options})
    names = FACT_TABLES["options"].names
    assert (row.values[names.index("strike")], row.values[names.index("bid")]) == ("100.00", "3")


def test_the_provider_is_kept_as_sent_and_escaped_only_for_copy() -> None:
    (row,) = decode("quotes", body("quotes", 1, provider=" a\\b "))
    assert row.provider == "a\\b"


@pytest.mark.parametrize("media", [JSON, MSGPACK])
def test_items_of_a_chunk_that_failed_as_a_whole_are_kept_when_each_types_alone(
    media: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk that does not type as a whole has each item typed on its own. Were every
    item then good (no input is known to do that: the fault is made here), they are the
    request's rows, in order, as bars keep theirs: a 201 never leaves an item out."""
    expected = [r.values for r in decode("quotes", body("quotes", 5), media)]

    def refuse(self: Codec, raws: list[msgspec.Raw]) -> list[Any]:
        raise msgspec.ValidationError("the chunk as a whole")

    monkeypatch.setattr(Codec, "typed", refuse)
    assert [r.values for r in decode("quotes", body("quotes", 5), media)] == expected
    assert problems("quotes", body("quotes", 3, bid="x"), media) == {(i, "bid") for i in range(3)}
    # and were an item then neither typed nor given a problem, the request is refused
    monkeypatch.setattr(fact_ingest, "item_or_fields", lambda codec, raw, index, errors: (None, {}))
    assert problems("quotes", body("quotes", 2), media) == {(0, "$"), (1, "$")}
