"""Schemathesis hooks for the contract run (loaded through ``SCHEMATHESIS_HOOKS``):
the ingest routes also take MessagePack (and ``POST /v1/bars`` CSV), which schemathesis
cannot encode itself; and
``ast.parse`` one thread at a time (below)."""

from __future__ import annotations

import ast
import threading
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


@schemathesis.serializer("text/csv")
def csv_serializer(_ctx: Any, value: Any) -> bytes:
    """A restore's body (``POST /v1/bars``): a string as it is (any other value, of a
    negative case, as its JSON text); what cannot be UTF-8 replaced."""
    text = value if isinstance(value, str) else msgspec.json.encode(_fit(value)).decode()
    return text.encode("utf-8", "replace")


# CPython 3.11 counts the depth of the syntax tree it is converting in state that every
# thread shares: two threads parsing at once (schemathesis' two workers, each with
# Hypothesis describing a filter's lambda by parsing its source) can fail with
# "SystemError: AST constructor recursion depth mismatch", a runtime error of the run.
_parsing = threading.Lock()
_parse = ast.parse


def _parse_one_at_a_time(*args: Any, **kwargs: Any) -> Any:
    with _parsing:
        return _parse(*args, **kwargs)


ast.parse = _parse_one_at_a_time
