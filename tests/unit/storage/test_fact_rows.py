"""Fact rows as dead letters: written and read back as themselves, and a row the
service could not have written refused, never replayed into COPY."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from market_data_store.storage import BarRow, FactRow, decode_row
from market_data_store.storage.facts import NULL, encode_rows

AT = datetime(2026, 1, 1, tzinfo=UTC)
QUOTE = ("AAPL", "2024-01-02T14:30:00+00:00", "1.5", NULL, NULL, "3", NULL, "0", "f")


def round_trip(item: object) -> object:
    return decode_row(msgspec.json.decode(msgspec.json.encode(item)))


def test_bars_and_fact_rows_read_back_as_themselves() -> None:
    bar = BarRow("p", "AAPL", "1m", AT, "1", "2", "1", "1.5", "10", False, AT, "alpha")
    fact = FactRow("quotes", "beta", "p\\q", QUOTE, AT)
    assert round_trip(bar) == bar
    assert round_trip(fact) == fact
    assert fact.columns()["bid"] == "1.5"
    assert fact.columns()["ask"] is None


@pytest.mark.parametrize(
    "tampered",
    [
        FactRow("bars", "beta", "p", QUOTE, AT),  # no such kind here
        FactRow("quotes", "beta", "p", QUOTE[:-1], AT),  # a value short
        FactRow("quotes", "beta\tx", "p", QUOTE, AT),  # a tenant the service never names
        FactRow("quotes", "", "p", QUOTE, AT),
        FactRow("quotes", "beta", "p\nq", QUOTE, AT),  # a control character in the provider
        FactRow("quotes", "beta", "p", ("AAPL\tX", *QUOTE[1:]), AT),  # a column more in COPY
        FactRow("quotes", "beta", "p", ("AAPL\\", *QUOTE[1:]), AT),  # escapes the delimiter
    ],
)
def test_a_dead_letter_the_service_could_not_have_written_is_refused(tampered: FactRow) -> None:
    with pytest.raises(ValueError, match=r"dead-lettered row|not a row of a known kind"):
        round_trip(tampered)


def test_copy_text_escapes_the_provider_once() -> None:
    row = FactRow("quotes", "beta", "a\\b", QUOTE, AT)
    assert encode_rows([row]).startswith(b"beta\ta\\\\b\tAAPL\t")
