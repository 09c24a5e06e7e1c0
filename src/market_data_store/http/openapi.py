"""The OpenAPI document (``/schema/openapi.json``): what Litestar derives from the
handlers, plus what it cannot see. ``POST /v1/bars`` decodes its body itself (msgspec,
JSON or MessagePack), so its request body is described here from the very structs it
is decoded into (``ingest.codec``), by msgspec's own JSON Schema."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import msgspec
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec import OpenAPIMediaType as MediaTypeSpec

from market_data_store import __version__
from market_data_store.ingest import (
    CSV,
    CSV_COLUMNS,
    JSON,
    KINDS,
    MAX_INTEGER_DIGITS,
    MAX_SCALE,
    MSGPACK,
    PROVIDER_SCHEMA,
    TS_RANGE_RULE,
    FactKind,
    IngestRequest,
    bar_field_schemas,
    fact_field_schemas,
)

from .problems import PROBLEM_JSON

_REF = "#/$defs/{name}"


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every ``$ref`` replaced by its definition (the structs nest, never recurse)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            return _inline(defs[ref.rsplit("/", 1)[1]], defs)
        return {key: _inline(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(value, defs) for value in node]
    return node


def ingest_request_schema(
    request: type[msgspec.Struct] = IngestRequest,
    key: str = "bars",
    field_schemas: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """msgspec's JSON Schema of what an ingest route decodes its body into (``request``:
    ``provider`` and the list ``key``), self-contained (Litestar builds
    ``components/schemas`` from its own registry only), with the rules of each field
    (``field_schemas``; bars': ``ingest.rules``): what msgspec sees of them is only their
    types. The cap on the list is the app's setting (``describe_bars_cap``)."""
    (root,), defs = msgspec.json.schema_components((request,), ref_template=_REF)
    schema: dict[str, Any] = _inline(root, defs)
    properties = schema["properties"]
    properties["provider"] = {**properties["provider"], **PROVIDER_SCHEMA}
    items = properties[key]
    items["minItems"] = 1  # "must not be empty"
    fields = items["items"]["properties"]
    rules = bar_field_schemas() if field_schemas is None else field_schemas
    for name, rule in rules.items():
        kept = {k: value for k, value in fields[name].items() if k == "default"}
        fields[name] = {**rule, **kept}
    return schema


INGEST_PATHS = ("/v1/bars", *(f"/v1/{kind}" for kind in KINDS))


def describe_bars_cap(app: Litestar, max_bars: int) -> None:
    """``maxItems`` of the list in every ingest route's body (``POST /v1/bars`` and
    ``/v1/<kind>``): ``ingest.max_bars_per_request`` (more is a 413). Called when the
    document is built, and again when the app starts (Litestar may build it anew)."""
    if app.openapi_config is None:
        return
    paths = app.openapi_schema.paths or {}
    for path in INGEST_PATHS:
        operation = paths[path].post if path in paths else None
        body = operation.request_body if operation is not None else None
        if isinstance(body, RequestBody):
            key = path.rsplit("/", 1)[1]
            for media in body.content.values():
                schema = cast(dict[str, Any], media.schema)
                if "properties" in schema:  # not text/csv's string
                    schema["properties"][key]["maxItems"] = max_bars


_CSV_EXAMPLE = (
    f"{','.join(CSV_COLUMNS)}\n"
    "ibkr,AAPL,1m,2024-01-02T14:30:00Z,187.15,187.40,186.90,187.02,120034,false,"
    "2024-01-02T14:31:00.123456Z\n"
)
CSV_BODY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "description": (
        "A restore: bars as `GET /v1/bars` exports them with `Accept: text/csv`. UTF-8 "
        "CSV (RFC 4180: double quotes where needed; `\\n` or `\\r\\n` line ends; one "
        "line per row; blank lines skipped). A header row names the columns, in any "
        "order: provider, symbol, resolution, ts, open, high, low, close, volume "
        "(required), delayed (`true`/`false`, default false), updated_at (default: when "
        "the store accepts the request). An unknown, repeated or missing column is a "
        "422 naming it. ts and updated_at: RFC 3339 instants as JSON bars' ts; prices "
        "and volume: plain decimals (as PostgreSQL prints them); every value under the "
        "same rules as a JSON bar's, every problem listed by data row index (the first "
        "row after the header is 0). updated_at is the version a row restores: a row "
        "never overwrites a stored one updated later, restoring twice changes nothing, "
        "and an updated_at after now is refused. At most "
        "`ingest.max_bars_per_request` rows (line ends are counted as the body "
        "arrives: 413)."
    ),
    "example": _CSV_EXAMPLE,
}


@dataclass
class IngestOperation(Operation):
    """``POST /v1/bars``: the request body, in every media type it is accepted in (a
    provider and its bars in JSON or MessagePack; a restore's CSV)."""

    def __post_init__(self) -> None:
        self.request_body = _request_body(
            ingest_request_schema(),
            "A provider and its bars (Core Bar fields). Prices and volume: decimal "
            "strings or numbers, kept exact. Rules JSON Schema cannot say (high >= "
            "max(open, close) >= min(open, close) >= low; ts as an instant, after its "
            f"offset: {TS_RANGE_RULE}; at most {MAX_SCALE} digits after the point as "
            "written, trailing zeros too; decimal strings below "
            f"10^{MAX_INTEGER_DIGITS} in magnitude, exponent included) are answered "
            "422 with every error listed. Or text/csv: a restore of the export, with "
            "the same rules.",
        )
        self.request_body.content[CSV] = MediaTypeSpec(schema=cast(Schema, CSV_BODY_SCHEMA))


def _request_body(schema: dict[str, Any], description: str) -> RequestBody:
    # a plain JSON Schema object (OpenAPI 3.1 schemas are JSON Schema 2020-12)
    shown = cast(Schema, schema)
    return RequestBody(
        content={JSON: MediaTypeSpec(schema=shown), MSGPACK: MediaTypeSpec(schema=shown)},
        description=description,
        required=True,
    )


def fact_operation(kind: FactKind) -> type[Operation]:
    """The ``Operation`` of ``POST /v1/<kind>``: its request body in both media types."""
    request = msgspec.defstruct(
        f"{kind.item.__name__}Request",
        [("provider", str), (kind.kind, list[kind.item])],  # type: ignore[name-defined]
        forbid_unknown_fields=True,
    )
    schema = ingest_request_schema(request, kind.kind, fact_field_schemas(kind))
    about = " ".join((kind.item.__doc__ or "").split())
    description = (
        f"A provider and its {kind.kind} ({about}). Decimals: strings "
        "or numbers, kept exact. Rules JSON Schema cannot say (instants after their "
        f"offset: {TS_RANGE_RULE}; at most {MAX_SCALE} digits after the point as "
        f"written; decimal strings below 10^{MAX_INTEGER_DIGITS} in magnitude, exponent "
        "included; a strike above 0) are answered 422 with every error listed."
    )

    @dataclass
    class FactIngestOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = _request_body(schema, description)

    return FactIngestOperation


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="market-data-store",
        version=__version__,
        components=Components(
            security_schemes={
                "BearerToken": SecurityScheme(
                    type="http", scheme="bearer", description="The admin token (`admin_token`)"
                ),
                "TenantToken": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description=(
                        "A tenant's token (`auth.tenants`): required once tenants are "
                        "configured, and it names the tenant; without tenants, none"
                    ),
                ),
            },
        ),
    )


_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def parameters_never_null(document: OpenAPI) -> None:
    """A query or header parameter is absent or has a value: ``null`` has no spelling
    there. ``x: str | None = None`` is documented as what it is when given (a string),
    not ``oneOf [string, null]`` (a generator sent ``last-event-id: null``, ``?end=null``
    as valid values). What the parameter's declaration adds (description, pattern...)
    is kept."""
    for operation in _operations(document):
        for parameter in operation.parameters or []:
            if isinstance(parameter, Parameter) and isinstance(parameter.schema, Schema):
                parameter.schema = _without_null(parameter.schema)


def _operations(document: OpenAPI) -> Iterator[Operation]:
    """Every operation of the document."""
    for path_item in (document.paths or {}).values():
        for method in _METHODS:
            operation: Operation | None = getattr(path_item, method)
            if operation is not None:
                yield operation


RETRY_AFTER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.INTEGER, minimum=0),
    required=True,
    description="Seconds to wait before trying again (RFC 9110 10.2.3)",
)


def retry_after_declared(document: OpenAPI) -> None:
    """Every 503 problem (a full queue, a tenant's share, the database down, no export
    slot, stopping) carries ``Retry-After`` (``problems``, ``writes``): the document
    says so, on each of them. The probes' 503 (a health report) has none."""
    for operation in _operations(document):
        unavailable = (operation.responses or {}).get("503")
        if isinstance(unavailable, OpenAPIResponse) and PROBLEM_JSON in (unavailable.content or {}):
            unavailable.headers = {**(unavailable.headers or {}), "Retry-After": RETRY_AFTER}


def _is_null(schema: object) -> bool:
    return isinstance(schema, Schema) and schema.type == OpenAPIType.NULL


def _without_null(schema: Schema) -> Schema:
    if schema.one_of and any(_is_null(branch) for branch in schema.one_of):
        rest = [branch for branch in schema.one_of if not _is_null(branch)]
        if len(rest) == 1 and isinstance(rest[0], Schema):
            declared = {
                field.name: value
                for field in dataclasses.fields(schema)
                if field.name != "one_of" and (value := getattr(schema, field.name)) is not None
            }
            return dataclasses.replace(rest[0], **declared)
        schema = dataclasses.replace(schema, one_of=rest)
    if isinstance(schema.type, list) and OpenAPIType.NULL in schema.type:
        types = [kind for kind in schema.type if kind != OpenAPIType.NULL]
        schema = dataclasses.replace(schema, type=types[0] if len(types) == 1 else types)
    if schema.enum is not None and None in schema.enum:
        schema = dataclasses.replace(
            schema, enum=[value for value in schema.enum if value is not None]
        )
    return schema


@dataclass
class ReadOperation(Operation):
    """A read (``GET /v1/bars``, ``GET /v1/<kind>``): its 200 is a JSON page, or with
    ``Accept: text/csv`` / ``application/x-ndjson`` a stream of every row."""

    def __post_init__(self) -> None:
        ok = self.responses.get("200") if self.responses else None
        if isinstance(ok, OpenAPIResponse) and ok.content is not None:
            text = Schema(type=OpenAPIType.STRING)
            ok.content["text/csv"] = MediaTypeSpec(schema=text)
            ok.content["application/x-ndjson"] = MediaTypeSpec(schema=text)
            ok.description += (
                "; with `Accept: text/csv`, CSV with a header row; with "
                "`Accept: application/x-ndjson`, one JSON object per line"
            )
