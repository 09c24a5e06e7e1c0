"""Bars for tests, in the two shapes a bar takes: a ``BarRow`` as the writer gets it
(storage, coordinator and dead-letter tests) and a dict as a producer sends it (the
HTTP API and the client); and, for the ingest tests, the rows the service builds of a
request body.

Every bar has a number ``i``: its time is ``t0`` plus ``i`` minutes, so bars with
different numbers never share a key. Every other field has one default, the same in
both shapes (ibkr, AAPL, 1m, 187.15/187.40/186.90/187.02, volume 120034); a test
passes what it depends on as keyword arguments. In ``rows`` and ``wire_bars`` a
keyword may also be a function of the bar's number (``volume=lambda i: str(1000 + i)``).
"""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec

from market_data_store.ingest import (
    JSON,
    BarDecoder,
    IngestError,
    InvalidBodyError,
    TooManyBarsError,
)
from market_data_store.storage import BarRow

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
"""The time of bar 0."""
ACCEPTED = datetime(2026, 1, 1, tzinfo=UTC)
"""The ``received_at`` of a row unless told otherwise."""
NOW = ACCEPTED
"""The ``received_at`` of the rows of ``rows_of_body``."""
PRICES: Mapping[str, Any] = {
    "open": "187.15", "high": "187.40", "low": "186.90", "close": "187.02", "volume": "120034",
}  # fmt: skip
"""The default prices and volume, as text."""
ONES: Mapping[str, Any] = dict.fromkeys(PRICES, "1")
"""Prices and volume all ``"1"``: pass ``**ONES`` for the smallest valid bar."""
NOT_A_NUMBER: Mapping[str, Any] = {"close": "x"}
"""What ``rows(bad=...)`` puts in a bad row by default: PostgreSQL refuses the row
(SQLSTATE 22P02) when the batch is copied, a data error of that row alone."""


def row(i: int = 0, /, *, t0: datetime = T0, **fields: Any) -> BarRow:
    """Bar number ``i`` as the writer gets it; ``fields`` replace the defaults
    (provider ``ibkr``, ``received_at`` ``ACCEPTED``)."""
    values: dict[str, Any] = {
        "provider": "ibkr", "symbol": "AAPL", "resolution": "1m", "ts": t0 + timedelta(minutes=i),
        **PRICES, "delayed": False, "received_at": ACCEPTED,
    }  # fmt: skip
    values.update(fields)
    return BarRow(**values)


def rows(
    n: int,
    first: int = 0,
    /,
    *,
    bad: Collection[int] = (),
    bad_fields: Mapping[str, Any] = NOT_A_NUMBER,
    **fields: Any,
) -> list[BarRow]:
    """Rows numbered ``first`` .. ``first + n - 1``, as ``row`` makes them. A field may
    be a function of the number. The rows numbered in ``bad`` also get ``bad_fields``
    (by default a close that is not a number, which the database refuses)."""
    return [
        row(i, **{**_fields_of(i, fields), **(bad_fields if i in bad else {})})
        for i in range(first, first + n)
    ]


def wire_bar(
    i: int = 0,
    /,
    *,
    t0: datetime = T0,
    ts_as: Literal["z", "iso", "datetime"] = "z",
    **fields: Any,
) -> dict[str, Any]:
    """Bar number ``i`` as a producer sends it (no provider: that is the body's): symbol
    AAPL, resolution 1m, prices as text; ``fields`` replace or add keys (``delayed``).

    ``ts_as``: ``"z"`` ISO 8601 text ending in ``Z`` (as the client sends it),
    ``"iso"`` Python's ``isoformat()`` (``+00:00``), ``"datetime"`` an aware datetime
    (what a Python producer hands ``StoreClient``)."""
    ts = t0 + timedelta(minutes=i)
    values: dict[str, Any] = {
        "symbol": "AAPL",
        "ts": ts if ts_as == "datetime" else _iso(ts, z=ts_as == "z"),
        **PRICES,
        "resolution": "1m",
    }
    values.update(fields)
    return values


def wire_bars(
    n: int,
    first: int = 0,
    /,
    *,
    t0: datetime = T0,
    ts_as: Literal["z", "iso", "datetime"] = "z",
    **fields: Any,
) -> list[dict[str, Any]]:
    """Bars numbered ``first`` .. ``first + n - 1``, as ``wire_bar`` makes them; a field
    may be a function of the number."""
    return [
        wire_bar(i, t0=t0, ts_as=ts_as, **_fields_of(i, fields)) for i in range(first, first + n)
    ]


def bars_body(n: int, day: int = 0, *, provider: str = "p", symbol: str = "S") -> dict[str, Any]:
    """A POST /v1/bars body: ``n`` valid one-minute bars of one symbol, prices all
    ``"1"``, from ``T0`` + ``day`` days."""
    bars = wire_bars(n, t0=T0 + timedelta(days=day), ts_as="iso", symbol=symbol, **ONES)
    return {"provider": provider, "bars": bars}


# -- the rows the service builds of a body (ingest) ------------------------------


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


def _fields_of(i: int, fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v(i) if callable(v) else v for k, v in fields.items()}


def _iso(ts: datetime, *, z: bool) -> str:
    text = ts.isoformat()
    return text.replace("+00:00", "Z") if z else text
