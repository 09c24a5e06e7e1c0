"""The client's bars as 0.4.0 made them (``to_wire`` before numbers and times went as
MessagePack values), verbatim but for names: the baseline the wire tests compare with,
and ``bench/client_cost.py`` measures against (it loads this file by its path)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from market_data_store.client.errors import InvalidBarError
from market_data_store.contracts import Bar

REQUIRED_FIELDS = ("symbol", "ts", "open", "high", "low", "close", "volume")


class WireBar(msgspec.Struct, omit_defaults=True):
    """One bar as sent (Core ``Bar`` fields, numbers as decimal strings)."""

    symbol: str
    ts: str
    open: str
    high: str
    low: str
    close: str
    volume: str
    resolution: str = "1d"
    delayed: bool = False


class WireBody(msgspec.Struct):
    provider: str
    bars: list[WireBar]


def encode_body(provider: str, bars: list[WireBar]) -> bytes:
    return msgspec.msgpack.encode(WireBody(provider, bars))


def to_wire(bar: Bar | Mapping[str, Any] | WireBar, index: int) -> WireBar:
    """One written bar as sent; ``InvalidBarError`` when it can never be sent."""
    if isinstance(bar, WireBar):
        return bar
    if isinstance(bar, Bar):
        fields: Mapping[str, Any] = {
            "symbol": bar.symbol,
            "ts": bar.ts,
            "open": bar.open,
            "high": bar.high,
            "low": bar.low,
            "close": bar.close,
            "volume": bar.volume,
            "resolution": bar.resolution,
            "delayed": bar.delayed,
        }
    elif isinstance(bar, Mapping):
        fields = bar
        for name in REQUIRED_FIELDS:
            if name not in fields:
                raise InvalidBarError(index, name, "required")
    else:
        raise InvalidBarError(
            index, "$", f"a Core Bar or a mapping of its fields, not {type(bar).__name__}"
        )
    symbol = fields["symbol"]
    if not isinstance(symbol, str):
        raise InvalidBarError(index, "symbol", "must be a string")
    resolution = fields.get("resolution", "1d")
    if not isinstance(resolution, str):
        raise InvalidBarError(index, "resolution", "must be a string such as 1m")
    delayed = fields.get("delayed", False)
    if not isinstance(delayed, bool):
        raise InvalidBarError(index, "delayed", "must be true or false")
    return WireBar(
        symbol,
        _timestamp(fields["ts"], index),
        _number(fields["open"], index, "open"),
        _number(fields["high"], index, "high"),
        _number(fields["low"], index, "low"),
        _number(fields["close"], index, "close"),
        _number(fields["volume"], index, "volume"),
        resolution,
        delayed,
    )


def _timestamp(value: Any, index: int) -> str:
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise InvalidBarError(index, "ts", "must be timezone-aware (a naive time is ambiguous)")
        return value.astimezone(UTC).isoformat()[:-6] + "Z"  # ends with +00:00 now
    if isinstance(value, str):
        return value  # RFC 3339 text: the store checks it
    raise InvalidBarError(index, "ts", f"must be a datetime or RFC 3339 text, not {type(value)}")


def _number(value: Any, index: int, field: str) -> str:
    if isinstance(value, str):
        return value  # decimal text: sent as is, the store checks it
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidBarError(index, field, "must be a finite number")
        return format(value, "f")  # plain notation, every digit kept
    if isinstance(value, bool):
        raise InvalidBarError(index, field, "must be a number, not a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidBarError(index, field, "must be a finite number")
        return repr(value)  # the shortest text that reads back as this float
    raise InvalidBarError(index, field, f"must be a decimal string or a number, not {type(value)}")
