"""``OPTIONS`` answers ``Allow`` with every method of its path.

Litestar 2.x builds a path's route again each time a handler of that path is registered
(every handler of a controller, then the controller itself on the app), and the new
route keeps the automatic ``OPTIONS`` handler of the first one, whose closure reads that
first route's methods: ``OPTIONS /v1/bars`` answered ``Allow: OPTIONS, POST`` without
``GET`` (litestar-org/litestar#4169, fixed in Litestar 3 only). ``point_options_at_routes``
points each automatic handler at the route that finally serves it, for every path
(``http.framework.FrameworkFixes`` does it for each route as the app registers it)."""

from __future__ import annotations

from litestar import Litestar
from litestar.routes import HTTPRoute

_AUTOMATIC = f"{HTTPRoute.create_options_handler.__qualname__}.<locals>.options_handler"


def point_options_at_routes(app: Litestar) -> None:
    """Make every automatic ``OPTIONS`` handler of ``app`` list its own route's methods."""
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            point_options_at_route(route)


def point_options_at_route(route: HTTPRoute) -> None:
    """Make the automatic ``OPTIONS`` handler of ``route`` (if it has one) list
    ``route``'s methods; called again for a path's later route, the last one wins.

    Raises ``RuntimeError`` when Litestar's handler no longer has the shape this relies on
    (at start-up, never silently wrong)."""
    if "OPTIONS" not in route.route_handler_map:
        return
    handler, _ = route.route_handler_map["OPTIONS"]
    fn = handler.fn
    if getattr(fn, "__qualname__", None) != _AUTOMATIC:
        return  # an OPTIONS handler of our own answers for itself
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
