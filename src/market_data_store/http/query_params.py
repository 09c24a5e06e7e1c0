"""One rule for every route: a query parameter that takes one value is given once.

Litestar would quietly use one of the values of ``?limit=1&limit=2`` and never
look at the other. ``ScalarQueryCheck`` reads, once per route as it is registered, which
query parameters each route handler takes as a single value (from the same
parameter model Litestar parses them with); its ``before_request`` hook answers a
400 problem naming every such parameter given more than once. Repeatable
parameters (``list[...]``, e.g. ``coordinator_id``) and parameters a route does
not take are left alone. A request without a query string costs one test.

Nor is ``null`` a value: Litestar reads ``?end=null`` or ``?min_level=null`` as the
parameter left out, where the document (``openapi.parameters_never_null``) says a
date-time or one of the levels; the hook answers 400 for those too (a ``str``
parameter keeps ``"null"`` as the text it is, and checks it as such).
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request
from litestar.exceptions import ValidationException
from litestar.routes import HTTPRoute
from litestar.typing import FieldDefinition

MESSAGE = "given more than once; give it once"
NULL_MESSAGE = "null is not a value: leave the parameter out"


def _null_read_as_absent(field: FieldDefinition | None) -> bool:
    """Litestar decodes the text ``null`` to ``None`` for an optional non-``str`` type."""
    return (
        field is not None
        and field.is_optional
        and not any(t.is_subclass_of(str) for t in field.inner_types if not t.is_none_type)
    )


class ScalarQueryCheck:
    """The ``before_request`` hook; it learns each route as the app registers it
    (``add_route``, from ``http.framework.FrameworkFixes``), or all at once (``bind``)."""

    def __init__(self) -> None:
        self._scalars: dict[int, tuple[str, ...]] = {}  # id(route handler) -> aliases
        self._nullable: dict[int, tuple[str, ...]] = {}  # same; where "null" would be None

    def bind(self, app: Litestar) -> None:
        """Read every route of ``app``."""
        for route in app.routes:
            if isinstance(route, HTTPRoute):
                self.add_route(route)

    def add_route(self, route: HTTPRoute) -> None:
        """Read the query parameters of ``route``'s handlers (again, for a path's later
        route: entries are per handler)."""
        for handler, kwargs_model in route.route_handler_map.values():
            names = sorted(
                p.field_alias for p in kwargs_model.expected_query_params if not p.is_sequence
            )
            if names:
                self._scalars[id(handler)] = tuple(names)
            fields = handler.parsed_fn_signature.parameters
            nullable = sorted(
                p.field_alias
                for p in kwargs_model.expected_query_params
                if not p.is_sequence and _null_read_as_absent(fields.get(p.field_name))
            )
            if nullable:
                self._nullable[id(handler)] = tuple(nullable)

    async def __call__(self, request: Request[Any, Any, Any]) -> None:
        # async on purpose: Litestar runs a synchronous hook in a worker thread (a thread
        # hop per request, about 0.3 ms: measured with the service's trivial route)
        if not request.scope.get("query_string"):
            return
        key = id(request.route_handler)
        names = self._scalars.get(key, ())
        query = request.query_params
        repeated = [name for name in names if len(query.getall(name, [])) > 1]
        if repeated:
            raise ValidationException(
                f"query parameter(s) {', '.join(repeated)} given more than once",
                extra=[{"key": name, "source": "query", "message": MESSAGE} for name in repeated],
            )
        null = [name for name in self._nullable.get(key, ()) if query.get(name) == "null"]
        if null:
            raise ValidationException(
                f"query parameter(s) {', '.join(null)} given as null",
                extra=[{"key": name, "source": "query", "message": NULL_MESSAGE} for name in null],
            )
