"""What every read route checks of its query (``GET /v1/bars`` and ``GET /v1/<kind>``):
provider, symbol, resolution where there is one, and the [start, end) range, each
problem listed (a 400 naming every parameter)."""

from __future__ import annotations

from datetime import date, datetime

from market_data_store.ingest import (
    EARLIEST,
    LATEST,
    PROVIDER_RULE,
    RESOLUTION,
    SYMBOL_RULE,
    TS_RANGE_RULE,
    provider_ok,
    symbol_ok,
    trim,
)

# a query bound may be LATEST itself: ``end`` is exclusive
QUERY_TS_RULE = "must be from 1800-01-01T00:00:00Z to 2200-01-01T00:00:00Z"
QUERY_DAY_RULE = "must be from 1800-01-01 to 2200-01-01"
assert TS_RANGE_RULE.startswith(QUERY_TS_RULE.replace(" to ", " to before "))


def query_errors(
    provider: str,
    symbol: str | None,
    start: datetime | date | None,
    end: datetime | date | None,
    *,
    resolution: str | None = None,
) -> list[dict[str, str]]:
    """Every problem of a read's query (``symbol`` None: not asked for; ``start`` and
    ``end`` instants, or dates for a kind keyed by day; ``resolution`` for bars)."""
    errors: list[dict[str, str]] = []
    if not provider_ok(provider):
        errors.append({"key": "provider", "message": PROVIDER_RULE})
    if symbol is not None and not symbol_ok(symbol, trim(symbol).upper()):
        errors.append({"key": "symbol", "message": SYMBOL_RULE})
    if resolution is not None and not RESOLUTION.fullmatch(resolution):
        errors.append({"key": "resolution", "message": "must be <n><s|m|h|d|w|mo>, e.g. 1m"})
    for key, moment in (("start", start), ("end", end)):
        if isinstance(moment, datetime):
            if moment.utcoffset() is None:
                errors.append({"key": key, "message": "must include a timezone"})
            elif not EARLIEST <= moment <= LATEST:
                errors.append({"key": key, "message": QUERY_TS_RULE})
        elif moment is not None and not EARLIEST.date() <= moment <= LATEST.date():
            errors.append({"key": key, "message": QUERY_DAY_RULE})
    if not errors and start is not None and end is not None and start >= end:
        errors.append({"key": "end", "message": "must be after start"})
    return errors
