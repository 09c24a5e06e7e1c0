"""Request bodies for POST /v1/bars."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2024, 1, 1, tzinfo=UTC)


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
