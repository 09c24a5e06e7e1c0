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


def _loose(kind: Any) -> Any:
    """A field's type as decoded from JSON on its own: a number as ``Any`` (its text
    kept by ``float_hook``), an optional number too."""
    if kind is Number or kind == Number | None:
        return Any
    return kind


# what a decoder raises for bytes that are not the format at all (or nest too deeply)
MALFORMED = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


class Codec:
    """Decoders of one media type and cap (JSON numbers with a fraction or exponent
    arrive as their own text: ``float_hook=str``). Bars by default; another kind of
    item (``ingest.facts``) names its struct (``item``, and ``json_item`` with its
    numbers typed ``Any``), the body's list (``key``), what one item is called in
    messages (``what``) and the most bytes one may take (``item_bytes``)."""

    def __init__(
        self,
        media_type: str,
        max_bars: int,
        *,
        item: type[msgspec.Struct] = BarIn,
        json_item: type[msgspec.Struct] | None = None,
        key: str = "bars",
        what: str = "bar",
        item_bytes: int = MAX_BAR_BYTES,
    ) -> None:
        self.json = media_type == JSON
        self.max_bars = max_bars
        self.key, self.what, self.item_bytes = key, what, item_bytes
        self.msgpack_key = msgspec.msgpack.encode(key)  # how a MessagePack body names it
        self.top_fields = ("provider", key)
        self.item_fields = msgspec.structs.fields(item)
        self.item_names = tuple(f.name for f in self.item_fields)
        self.too_big = f"a {what} may take at most {item_bytes} bytes; not decoded"
        # MessagePack states an array's length first: the cap is checked before a
        # single element is decoded.
        items_type: Any = (
            list[msgspec.Raw]
            if self.json
            else Annotated[list[msgspec.Raw], msgspec.Meta(max_length=max_bars)]
        )
        envelope = msgspec.defstruct(
            "_Envelope",
            [("provider", str), (key, items_type)],
            forbid_unknown_fields=True,
            gc=False,
        )
        self.provider: Any = (msgspec.json if self.json else msgspec.msgpack).Decoder(str)
        if self.json:
            self.envelope: Any = msgspec.json.Decoder(envelope)
            json_type = json_item or (_JsonBarIn if item is BarIn else item)
            self.bars: Any = msgspec.json.Decoder(list[json_type], float_hook=str)  # type: ignore[valid-type]
            self.fields: Any = msgspec.json.Decoder(dict[str, msgspec.Raw])
            self.field: dict[str, Any] = {
                f.name: msgspec.json.Decoder(_loose(f.type), float_hook=str)
                for f in self.item_fields
            }
            self.raw: Any = msgspec.json.Decoder(msgspec.Raw)
        else:
            self.envelope = msgspec.msgpack.Decoder(envelope)
            self.bars = msgspec.msgpack.Decoder(list[item])  # type: ignore[valid-type]
            self.fields = msgspec.msgpack.Decoder(dict[Any, msgspec.Raw])
            self.field = {f.name: msgspec.msgpack.Decoder(f.type) for f in self.item_fields}
            self.raw = msgspec.msgpack.Decoder(msgspec.Raw)

    def typed(self, raws: list[msgspec.Raw]) -> list[BarIn]:
        """The bars typed in one call (``ValidationError`` if any is over
        ``MAX_BAR_BYTES``: each is then examined on its own, and that one not decoded)."""
        if max(map(len, raws)) > self.item_bytes:
            raise msgspec.ValidationError(self.too_big)
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
        bound = msgpack_bars_bound(body, codec.msgpack_key)
        check_body_size(len(body), min(bound, codec.max_bars + 1), codec.item_bytes, codec.what)
    try:
        envelope = codec.envelope.decode(body)
    except msgspec.ValidationError:
        provider, raws = _envelope_errors(codec, body, errors)
    except MALFORMED as exc:
        name = JSON if codec.json else MSGPACK
        raise MalformedBodyError(f"body is not valid {name}: {_short(exc)}") from None
    else:
        provider, raws = envelope.provider, getattr(envelope, codec.key)
        _provider_errors_into(provider, errors)
    if raws is not None:
        check_bar_count(len(raws), codec.max_bars, codec.what)
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
        errors.add(None, "$", f"body must be an object with 'provider' and '{codec.key}'")
        return None, None
    except MALFORMED as exc:
        raise MalformedBodyError(
            f"body is not valid {JSON if codec.json else MSGPACK}: {_short(exc)}"
        ) from None
    for name in fields:
        if name not in codec.top_fields:
            accepted = ", ".join(codec.top_fields)
            errors.add(None, str(name), f"unknown field; accepted: {accepted}")
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
    raw_bars = fields.get(codec.key)
    raws: list[msgspec.Raw] | None = None
    if raw_bars is not None:
        if not codec.json:
            length = msgpack_array_length(raw_bars)
            if length is not None:
                check_bar_count(length, codec.max_bars, codec.what)
        with contextlib.suppress(msgspec.ValidationError):
            raws = (msgspec.json if codec.json else msgspec.msgpack).decode(
                raw_bars, type=list[msgspec.Raw]
            )
    if raws is None:
        errors.add(None, codec.key, f"required, a list of {codec.key}")
    return provider, raws


def bar_or_errors(codec: Codec, raw: msgspec.Raw, index: int, errors: Errors) -> BarIn | None:
    """One bar typed, or its errors (unknown fields, missing and mistyped ones, and the
    rule errors of the fields that did type) added."""
    bar, typed = item_or_fields(codec, raw, index, errors)
    if bar is not None or typed is None:
        return bar  # type: ignore[no-any-return]
    # the rules of the fields that did type (placeholders stand in for the others)
    checked = check_bar(msgspec.structs.replace(_PLACEHOLDER, **typed))
    all_prices = all(name in typed for name in PRICE_FIELDS)
    if isinstance(checked, list):
        for field_name, message in checked:
            if field_name in typed and (all_prices or message not in ORDER_RULES):
                errors.add(index, field_name, message)
    return None


def item_or_fields(
    codec: Codec, raw: msgspec.Raw, index: int, errors: Errors
) -> tuple[Any, dict[str, Any] | None]:
    """One item typed (and None), or (None and) the fields of it that do type, its
    other problems added (unknown fields, missing and mistyped ones); (None, None) when
    it is no object at all or too large to decode."""
    if len(raw) > codec.item_bytes:
        errors.add(index, "$", codec.too_big)
        return None, None
    try:
        item = codec.bars.decode(codec.join([raw]))[0]
    except (msgspec.ValidationError, *MALFORMED):
        pass
    else:
        return item, None
    try:
        fields = codec.fields.decode(raw)
    except (msgspec.ValidationError, *MALFORMED):
        errors.add(index, "$", f"each {codec.what} must be an object")
        return None, None
    if not all(isinstance(key, str) for key in fields):  # MessagePack maps may have others
        errors.add(index, "$", "field names must be strings")
        return None, None
    typed: dict[str, Any] = {}
    for name in fields:
        if name not in codec.item_names:
            errors.add(index, name, f"unknown field; accepted: {', '.join(codec.item_names)}")
    for field in codec.item_fields:
        raw_value = fields.get(field.name)
        if raw_value is None:
            if field.required:
                errors.add(index, field.name, "required")
            continue
        numeric = field.type is Number or field.type == Number | None
        if codec.json and numeric and bytes(raw_value)[:1] in (b"[", b"{"):
            errors.add(index, field.name, NOT_A_NUMBER)  # not decoded (see _JsonBarIn)
            continue
        try:  # typed in C: a container where a scalar belongs is refused, not decoded
            typed[field.name] = codec.field[field.name].decode(raw_value)
        except (msgspec.ValidationError, *MALFORMED) as exc:
            errors.add(index, field.name, _lower_first(_short(exc)))
    return None, typed


_PLACEHOLDER = BarIn("X", datetime(2000, 1, 1, tzinfo=UTC), "0", "0", "0", "0", "0")


def _provider_errors_into(provider: str, errors: Errors) -> None:
    if not provider_ok(provider):
        errors.add(None, "provider", PROVIDER_RULE)


def _short(exc: BaseException) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
