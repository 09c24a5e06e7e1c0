"""POST /v1/<kind> bodies into ``FactRow``s: options, quotes, trades, fundamentals, news.

Each kind is a wire struct (Core's model where Core has one, with the fields Core leaves
out or defaults that a key needs made required) and one rule per column, in the order
of its table (``storage.facts``): the rule turns a decoded value into the text COPY
reads, or raises ``_Bad`` with what is wrong. msgspec checks types, integer ranges,
lengths and patterns in C; the rules check the rest (symbols, instants, decimals).

A body is ``{"provider": ..., "<kind>": [...]}`` (JSON or MessagePack), all or
nothing: every problem of every item is collected (index, field, message), as for
bars (the same envelope, bounds and error report: ``codec``). A key sent twice in one
body keeps its last item.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Callable, Generator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from operator import attrgetter, call, itemgetter
from typing import Annotated, Any, Literal

import msgspec

from market_data_store.storage import DEFAULT_TENANT, FACT_TABLES, FactRow, FactTable, copy_text
from market_data_store.storage.facts import NULL

from .bounds import PRESCAN_STEP, JsonBound
from .codec import MALFORMED, Codec, Number, item_or_fields, open_envelope
from .decoder import (
    INLINE_DECODE_BYTES,
    AcceptClock,
    DecodeGate,
    drive_steps,
    read_body,
    run_steps,
)
from .errors import Errors, InvalidBodyError
from .origins import one_per_key
from .rows import CHUNK_BARS, MAX_KNOWN_SYMBOLS, plain_values
from .rules import (
    EARLIEST,
    LATEST,
    NUMBER_PATTERN,
    SYMBOL_PATTERN,
    SYMBOL_RULE,
    TS_RANGE_RULE,
    exact_number,
    number_schema,
    symbol_ok,
    trim,
)

Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
# Lengths are checked in C as the item is decoded; what a text may hold (printable ASCII
# without spaces, a URL's scheme) by the rules below (a pattern here costs a regular
# expression call per value in msgspec; the OpenAPI document states the same pattern).
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
TOKEN_PATTERN = r"^[!-~]+$"
URL_PATTERN = r"^https?://[!-~]+$"


# The docstrings are the schemas' descriptions in the OpenAPI document.
class OptionIn(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """An option snapshot: Core ``OptionSnapshot`` and ``ts``, the snapshot's time
    (Core has none; it is part of the key)."""

    symbol: str
    expiry: datetime
    strike: Number
    option_type: Literal["C", "P"]
    ts: datetime
    bid: Number | None = None
    ask: Number | None = None
    last: Number | None = None
    volume: Count = 0
    open_interest: Count = 0
    implied_volatility: Number | None = None
    delta: Number | None = None
    gamma: Number | None = None
    theta: Number | None = None
    vega: Number | None = None
    delayed: bool = False


class QuoteIn(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A quote: Core ``Quote`` with ``timestamp`` required (Core's default, now, would
    make a retried quote a new one)."""

    symbol: str
    timestamp: datetime
    bid: Number | None = None
    ask: Number | None = None
    last: Number | None = None
    bid_size: Count | None = None
    ask_size: Count | None = None
    volume: Count = 0
    delayed: bool = False


class TradeIn(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A trade: Core ``Trade`` and ``trade_id``, the venue's id or the producer's
    sequence number (two identical prints are two trades)."""

    symbol: str
    ts: datetime
    trade_id: Id
    price: Number
    size: Count
    exchange: Code | None = None
    conditions: Annotated[list[Code], msgspec.Meta(max_length=16)] = msgspec.field(
        default_factory=list
    )


class FundamentalsIn(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A company's fundamentals as of a date (the store's own model: Core has none).
    Amounts are exact decimals in the reporting currency; a figure not known is left out."""

    symbol: str
    asof: date
    total_assets: Number | None = None
    total_liabilities: Number | None = None
    net_income: Number | None = None
    eps: Number | None = None


class NewsIn(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A news article (the store's own model): the provider's ``article_id`` is its key."""

    article_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    url: Annotated[str, msgspec.Meta(min_length=8, max_length=2048)]
    published_at: datetime
    symbols: Annotated[list[str], msgspec.Meta(max_length=32)] = msgspec.field(default_factory=list)
    sentiment_score: Number | None = None


class _Bad(Exception):
    """A value its rule refuses (``message`` says why)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


Rule = Callable[[Any], str]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


Sign = Literal["any", "not_negative", "positive", "unit"]


class _Number:
    """A decimal (``Number``; None is NULL unless ``required``): the plain text as sent
    on the fast path, else examined exactly (``exact_number``). A chunk's plain numbers
    are checked all at once (``_plain_numbers``) before any of them is examined alone."""

    __slots__ = ("required", "sign")

    def __init__(self, sign: Sign = "any", *, required: bool = False) -> None:
        self.sign = sign
        self.required = required

    def __call__(self, value: Any) -> str:
        if value is None:
            if self.required:  # JSON's null types as a number's ``Any``
                raise _Bad("required, a number or a decimal string")
            return NULL
        exact = exact_number(value)
        if isinstance(exact, str):
            raise _Bad(exact)
        number, text = exact
        if self.sign == "not_negative" and number < 0:
            raise _Bad("must be >= 0")
        if self.sign == "positive" and number <= 0:
            raise _Bad("must be > 0")
        if self.sign == "unit" and not -1 <= number <= 1:
            raise _Bad("must be from -1 to 1")
        return text


def _count(value: Any) -> str:
    return NULL if value is None else str(value)  # msgspec checked the range


def _flag(value: Any) -> str:
    return "t" if value else "f"


def _text(value: Any) -> str:
    return NULL if value is None else copy_text(value)  # msgspec checked it


TOKEN_RULE = "must be printable ASCII without spaces"


def _token(value: str | None) -> str:
    """An id or code (its length checked by msgspec): printable ASCII, no space."""
    if value is None:
        return NULL
    if not (value.isascii() and value.isprintable()) or " " in value:
        raise _Bad(TOKEN_RULE)
    return copy_text(value)


def _url(value: str) -> str:
    if (
        not value.startswith(("https://", "http://"))
        or value in ("https://", "http://")
        or not (value.isascii() and value.isprintable())
        or " " in value
    ):
        raise _Bad("must be an http:// or https:// URL of printable ASCII without spaces")
    return copy_text(value)


def _title(value: str) -> str:
    if _CONTROL.search(value):
        raise _Bad("must not hold control characters (tabs, newlines...)")
    return copy_text(value)


def _instant() -> Rule:
    """An aware instant in range, as UTC text (the last one remembered: a chain's items
    share their times)."""
    last: list[Any] = [None, ""]  # the last instant and its text

    def rule(value: datetime) -> str:
        if value == last[0]:
            text: str = last[1]
            return text
        if value.utcoffset() is None:
            raise _Bad("must include a timezone (e.g. 2024-01-02T14:30:00Z)")
        if not EARLIEST <= value < LATEST:
            raise _Bad(TS_RANGE_RULE)
        text = (value if value.tzinfo is UTC else value.astimezone(UTC)).isoformat()
        last[0], last[1] = value, text
        return text

    return rule


def _day(value: date) -> str:
    if not EARLIEST.date() <= value < LATEST.date():
        raise _Bad("must be from 1800-01-01 to 2199-12-31")
    return value.isoformat()


class _Symbols:
    """Symbols found valid before (sent -> stored): the common item's test is one lookup."""

    def __init__(self) -> None:
        self.known: dict[str, str] = {}

    def __call__(self, sent: str) -> str:
        stored = self.known.get(sent)
        if stored is not None:
            return stored
        symbol = trim(sent).upper()
        if not symbol_ok(sent, symbol):
            raise _Bad(SYMBOL_RULE)
        if len(self.known) >= MAX_KNOWN_SYMBOLS:
            self.known.clear()
        self.known[sent] = copy_text(symbol)
        return self.known[sent]


def _array(elements: list[str]) -> str:
    """A text[] literal, as COPY text."""
    quoted = ('"' + e.replace("\\", "\\\\").replace('"', '\\"') + '"' for e in elements)
    return copy_text("{" + ",".join(quoted) + "}")


MAX_KNOWN_LISTS = 10_000


class _Lists:
    """A list column's literal; the lists met before remembered (a trade's conditions,
    an article's symbols repeat), bounded by ``MAX_KNOWN_LISTS``."""

    def __init__(self, symbols: bool) -> None:
        self.symbols = symbols  # each element a symbol (checked, upper-cased), else as sent
        self.known: dict[tuple[str, ...], str] = {}

    def __call__(self, value: list[str]) -> str:
        key = tuple(value)
        literal = self.known.get(key)
        if literal is not None:
            return literal
        elements = value
        if not self.symbols:
            for position, sent in enumerate(value):
                if not (sent.isascii() and sent.isprintable()) or " " in sent:
                    raise _Bad(f"[{position}] {TOKEN_RULE}")
        else:
            elements = []
            for position, sent in enumerate(value):
                symbol = trim(sent).upper()
                if not symbol_ok(sent, symbol):
                    raise _Bad(f"[{position}] {SYMBOL_RULE}")
                elements.append(symbol)
        literal = _array(elements) if elements else "{}"
        if len(self.known) >= MAX_KNOWN_LISTS:
            self.known.clear()
        self.known[key] = literal
        return literal


@dataclass(frozen=True)
class FactKind:
    """One kind as ingest knows it: its table, wire struct and the rules of its columns
    (a fresh set per decoder: some remember values)."""

    table: FactTable
    item: type[msgspec.Struct]
    item_bytes: int  # the most one item may take as sent (more: 422, not decoded)
    commas_per_item: int  # what the JSON pre-count allows per item
    rules: Callable[[], tuple[Rule, ...]]

    @property
    def kind(self) -> str:
        return self.table.kind

    @property
    def json_item(self) -> type[msgspec.Struct]:
        """The struct JSON bodies are decoded into: numbers typed ``Any``, so that
        ``float_hook=str`` keeps a JSON number's text."""
        return _json_items[self.kind]


def _option_rules() -> tuple[Rule, ...]:
    return (
        _Symbols(),
        _instant(),
        _Number("positive", required=True),
        _text,
        _instant(),
        _Number(),
        _Number(),
        _Number(),
        _count,
        _count,
        _Number("not_negative"),
        _Number(),
        _Number(),
        _Number(),
        _Number(),
        _flag,
    )


def _quote_rules() -> tuple[Rule, ...]:
    return (_Symbols(), _instant(), _Number(), _Number(), _Number(), _count, _count, _count, _flag)


def _trade_rules() -> tuple[Rule, ...]:
    return (
        _Symbols(),
        _instant(),
        _token,
        _Number(required=True),
        _count,
        _token,
        _Lists(symbols=False),
    )


def _fundamentals_rules() -> tuple[Rule, ...]:
    return (_Symbols(), _day, _Number(), _Number(), _Number(), _Number())


def _news_rules() -> tuple[Rule, ...]:
    return (_token, _Lists(symbols=True), _title, _url, _instant(), _Number("unit"))


KINDS: dict[str, FactKind] = {
    k.kind: k
    for k in (
        # the most commas a valid item may hold, its texts full of them (the JSON pre-count
        # counts those in strings too); the most bytes, every character escaped
        FactKind(FACT_TABLES["options"], OptionIn, 1024, 64, _option_rules),
        FactKind(FACT_TABLES["quotes"], QuoteIn, 1024, 48, _quote_rules),
        FactKind(FACT_TABLES["trades"], TradeIn, 2048, 400, _trade_rules),
        FactKind(FACT_TABLES["fundamentals"], FundamentalsIn, 1024, 48, _fundamentals_rules),
        FactKind(FACT_TABLES["news"], NewsIn, 32 * 1024, 4400, _news_rules),
    )
}
for _k in KINDS.values():  # the wire's fields are the table's columns (rules in its order)
    assert set(_k.item.__struct_fields__) == set(_k.table.names), _k.kind
    assert len(_k.rules()) == len(_k.table.names), _k.kind


def _json_variant(item: type[msgspec.Struct]) -> type[msgspec.Struct]:
    fields: list[Any] = []
    for f in msgspec.structs.fields(item):
        kind = Any if f.type is Number or f.type == Number | None else f.type
        if f.required:
            fields.append((f.name, kind))
        elif f.default_factory is not msgspec.NODEFAULT:
            fields.append((f.name, kind, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, kind, f.default))
    return msgspec.defstruct(f"_Json{item.__name__}", fields, forbid_unknown_fields=True, gc=False)


_json_items = {k.kind: _json_variant(k.item) for k in KINDS.values()}


class _Plan:
    """One kind's decoding state in one decoder: rules, the getters of its values (the
    numbers, the others) and the order that puts them back in column order, the
    getter of its key."""

    def __init__(self, kind: FactKind) -> None:
        self.kind = kind
        self.rules = kind.rules()
        names = kind.table.names
        self.get = attrgetter(*names)
        typed = [(i, rule) for i, rule in enumerate(self.rules) if isinstance(rule, _Number)]
        numbers = [i for i, _ in typed]
        others = [i for i in range(len(names)) if i not in numbers]
        self.width = len(numbers)
        # (a tuple even for one: ``attrgetter`` of one name gives the value itself)
        self.get_numbers = _tuple_getter([names[i] for i in numbers])
        self.get_others = _tuple_getter([names[i] for i in others])
        self.other_rules = tuple(self.rules[i] for i in others)
        self.order = itemgetter(*((numbers + others).index(k) for k in range(len(names))))
        # positions among the numbers of those required, > 0, >= 0
        self.required = [j for j, (_, rule) in enumerate(typed) if rule.required]
        self.positive = [j for j, (_, rule) in enumerate(typed) if rule.sign == "positive"]
        self.not_negative = [j for j, (_, rule) in enumerate(typed) if rule.sign == "not_negative"]
        self.unit = [j for j, (_, rule) in enumerate(typed) if rule.sign == "unit"]
        self.key = _key_getter(kind.table)
        self.codecs: dict[tuple[str, int], Codec] = {}

    def bound(self, codec: Codec) -> JsonBound:
        """The pre-count of a JSON body of this kind."""
        spec = self.kind
        return JsonBound(
            codec.max_bars,
            item_bytes=spec.item_bytes,
            commas_per_item=spec.commas_per_item,
            what=codec.what,
        )

    def codec(self, media_type: str, max_items: int) -> Codec:
        codec = self.codecs.get((media_type, max_items))
        if codec is None:
            k = self.kind
            codec = self.codecs[(media_type, max_items)] = Codec(
                media_type,
                max_items,
                item=k.item,
                json_item=k.json_item,
                key=k.kind,
                what=k.kind.rstrip("s") if k.kind != "news" else "article",
                item_bytes=k.item_bytes,
            )
        return codec


def _key_getter(table: FactTable) -> Callable[[tuple[str, ...]], Any]:
    """A row's natural key as its values say it, a decimal in its canonical spelling
    (``100.50`` and ``100.5`` are one strike to PostgreSQL: one item of a request, the
    later one). Times are UTC text and symbols upper-cased already."""
    positions = [table.names.index(k) for k in table.key]
    decimals = [i for i, k in enumerate(table.key) if table.sql_type(k) == "numeric"]
    get = itemgetter(*positions)
    if not decimals:
        return get

    def key(values: tuple[str, ...]) -> Any:
        parts = list(get(values))
        for i in decimals:
            text = parts[i]
            if "." in text:
                parts[i] = text.rstrip("0").rstrip(".")
        return tuple(parts)

    return key


def _tuple_getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """The named attributes of an object, as a tuple (of however many)."""
    if len(names) == 1:
        (name,) = names
        return lambda item: (getattr(item, name),)
    return attrgetter(*names)


class FactDecoder:
    """Turns POST /v1/<kind> bodies into ``FactRow``s; one per app (its acceptance
    clock shared with the bars' decoder: ``received_at`` orders every version the app
    accepts). One large body is decoded at a time, in steps, as bars are."""

    def __init__(self, clock: AcceptClock | None = None, gate: DecodeGate | None = None) -> None:
        self.clock = clock or AcceptClock()
        self.gate = gate or DecodeGate()  # the bars' decoder's: one large body of any kind
        self._plans = {kind: _Plan(spec) for kind, spec in KINDS.items()}

    async def rows(
        self,
        kind: str,
        body: AsyncIterable[bytes],
        media_type: str,
        max_items: int,
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> list[FactRow]:
        """The rows of a body read from ``body``; ``MalformedBodyError`` (400),
        ``TooManyBarsError`` (413) or ``InvalidBodyError`` (422) otherwise. A body over
        ``INLINE_DECODE_BYTES`` is decoded in steps, one large body at a time."""
        plan = self._plans[kind]
        codec = plan.codec(media_type, max_items)
        data = await read_body(body, plan.bound(codec) if codec.json else None)
        size = len(data)
        steps = _rows_in_steps(plan, codec, data, self.clock.now(), tenant)
        del data  # the generator holds it as long as it needs it
        if size > INLINE_DECODE_BYTES:
            async with self.gate():
                return await drive_steps(steps)
        return run_steps(steps)

    def rows_of(
        self,
        kind: str,
        body: bytes,
        media_type: str,
        max_items: int,
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> list[FactRow]:
        """The rows of a body in memory, in one go (JSON is pre-counted here)."""
        plan = self._plans[kind]
        codec = plan.codec(media_type, max_items)
        if codec.json:
            bound = plan.bound(codec)
            for start in range(0, len(body), PRESCAN_STEP):
                bound.feed(body, start, start + PRESCAN_STEP)
        return run_steps(_rows_in_steps(plan, codec, body, self.clock.now(), tenant))


Steps = Generator[None, None, list[FactRow]]


def _rows_in_steps(
    plan: _Plan, codec: Codec, body: bytes | bytearray, received_at: datetime, tenant: str
) -> Steps:
    """The rows of ``body``, computed in steps of ``CHUNK_BARS`` items (the body was
    pre-counted by the caller)."""
    errors = Errors()
    provider, raws = open_envelope(codec, body, errors)
    if raws is not None and not raws:
        errors.add(None, codec.key, "must not be empty")
    yield
    text = trim(provider) if provider is not None else ""  # encode_rows escapes it
    rows: list[FactRow] = []  # item i of the request made row i
    keys: set[Any] = set()  # of the rows: fewer than rows when a key came twice
    for start in range(0, len(raws or ()), CHUNK_BARS):
        assert raws is not None
        chunk = raws[start : start + CHUNK_BARS]
        try:
            typed: list[Any] = codec.typed(chunk)
        except (msgspec.ValidationError, *MALFORMED):
            alone = [
                _examine(plan, codec, raw, start + offset, errors)
                for offset, raw in enumerate(chunk)
            ]
            if not errors:  # every item typed on its own: kept, never dropped unsaid
                _rows(plan, alone, start, errors, rows, keys, tenant, text, received_at)
        else:
            if _plain_numbers(plan, numbers := [plan.get_numbers(t) for t in typed]):
                _fast_rows(
                    plan, typed, numbers, start, errors, rows, keys, tenant, text, received_at
                )
            else:
                _rows(plan, typed, start, errors, rows, keys, tenant, text, received_at)
            del typed
        if errors:
            rows.clear()
            keys.clear()
        del chunk
        yield
    if errors or raws is None:
        raise InvalidBodyError(errors.kept, errors.total)
    if len(keys) == len(rows):
        return rows
    key = plan.key
    return one_per_key(rows, lambda row: key(row.values))  # a key sent twice: the later


def _rows(
    plan: _Plan,
    typed: list[Any],
    start: int,
    errors: Errors,
    rows: list[FactRow],
    keys: set[Any],
    tenant: str,
    provider: str,
    received_at: datetime,
) -> None:
    """Each item through every rule of its kind."""
    rules, get, key, kind = plan.rules, plan.get, plan.key, plan.kind.kind
    ok = not errors
    for index, item in enumerate(typed, start):
        try:
            values = tuple(map(call, rules, get(item)))
        except _Bad:
            _report(plan, get(item), index, errors)
            ok = False
            continue
        if ok:
            keys.add(key(values))
            rows.append(FactRow(kind, tenant, provider, values, received_at))


def _fast_rows(
    plan: _Plan,
    typed: list[Any],
    numbers: list[tuple[Any, ...]],
    start: int,
    errors: Errors,
    rows: list[FactRow],
    keys: set[Any],
    tenant: str,
    provider: str,
    received_at: datetime,
) -> None:
    """Items whose numbers are all plain and in their domain (``_plain_numbers``):
    their numbers kept as sent, the other rules run."""
    rules, get, key, order, kind = (
        plan.other_rules,
        plan.get_others,
        plan.key,
        plan.order,
        plan.kind.kind,
    )
    width = plan.width
    texts = [NULL if v is None else v for sent in numbers for v in sent]
    ok = not errors
    for offset, item in enumerate(typed):
        try:
            others = tuple(map(call, rules, get(item)))
        except _Bad:
            _report(plan, plan.get(item), start + offset, errors)
            ok = False
            continue
        if ok:
            values = order((*texts[offset * width : (offset + 1) * width], *others))
            keys.add(key(values))
            rows.append(FactRow(kind, tenant, provider, values, received_at))


def _plain_numbers(plan: _Plan, numbers: list[tuple[Any, ...]]) -> bool:
    """Whether every number of a chunk (``numbers``: each item's, in its kind's order;
    None for one not sent) is a plain decimal string within the columns' domain and
    its sign: one pass in C, as for bars (``rows._plain_numbers``). An absent optional
    number counts as 0 here; an absent required one sends the chunk to the rules, which
    say "required"."""
    for j in plan.required:  # JSON's null types as a number's ``Any``: the rules say "required"
        if any(sent[j] is None for sent in numbers):
            return False
    texts = ["0" if v is None else v for sent in numbers for v in sent]
    if not texts:
        return True
    try:
        joined = ",".join(texts)
    except TypeError:  # a JSON integer, a MessagePack float: the rules decide
        return False
    values = plain_values(joined, texts)
    if values is None:
        return False
    width = plan.width
    # strictly inside (-1, 1) as floats means inside exactly (rounding is monotonic); a
    # value of +-1 is decided by the rules
    return (
        all(min(values[j::width]) > 0 for j in plan.positive)
        and all(min(values[j::width]) >= 0 for j in plan.not_negative)
        and all(-1 < value < 1 for j in plan.unit for value in values[j::width])
    )


def _report(plan: _Plan, values: tuple[Any, ...], index: int, errors: Errors) -> None:
    """Every rule's problem with one item's values."""
    for name, rule, value in zip(plan.kind.table.names, plan.rules, values, strict=True):
        try:
            rule(value)
        except _Bad as exc:
            errors.add(index, name, exc.message)


def _examine(plan: _Plan, codec: Codec, raw: msgspec.Raw, index: int, errors: Errors) -> Any:
    """An item that did not type with its chunk: typed alone (its rules' problems
    added), or None and every problem of it (at least one)."""
    before = errors.total
    item, typed = item_or_fields(codec, raw, index, errors)
    if item is not None:
        _report(plan, plan.get(item), index, errors)
        return item
    for name, rule in zip(plan.kind.table.names, plan.rules, strict=True):
        if typed is not None and name in typed:
            try:
                rule(typed[name])
            except _Bad as exc:
                errors.add(index, name, exc.message)
    if errors.total == before:  # not typed, yet no problem named: it must not vanish
        errors.add(index, "$", f"this {codec.what} could not be read")
    return None


def fact_field_schemas(kind: FactKind) -> dict[str, dict[str, Any]]:
    """What JSON Schema can say of the fields msgspec only sees the types of (symbols,
    decimals), by name (merged into the schema of ``kind.item``)."""
    schemas: dict[str, dict[str, Any]] = {}
    symbol = {"type": "string", "minLength": 1, "pattern": SYMBOL_PATTERN}
    types = {f.name: f.type for f in msgspec.structs.fields(kind.item)}
    for field, rule in zip(kind.table.names, kind.rules(), strict=True):
        if types[field] is datetime:
            schemas[field] = {"type": "string", "format": "date-time"}
        elif types[field] is date:
            schemas[field] = {"type": "string", "format": "date"}
        elif isinstance(rule, _Symbols):
            schemas[field] = symbol
        elif isinstance(rule, _Lists):
            element = symbol if rule.symbols else _text_schema(field, TOKEN_PATTERN, item=True)
            schemas[field] = {
                "type": "array",
                "items": element,
                "maxItems": 32 if rule.symbols else 16,
            }
        elif rule is _token:
            schemas[field] = _text_schema(field, TOKEN_PATTERN)
        elif rule is _url:
            schemas[field] = _text_schema(field, URL_PATTERN)
        elif isinstance(rule, _Number):
            number = number_schema(minimum=0 if rule.sign in ("positive", "not_negative") else None)
            if rule.sign == "unit":
                number = {
                    "anyOf": [
                        {"type": "string", "pattern": NUMBER_PATTERN},
                        {"type": "number", "minimum": -1, "maximum": 1},
                    ]
                }
            if not rule.required and field not in _required(kind):
                number = {"anyOf": [*number["anyOf"], {"type": "null"}]}
            schemas[field] = number
    return schemas


_LENGTHS = {"trade_id": (1, 64), "exchange": (1, 16), "conditions": (1, 16),
            "article_id": (1, 128), "url": (8, 2048)}  # fmt: skip
_NULLABLE = {"exchange"}


def _text_schema(field: str, pattern: str, *, item: bool = False) -> dict[str, Any]:
    """A text field's (or a list field's element's) lengths and pattern."""
    low, high = _LENGTHS[field]
    schema = {"type": "string", "minLength": low, "maxLength": high, "pattern": pattern}
    if field in _NULLABLE and not item:
        return {"anyOf": [schema, {"type": "null"}]}
    return schema


def _required(kind: FactKind) -> set[str]:
    return {f.name for f in msgspec.structs.fields(kind.item) if f.required}
