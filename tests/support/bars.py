"""Request bodies for POST /v1/bars, and the rows the service builds of them."""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from market_data_store.ingest import (
    JSON,
    BarDecoder,
    IngestError,
    InvalidBodyError,
    TooManyBarsError,
)
from market_data_store.storage import BarRow

T0 = datetime(2024, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)  # received_at of the rows of ``rows_of_body``


def bars_body(n: int, day: int = 0, *, provider: str = "p", symbol: str = "S") -> dict[str, Any]:
    """``n`` valid one-minute bars of one symbol, from ``T0`` + ``day`` days."""
    start = T0 + timedelta(days=day)
    return {
        "provider": provider,
        "bars": [
            {"symbol": symbol, "ts": (start + timedelta(minutes=i)).isoformat(), "open": "1",
             "high": "1", "low": "1", "close": "1", "volume": "1", "resolution": "1m"}
            for i in range(n)
        ],
    }  # fmt: skip


def one_bar_body(**bar: Any) -> dict[str, Any]:
    """One valid daily bar (provider `` ibkr ``, symbol ``msft``, ts at +01:00, prices
    as strings), ``bar`` replacing or adding its fields."""
    base = {"symbol": "msft", "ts": "2024-01-02T14:30:00+01:00", "open": "10", "high": "12",
            "low": "9", "close": "11", "volume": "5"}  # fmt: skip
    return {"provider": " ibkr ", "bars": [{**base, **bar}]}


def rows_of_body(data: bytes, media_type: str, limit: int) -> list[BarRow]:
    """The rows the service builds of ``data`` (``BarDecoder.rows_of``, received at
    ``NOW``), or the exception it raises. Computed twice by one new decoder, checked to
    agree: first knowing no symbol (the exact check decides each symbol's first valid
    bar), then knowing those the first pass found valid (the fast path decides): the
    same rows, or the same exception with the same errors."""
    decoder = BarDecoder()
    outcomes: list[Any] = []
    for _ in range(2):
        try:
            outcomes.append(decoder.rows_of(data, media_type, limit, NOW))
        except IngestError as exc:
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
    """``rows_of_body`` of ``payload`` encoded as ``media_type``."""
    encode = msgspec.json.encode if media_type == JSON else msgspec.msgpack.encode
    return rows_of_body(encode(payload), media_type, limit)


def peak_bytes(action: Callable[[], object]) -> int:
    """The most memory ``action`` held at once (tracemalloc), whether it answers rows
    or refuses the body as invalid (422) or too large (413)."""
    tracemalloc.start()
    with contextlib.suppress(InvalidBodyError, TooManyBarsError):
        action()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak
