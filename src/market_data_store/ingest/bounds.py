"""What a body may cost, checked before it is decoded: its size against the bars it may
hold, and their count against the cap (413, ``TooManyBarsError``).

A JSON body is counted in C (``{`` and ``,``) as it arrives or in slices
(``JsonBound``), a CSV body's line ends likewise (``CsvBound``); a MessagePack body
states the length of ``bars`` in its header (``msgpack_bars_bound``), read without
decoding anything.
"""

from __future__ import annotations

import msgspec

from .errors import TooManyBarsError

# The most bytes one bar may take as sent (a valid bar is a few hundred, even with every
# character of its symbol escaped): a larger one is a 422 for that bar, never decoded.
# It also bounds the body: at most ENVELOPE_BYTES + MAX_BAR_BYTES per bar it may hold
# (counted before decoding), else 413. Small on purpose: the worst a bar can cost to
# type (a 1,000-digit JSON integer) grows with the square of its size. The envelope's
# allowance is generous (a body of no bars stays a 422 naming its mistakes), yet a
# millisecond of parsing at most.
MAX_BAR_BYTES = 1024
ENVELOPE_BYTES = 64 * 1024
PRESCAN_STEP = 1 << 20  # bytes counted per call (about a millisecond)
# The structure a JSON body of n bars may hold, counted before decoding: a bar is one
# object of at most 9 fields (8 commas) plus the comma before the next one.
_COMMAS_PER_BAR = 12  # 9 needed; the rest for commas inside symbols and providers
_COMMAS_SLACK = 64


class JsonBound:
    """The pre-count of a JSON body, fed in pieces (as it arrives, or in slices):
    ``feed`` raises ``TooManyBarsError`` as soon as the body holds more objects than
    ``max_bars`` + 1 (the envelope), or more commas than ``max_bars`` bars may hold.
    Braces and commas inside strings count too: a body close to the cap with many of
    them in its symbols may be refused (documented)."""

    def __init__(
        self,
        max_bars: int,
        *,
        item_bytes: int = MAX_BAR_BYTES,
        commas_per_item: int = _COMMAS_PER_BAR,
        what: str = "bar",
    ) -> None:
        self.max_bars = max_bars
        self.max_commas = commas_per_item * max_bars + _COMMAS_SLACK
        self.item_bytes = item_bytes
        self.what = what
        self.objects = self.commas = self.size = 0

    def feed(self, data: bytes | bytearray, start: int = 0, end: int | None = None) -> None:
        """Count ``data[start:end]`` (without copying it)."""
        self.objects += data.count(b"{", start, end)
        self.commas += data.count(b",", start, end)
        self.size += len(data) - start if end is None else min(end, len(data)) - start
        # every bar is an object: the envelope, then at most objects - 1 bars so far
        check_body_size(self.size, max(self.objects - 1, 0), self.item_bytes, self.what)
        if self.objects > self.max_bars + 1:
            raise TooManyBarsError(
                f"{self.objects} objects in the body: more {self.what}s than one request "
                f"may carry; at most {self.max_bars}"
            )
        if self.commas > self.max_commas:
            raise TooManyBarsError(
                f"{self.commas} commas in the body: more values than {self.max_bars} "
                f"{self.what}s may hold; at most {self.max_bars} {self.what}s"
            )


# Lines a CSV body may hold beyond its bars: the header, and blank lines (a trailing one).
_CSV_SPARE_LINES = 64


class CsvBound:
    """The pre-count of a CSV body (``text/csv``), fed in pieces as ``JsonBound`` is:
    ``feed`` raises ``TooManyBarsError`` as soon as the body holds more line ends than
    ``max_bars`` bars, the header and ``_CSV_SPARE_LINES`` blank lines may, or more bytes
    than the lines so far may take (``check_body_size``). A line break inside a quoted
    value counts too (no valid value holds one)."""

    def __init__(self, max_bars: int, *, item_bytes: int = MAX_BAR_BYTES) -> None:
        self.max_bars = max_bars
        self.max_lines = max_bars + 1 + _CSV_SPARE_LINES
        self.item_bytes = item_bytes
        self.lines = self.size = 0

    def feed(self, data: bytes | bytearray, start: int = 0, end: int | None = None) -> None:
        """Count ``data[start:end]`` (without copying it)."""
        self.lines += data.count(b"\n", start, end)
        self.size += len(data) - start if end is None else min(end, len(data)) - start
        # the last line may have no line end: one more line than line ends
        check_body_size(self.size, self.lines + 1, self.item_bytes)
        if self.lines > self.max_lines:
            raise TooManyBarsError(
                f"{self.lines} lines in the body: more bars than one request may carry; "
                f"at most {self.max_bars} (and a header row)"
            )


def check_body_size(
    size: int, bars: int, item_bytes: int = MAX_BAR_BYTES, what: str = "bar"
) -> None:
    """413 for a body larger than ``bars`` bars (as counted before decoding) may be:
    ``ENVELOPE_BYTES`` plus ``MAX_BAR_BYTES`` per bar (``item_bytes`` per ``what``)."""
    if size > ENVELOPE_BYTES + bars * item_bytes:
        raise TooManyBarsError(
            f"body of {size} bytes for at most {bars} {what}(s): a {what} may take at most "
            f"{item_bytes} bytes, the rest of the body {ENVELOPE_BYTES}"
        )


def check_bar_count(count: int, max_bars: int, what: str = "bar") -> None:
    if count > max_bars:
        raise TooManyBarsError(f"{count} {what}s in one request; at most {max_bars}")


def msgpack_bars_bound(body: bytes | bytearray, key: bytes = b"\xa4bars") -> int:
    """The length of ``bars`` (``key``: the list's name, a MessagePack fixstr) as a
    MessagePack body's header states it, read without decoding anything (0 when it
    cannot be found in the map's first entries: such a body holds no bar, and may only
    be small). Only fixed-size values, strings and
    binaries may precede ``bars``; a valid body's ``provider`` is a string."""
    view = memoryview(body)
    size = len(body)
    if not size or (not 0x80 <= body[0] <= 0x8F and body[0] not in (0xDE, 0xDF)):
        return 0
    entries, at = _msgpack_header(body, 0)
    for _ in range(min(entries, 8) * 2):  # keys and values, in order
        if at >= size:
            return 0
        first = body[at]
        end = at + len(key)
        if bytes(view[at:end]) == key and end < size:
            length, _ = _msgpack_header(body, end)
            return length if body[end] in _ARRAY_HEADS else 0
        if first in _SIZED or 0xA0 <= first <= 0xBF:  # a string or binary: skip it
            length, at = _msgpack_header(body, at)
            at += length
        elif first in _FIXED:
            at += _FIXED[first]
        elif first <= 0x7F or first >= 0xE0 or first in (0xC0, 0xC2, 0xC3):  # ints, nil, bools
            at += 1
        else:
            return 0
    return 0


def msgpack_array_length(raw: msgspec.Raw) -> int | None:
    """The length of a MessagePack array as its header states it (None if not one)."""
    head = bytes(memoryview(raw)[:5])
    if not head:
        return None
    first = head[0]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F
    if first == 0xDC and len(head) >= 3:
        return int.from_bytes(head[1:3], "big")
    if first == 0xDD and len(head) >= 5:
        return int.from_bytes(head[1:5], "big")
    return None


_ARRAY_HEADS = frozenset([*range(0x90, 0xA0), 0xDC, 0xDD])
_SIZED = {0xD9: 1, 0xDA: 2, 0xDB: 4, 0xC4: 1, 0xC5: 2, 0xC6: 4}  # str8-32, bin8-32
# ints, floats, fixext: their head and value
_FIXED = {0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9, 0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9,
          0xCA: 5, 0xCB: 9, 0xD4: 3, 0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18}  # fmt: skip
_WIDTHS = {0xDC: 2, 0xDD: 4, 0xDE: 2, 0xDF: 4, **_SIZED}


def _msgpack_header(body: bytes | bytearray, at: int) -> tuple[int, int]:
    """The length a container, string or binary head at ``at`` states, and where its
    content begins (0 and ``at`` + 1 for anything else or a truncated head)."""
    first = body[at]
    if 0x80 <= first <= 0x9F or 0xA0 <= first <= 0xBF:
        return first & (0x0F if first < 0xA0 else 0x1F), at + 1
    width = _WIDTHS.get(first)
    if width is None or at + 1 + width > len(body):
        return 0, at + 1
    return int.from_bytes(body[at + 1 : at + 1 + width], "big"), at + 1 + width
