"""POST /v1/bars bodies into rows, without HTTP: the value rules of a bar, the bounds
checked before decoding, the msgspec codec and its error report, row building, and
``BarDecoder``, which holds one app's state for all of it.

- ``rules``: what a symbol, provider, resolution, timestamp and number may be (also
  read by the GET controller; migration 0003 holds the same domain in the database).
- ``bounds``: a body's size and bar count, checked before it is decoded (413).
- ``codec``: the wire structs (``IngestRequest``, ``BarIn``: the OpenAPI schema),
  decoding, and re-reading what does not type for a complete 422.
- ``rows``: bars checked and built into ``BarRow``s, in steps.
- ``csv_body``: CSV bodies (``text/csv``, a restore of the export) into the same rows,
  through the same rules, in steps.
- ``decoder``: ``BarDecoder``, one per app (clock, known values, decode gate).
- ``origins``: one row per key of a request, and which of its items each row stands
  for (a 201 names a dead-lettered row by those items' indices).
- ``facts``: the other kinds (options, quotes, trades, fundamentals, news): their wire
  structs, rules and ``FactDecoder``.
"""

from .bounds import ENVELOPE_BYTES, MAX_BAR_BYTES
from .codec import JSON, MEDIA_TYPES, MSGPACK, BarIn, IngestRequest
from .csv_body import BAR_MEDIA_TYPES, CSV, CSV_COLUMNS, REQUIRED_COLUMNS
from .decoder import INLINE_DECODE_BYTES, AcceptClock, BarDecoder
from .errors import (
    MAX_REPORTED_ERRORS,
    BarError,
    IngestError,
    InvalidBodyError,
    MalformedBodyError,
    TooManyBarsError,
)
from .facts import KINDS, FactDecoder, FactKind, fact_field_schemas
from .origins import OnePerKey, item_indices, one_per_key
from .rows import CHUNK_BARS
from .rules import (
    EARLIEST,
    LATEST,
    MAX_INTEGER_DIGITS,
    MAX_PROVIDER_LENGTH,
    MAX_SCALE,
    MAX_SYMBOL_LENGTH,
    PROVIDER_PATTERN,
    PROVIDER_RULE,
    PROVIDER_SCHEMA,
    RESOLUTION,
    RESOLUTION_PATTERN,
    SYMBOL_PATTERN,
    SYMBOL_RULE,
    TS_RANGE_RULE,
    bar_field_schemas,
    provider_ok,
    symbol_ok,
    trim,
)

__all__ = [
    "BAR_MEDIA_TYPES",
    "CHUNK_BARS",
    "CSV",
    "CSV_COLUMNS",
    "EARLIEST",
    "ENVELOPE_BYTES",
    "INLINE_DECODE_BYTES",
    "JSON",
    "KINDS",
    "LATEST",
    "MAX_BAR_BYTES",
    "MAX_INTEGER_DIGITS",
    "MAX_PROVIDER_LENGTH",
    "MAX_REPORTED_ERRORS",
    "MAX_SCALE",
    "MAX_SYMBOL_LENGTH",
    "MEDIA_TYPES",
    "MSGPACK",
    "PROVIDER_PATTERN",
    "PROVIDER_RULE",
    "PROVIDER_SCHEMA",
    "REQUIRED_COLUMNS",
    "RESOLUTION",
    "RESOLUTION_PATTERN",
    "SYMBOL_PATTERN",
    "SYMBOL_RULE",
    "TS_RANGE_RULE",
    "AcceptClock",
    "BarDecoder",
    "BarError",
    "BarIn",
    "FactDecoder",
    "FactKind",
    "IngestError",
    "IngestRequest",
    "InvalidBodyError",
    "MalformedBodyError",
    "OnePerKey",
    "TooManyBarsError",
    "bar_field_schemas",
    "fact_field_schemas",
    "item_indices",
    "one_per_key",
    "provider_ok",
    "symbol_ok",
    "trim",
]
