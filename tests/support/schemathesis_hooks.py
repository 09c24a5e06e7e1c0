"""Schemathesis hooks for the contract run (loaded through ``SCHEMATHESIS_HOOKS``):
``POST /v1/bars`` also takes MessagePack, which schemathesis cannot encode itself."""

from __future__ import annotations

from typing import Any

import msgspec
import schemathesis


def _fit(value: Any) -> Any:
    """MessagePack has no integers beyond 64 bits: such JSON numbers go as decimal
    strings (the API takes numbers and decimal strings alike)."""
    if isinstance(value, dict):
        return {key: _fit(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_fit(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    return value


@schemathesis.serializer("application/msgpack")
def msgpack_serializer(_ctx: Any, value: Any) -> bytes:
    return msgspec.msgpack.encode(_fit(value))
