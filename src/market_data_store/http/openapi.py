"""The OpenAPI document (``/schema/openapi.json``): what Litestar derives from the
handlers, plus what it cannot see. ``POST /v1/bars`` decodes its body itself (msgspec,
JSON or MessagePack), so its request body is described here from the very structs it
is decoded into (``ingest.codec``), by msgspec's own JSON Schema."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, cast

import msgspec
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import (
    Components,
    OpenAPI,
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
                schema["properties"][key]["maxItems"] = max_bars


@dataclass
class IngestOperation(Operation):
    """``POST /v1/bars``: the request body, in both media types it is accepted in."""

    def __post_init__(self) -> None:
        self.request_body = _request_body(
            ingest_request_schema(),
            "A provider and its bars (Core Bar fields). Prices and volume: decimal "
            "strings or numbers, kept exact. Rules JSON Schema cannot say (high >= "
            "max(open, close) >= min(open, close) >= low; ts as an instant, after its "
            f"offset: {TS_RANGE_RULE}; at most {MAX_SCALE} digits after the point as "
            "written, trailing zeros too; decimal strings below "
            f"10^{MAX_INTEGER_DIGITS} in magnitude, exponent included) are answered "
            "422 with every error listed.",
        )


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
    for path_item in (document.paths or {}).values():
        for method in _METHODS:
            operation: Operation | None = getattr(path_item, method)
            for parameter in (operation.parameters or []) if operation else []:
                if isinstance(parameter, Parameter) and isinstance(parameter.schema, Schema):
                    parameter.schema = _without_null(parameter.schema)


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
