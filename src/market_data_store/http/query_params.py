"""One rule for every route: a query parameter that takes one value is given once.

Litestar would quietly use one of the values of ``?limit=1&limit=2`` and never
look at the other. ``scalar_query_check(app)`` reads, once at start-up, which
query parameters each route handler takes as a single value (from the same
parameter model Litestar parses them with); its ``before_request`` hook answers a
400 problem naming every such parameter given more than once. Repeatable
parameters (``list[...]``, e.g. ``coordinator_id``) and parameters a route does
not take are left alone. A request without a query string costs one test.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request
from litestar.exceptions import ValidationException
from litestar.routes import HTTPRoute

MESSAGE = "given more than once; give it once"


class ScalarQueryCheck:
    """The ``before_request`` hook; ``bind(app)`` once the routes exist."""

    def __init__(self) -> None:
        self._scalars: dict[int, tuple[str, ...]] = {}  # id(route handler) -> aliases

    def bind(self, app: Litestar) -> None:
        for route in app.routes:
            if not isinstance(route, HTTPRoute):
                continue
            for handler, kwargs_model in route.route_handler_map.values():
                names = sorted(
                    p.field_alias for p in kwargs_model.expected_query_params if not p.is_sequence
                )
                if names:
                    self._scalars[id(handler)] = tuple(names)

    def __call__(self, request: Request[Any, Any, Any]) -> None:
        if not request.scope.get("query_string"):
            return
        names = self._scalars.get(id(request.route_handler))
        if not names:
            return
        query = request.query_params
        repeated = [name for name in names if len(query.getall(name, [])) > 1]
        if repeated:
            raise ValidationException(
                f"query parameter(s) {', '.join(repeated)} given more than once",
                extra=[{"key": name, "source": "query", "message": MESSAGE} for name in repeated],
            )
