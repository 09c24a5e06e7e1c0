"""Server-Sent Events on the wire: the one encoder of every byte a feedback stream sends.

A message is ``field: value`` lines ended by LF, then an empty line. ``frame`` is an
event (``event:``, ``id:``, one ``data:`` line), ``comment`` a line clients ignore
(the keepalive), ``padding`` comment lines that join the message after them (bytes
that fill a stalled reader's buffers), ``retry`` the reconnect delay a client should
wait. Values must hold no line break: our data is compact JSON, one line
(``wire.encode_event``).

``Frame`` is one feedback event numbered and encoded once, for every subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass

from market_data_store.coordinator import FeedbackEvent


def frame(event_id: int, event: str, data: bytes) -> bytes:
    """One event: ``event: {event}``, ``id: {event_id}``, ``data: {data}``, in that order."""
    return b"event: %b\nid: %d\ndata: %b\n\n" % (event.encode(), event_id, data)


def comment(text: str) -> bytes:
    """A comment line (``: {text}``): keeps the connection busy, shows clients nothing."""
    return b": %b\n\n" % text.encode()


PADDING_LINE = 4096
"""Longest padding line, LF included (clients bound their lines: ours at 64 KiB)."""


def padding(size: int) -> bytes:
    """About ``size`` bytes (at least 2) of comment lines (``:`` then dots, LF), no
    empty line: put before a message, they are part of it, and clients ignore them."""
    size = max(size, 2)
    full, rest = divmod(size, PADDING_LINE)
    line = b":" + b"." * (PADDING_LINE - 2) + b"\n"
    tail = b":" + b"." * (rest - 2) + b"\n" if rest >= 2 else b""
    return line * full + tail


def retry(ms: int) -> bytes:
    """The reconnect delay a client should wait, in milliseconds (``retry: {ms}``)."""
    return b"retry: %d\n\n" % ms


KEEPALIVE = comment("keepalive")
"""Sent to a stream that had no data for a heartbeat interval."""
RETRY_MS = 2000
"""Reconnect delay suggested to clients in the ``retry:`` line."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One event, numbered and encoded once for every subscriber."""

    seq: int
    coord_id: str
    rank: int  # 0 ok, 1 soft, 2 hard
    event: FeedbackEvent
    data: bytes  # the event's JSON
    wire: bytes  # the whole SSE message (``frame(seq, "feedback", data)``)
