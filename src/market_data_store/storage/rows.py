"""The record the bars table stores, as the writer receives it."""

from __future__ import annotations

from datetime import datetime

import msgspec

DEFAULT_TENANT = "default"
"""The one tenant of a store without tenants, and the owner of every bar stored
before tenants existed."""


class BarRow(msgspec.Struct, frozen=True, gc=False):
    """One OHLCV bar, validated, with prices kept as the decimal text received.

    Prices stay text so they reach PostgreSQL exactly as sent (no float, no
    Decimal round trip on the hot path). ``received_at`` is when the store
    accepted this version: the upsert keeps the most recently accepted one, so
    concurrent writers and dead-letter replays cannot roll a bar back.
    """

    provider: str
    symbol: str
    resolution: str
    ts: datetime
    open: str
    high: str
    low: str
    close: str
    volume: str
    delayed: bool
    received_at: datetime
    tenant: str = DEFAULT_TENANT
    """Whose bar (the request's token names it): part of its key. A dead letter written
    before tenants existed reads back as the default tenant's."""
