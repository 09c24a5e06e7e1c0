"""The ``cursor`` of a read: where the next page (or a resumed export) starts.

It is the last row's ordering values (its key after the provider: bars' symbol,
resolution and ts), as text, in a JSON array, base64url without padding. Opaque to a
reader of JSON pages (pass ``next`` back); a producer of its own may build one from
the last row of an interrupted export to resume after it (docs/reads.md)."""

from __future__ import annotations

import base64
import binascii

import msgspec

MAX_CURSOR_CHARS = 2048
"""The longest cursor read back (a key's values are far shorter)."""

_values = msgspec.json.Decoder(list[str])


def encode_cursor(values: tuple[str, ...] | list[str]) -> str:
    """The cursor that starts after a row with these ordering values."""
    return base64.urlsafe_b64encode(msgspec.json.encode(list(values))).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[str, ...] | None:
    """The ordering values a cursor holds, or None if it is not one."""
    if not cursor or len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = _values.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return None
    return tuple(values) if values else None
