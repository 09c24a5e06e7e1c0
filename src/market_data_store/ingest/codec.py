"""POST /v1/bars bodies decoded (JSON or MessagePack) into typed bars, and re-read
field by field when they do not type, so that every problem is named.

Decoding goes straight into typed msgspec Structs. Prices stay the text they
were sent as: JSON strings as they are, JSON numbers as their literal text (a
``float_hook``: never a float), MessagePack numbers as their shortest repr.
The envelope is decoded with each bar left as raw bytes; ``rows.py`` types them a
chunk at a time. A body or bar msgspec cannot type is re-read loosely, field by
field, for the complete report (index, field, message): unknown fields, missing and
mistyped ones, and the rule errors of the fields that did type.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from .bounds import (
    MAX_BAR_BYTES,
    check_bar_count,
    check_body_size,
    msgpack_array_length,
    msgpack_bars_bound,
)
from .errors import Errors, MalformedBodyError
from .rules import NOT_A_NUMBER, ORDER_RULES, PRICE_FIELDS, PROVIDER_RULE, check_bar, provider_ok

JSON = "application/json"
MSGPACK = "application/msgpack"
MEDIA_TYPES = {
    JSON: JSON,
    MSGPACK: MSGPACK,
    "application/x-msgpack": MSGPACK,
    "application/vnd.msgpack": MSGPACK,
}


Number = str | int | float


# The docstring is the schema's description in the OpenAPI document.
class BarIn(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """One bar as sent: Core ``Bar`` fields, nothing else (an unknown field is a 422).

    Numbers: a string, an integer or a float (MessagePack), refused in C if anything
    else. From JSON they are decoded as ``_JsonBarIn``: JSON numbers as their literal
    text (a ``float_hook``, which msgspec applies to untyped values only), containers
    bounded by ``MAX_BAR_BYTES``; their values are checked when rows are built."""

    symbol: str
    ts: datetime
    open: Number
    high: Number
    low: Number
    close: Number
    volume: Number
    resolution: str = "1d"  # Core's default
    delayed: bool = False


class _JsonBarIn(BarIn, gc=False, forbid_unknown_fields=True):
    open: Any
    high: Any
    low: Any
    close: Any
    volume: Any


# The request body as the OpenAPI document states it (http/openapi.py); what is decoded
# is ``_Envelope``, then its bars as ``BarIn`` a chunk at a time. (No docstring: it
# would become the schema's description.)
class IngestRequest(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    provider: str
    bars: list[BarIn]


class _Envelope(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    provider: str
    bars: list[msgspec.Raw]


_BAR_FIELDS = msgspec.structs.fields(BarIn)
_BAR_FIELD_NAMES = tuple(f.name for f in _BAR_FIELDS)
_TOP_FIELDS = ("provider", "bars")
# what a decoder raises for bytes that are not the format at all (or nest too deeply)
MALFORMED = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


class Codec:
    """Decoders of one media type and cap (JSON numbers with a fraction or exponent
    arrive as their own text: ``float_hook=str``)."""

    def __init__(self, media_type: str, max_bars: int) -> None:
        self.json = media_type == JSON
        self.max_bars = max_bars
        self.provider: Any = (msgspec.json if self.json else msgspec.msgpack).Decoder(str)
        if self.json:
            self.envelope: Any = msgspec.json.Decoder(_Envelope)
            self.bars: Any = msgspec.json.Decoder(list[_JsonBarIn], float_hook=str)
            self.fields: Any = msgspec.json.Decoder(dict[str, msgspec.Raw])
            self.field: dict[str, Any] = {
                f.name: msgspec.json.Decoder(Any if f.type is Number else f.type, float_hook=str)
                for f in _BAR_FIELDS
            }
            self.raw: Any = msgspec.json.Decoder(msgspec.Raw)
        else:
            # MessagePack states an array's length first: the cap is checked before a
            # single element is decoded.
            bars_type = Annotated[list[msgspec.Raw], msgspec.Meta(max_length=max_bars)]
            envelope = msgspec.defstruct(
                "_Envelope",
                [("provider", str), ("bars", bars_type)],
                forbid_unknown_fields=True,
                gc=False,
            )
            self.envelope = msgspec.msgpack.Decoder(envelope)
            self.bars = msgspec.msgpack.Decoder(list[BarIn])
            self.fields = msgspec.msgpack.Decoder(dict[Any, msgspec.Raw])
            self.field = {f.name: msgspec.msgpack.Decoder(f.type) for f in _BAR_FIELDS}
            self.raw = msgspec.msgpack.Decoder(msgspec.Raw)

    def typed(self, raws: list[msgspec.Raw]) -> list[BarIn]:
        """The bars typed in one call (``ValidationError`` if any is over
        ``MAX_BAR_BYTES``: each is then examined on its own, and that one not decoded)."""
        if max(map(len, raws)) > MAX_BAR_BYTES:
            raise msgspec.ValidationError(_TOO_BIG)
        return self.bars.decode(self.join(raws))  # type: ignore[no-any-return]

    def join(self, raws: list[msgspec.Raw]) -> bytes:
        """One array of the given elements, in the codec's format."""
        if self.json:
            return b"[" + b",".join(raws) + b"]"
        n = len(raws)
        header = (
            bytes([0x90 | n])
            if n < 16
            else (b"\xdc" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xdd" + n.to_bytes(4, "big"))
        )
        return header + b"".join(raws)


def open_envelope(
    codec: Codec, body: bytes | bytearray, errors: Errors
) -> tuple[str | None, list[msgspec.Raw] | None]:
    """The envelope with each bar left as raw bytes (views of ``body``): its provider
    and bars, the bars' count checked against the cap; errors of its shape added. A
    MessagePack body is first bounded by the length its ``bars`` header states (a
    JSON body was by ``JsonBound``)."""
    if not codec.json:
        check_body_size(len(body), min(msgpack_bars_bound(body), codec.max_bars + 1))
    try:
        envelope = codec.envelope.decode(body)
    except msgspec.ValidationError:
        provider, raws = _envelope_errors(codec, body, errors)
    except MALFORMED as exc:
        name = JSON if codec.json else MSGPACK
        raise MalformedBodyError(f"body is not valid {name}: {_short(exc)}") from None
    else:
        provider, raws = envelope.provider, envelope.bars
        _provider_errors_into(provider, errors)
    if raws is not None:
        check_bar_count(len(raws), codec.max_bars)
    return provider, raws


def _envelope_errors(
    codec: Codec, body: bytes | bytearray, errors: Errors
) -> tuple[str | None, list[msgspec.Raw] | None]:
    """The envelope, read field by field: its errors, and what of it is usable."""
    try:
        fields = codec.fields.decode(body)
    except msgspec.ValidationError:
        try:  # not an object: but well-formed at all? (a 400 if not)
            codec.raw.decode(body)
        except MALFORMED as exc:
            name = JSON if codec.json else MSGPACK
            raise MalformedBodyError(f"body is not valid {name}: {_short(exc)}") from None
        errors.add(None, "$", "body must be an object with 'provider' and 'bars'")
        return None, None
    except MALFORMED as exc:
        raise MalformedBodyError(
            f"body is not valid {JSON if codec.json else MSGPACK}: {_short(exc)}"
        ) from None
    for name in fields:
        if name not in _TOP_FIELDS:
            errors.add(None, str(name), f"unknown field; accepted: {', '.join(_TOP_FIELDS)}")
    provider: str | None = None
    raw_provider = fields.get("provider")
    if raw_provider is None:
        errors.add(None, "provider", "required, a string")
    else:
        try:  # typed: a container is refused without being decoded
            provider = codec.provider.decode(raw_provider)
        except msgspec.ValidationError:
            errors.add(None, "provider", "required, a string")
        else:
            assert provider is not None
            _provider_errors_into(provider, errors)
    raw_bars = fields.get("bars")
    raws: list[msgspec.Raw] | None = None
    if raw_bars is not None:
        if not codec.json:
            length = msgpack_array_length(raw_bars)
            if length is not None:
                check_bar_count(length, codec.max_bars)
        with contextlib.suppress(msgspec.ValidationError):
            raws = (msgspec.json if codec.json else msgspec.msgpack).decode(
                raw_bars, type=list[msgspec.Raw]
            )
    if raws is None:
        errors.add(None, "bars", "required, a list of bars")
    return provider, raws


def bar_or_errors(codec: Codec, raw: msgspec.Raw, index: int, errors: Errors) -> BarIn | None:
    """One bar typed, or its errors (unknown fields, missing and mistyped ones, and the
    rule errors of the fields that did type) added."""
    if len(raw) > MAX_BAR_BYTES:
        errors.add(index, "$", _TOO_BIG)
        return None
    try:
        bar: BarIn = codec.bars.decode(codec.join([raw]))[0]
    except (msgspec.ValidationError, *MALFORMED):
        pass
    else:
        return bar
    try:
        fields = codec.fields.decode(raw)
    except (msgspec.ValidationError, *MALFORMED):
        errors.add(index, "$", "each bar must be an object")
        return None
    if not all(isinstance(key, str) for key in fields):  # MessagePack maps may have others
        errors.add(index, "$", "field names must be strings")
        return None
    typed: dict[str, Any] = {}
    for name in fields:
        if name not in _BAR_FIELD_NAMES:
            errors.add(index, name, f"unknown field; accepted: {', '.join(_BAR_FIELD_NAMES)}")
    for field in _BAR_FIELDS:
        raw_value = fields.get(field.name)
        if raw_value is None:
            if field.required:
                errors.add(index, field.name, "required")
            continue
        if codec.json and field.type is Number and bytes(raw_value)[:1] in (b"[", b"{"):
            errors.add(index, field.name, NOT_A_NUMBER)  # not decoded (see _JsonBarIn)
            continue
        try:  # typed in C: a container where a scalar belongs is refused, not decoded
            typed[field.name] = codec.field[field.name].decode(raw_value)
        except (msgspec.ValidationError, *MALFORMED) as exc:
            errors.add(index, field.name, _lower_first(_short(exc)))
    # the rules of the fields that did type (placeholders stand in for the others)
    checked = check_bar(msgspec.structs.replace(_PLACEHOLDER, **typed))
    all_prices = all(name in typed for name in PRICE_FIELDS)
    if isinstance(checked, list):
        for field_name, message in checked:
            if field_name in typed and (all_prices or message not in ORDER_RULES):
                errors.add(index, field_name, message)
    return None


_TOO_BIG = f"a bar may take at most {MAX_BAR_BYTES} bytes; not decoded"
_PLACEHOLDER = BarIn("X", datetime(2000, 1, 1, tzinfo=UTC), "0", "0", "0", "0", "0")


def _provider_errors_into(provider: str, errors: Errors) -> None:
    if not provider_ok(provider):
        errors.add(None, "provider", PROVIDER_RULE)


def _short(exc: BaseException) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
