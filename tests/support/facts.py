"""Items of the other kinds (options, quotes, trades, fundamentals, news) as a producer
sends them, numbered like ``bars.wire_bars``: item ``i`` has its own key (its time is
``T0`` plus ``i`` minutes, or ``i`` days for fundamentals; news has article ``a<i>``);
keyword arguments replace fields (a function of ``i`` too)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tests.support.bars import T0


def _at(i: int) -> str:
    return (T0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z")


SAMPLES: dict[str, Callable[[int], dict[str, Any]]] = {
    "options": lambda i: {
        "symbol": "AAPL", "expiry": "2025-01-17T00:00:00Z", "strike": "150.50",
        "option_type": "C", "ts": _at(i), "bid": "1.25", "ask": "1.30", "last": "1.27",
        "volume": 10 + i, "open_interest": 1000, "implied_volatility": "0.2512",
        "delta": "0.55", "gamma": "0.012", "theta": "-0.034", "vega": "0.101",
    },
    "quotes": lambda i: {
        "symbol": "AAPL", "timestamp": _at(i), "bid": "187.01", "ask": "187.03",
        "last": "187.02", "bid_size": 300, "ask_size": 200, "volume": 120034 + i,
    },
    "trades": lambda i: {
        "symbol": "AAPL", "ts": _at(i), "trade_id": f"t{i}", "price": "187.0250",
        "size": 100, "exchange": "XNAS", "conditions": ["@", "F"],
    },
    "fundamentals": lambda i: {
        "symbol": "AAPL", "asof": (T0 + timedelta(days=i)).date().isoformat(),
        "total_assets": "352583000000.00", "total_liabilities": "290437000000",
        "net_income": "96995000000", "eps": "6.16",
    },
    "news": lambda i: {
        "article_id": f"a{i}", "symbols": ["AAPL", "MSFT"],
        "title": f"Apple, Microsoft \\ rally {i}", "url": f"https://news.example/a/{i}",
        "published_at": _at(i), "sentiment_score": "0.25",
    },
}  # fmt: skip
KINDS = tuple(SAMPLES)
TIME = {"options": "ts", "quotes": "timestamp", "trades": "ts", "fundamentals": "asof",
        "news": "published_at"}  # fmt: skip


def items(kind: str, n: int = 3, **fields: Any) -> list[dict[str, Any]]:
    made = []
    for i in range(n):
        item = SAMPLES[kind](i)
        item.update({k: v(i) if callable(v) else v for k, v in fields.items()})
        made.append(item)
    return made


def body(kind: str, n: int = 3, *, provider: str = "ibkr", **fields: Any) -> dict[str, Any]:
    return {"provider": provider, kind: items(kind, n, **fields)}


def query(kind: str, **extra: str) -> dict[str, str]:
    base = {"provider": "ibkr"} if kind == "news" else {"provider": "ibkr", "symbol": "AAPL"}
    return {**base, **extra}
