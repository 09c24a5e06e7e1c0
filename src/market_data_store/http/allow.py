"""``OPTIONS`` answers ``Allow`` with every method of its path.

Litestar 2.x builds a path's route again each time a handler of that path is registered
(every handler of a controller, then the controller itself on the app), and the new
route keeps the automatic ``OPTIONS`` handler of the first one, whose closure reads that
first route's methods: ``OPTIONS /v1/bars`` answered ``Allow: OPTIONS, POST`` without
``GET`` (litestar-org/litestar#4169, fixed in Litestar 3 only). ``point_options_at_routes``
points each automatic handler at the route that finally serves it, for every path."""

from __future__ import annotations

from litestar import Litestar
from litestar.routes import HTTPRoute

_AUTOMATIC = f"{HTTPRoute.create_options_handler.__qualname__}.<locals>.options_handler"


def point_options_at_routes(app: Litestar) -> None:
    """Make every automatic ``OPTIONS`` handler of ``app`` list its own route's methods.

    Raises ``RuntimeError`` when Litestar's handler no longer has the shape this relies on
    (at start-up, never silently wrong)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        handler, _ = route.route_handler_map["OPTIONS"]
        fn = handler.fn
        if getattr(fn, "__qualname__", None) != _AUTOMATIC:
            continue  # an OPTIONS handler of our own answers for itself
        cells = [
            cell
            for cell in getattr(fn, "__closure__", None) or ()
            if isinstance(cell.cell_contents, HTTPRoute)
        ]
        if len(cells) != 1:
            raise RuntimeError(
                f"Litestar's automatic OPTIONS handler of {route.path} no longer reads its "
                "route from a closure: revisit market_data_store.http.allow"
            )
        cells[0].cell_contents = route
