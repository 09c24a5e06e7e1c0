"""``OPTIONS`` lists every method of its path, however the path's handlers were registered
(Litestar 2.x listed only the first handler's: litestar-org/litestar#4169)."""

from __future__ import annotations

from typing import Annotated

import pytest
from litestar import Controller, Litestar, Router, delete, get, patch, post, route
from litestar.params import PathParameter
from litestar.response import Response
from litestar.testing import TestClient

from market_data_store.http.allow import point_options_at_routes


class Things(Controller):
    path = "/things"

    @get(sync_to_thread=False)
    def read(self) -> None:
        return None

    @post(sync_to_thread=False)
    def write(self) -> None:
        return None

    @delete("/{thing_id:int}", sync_to_thread=False)
    def remove(self, thing_id: Annotated[int, PathParameter()]) -> None:
        return None

    @patch("/{thing_id:int}", sync_to_thread=False)
    def change(self, thing_id: Annotated[int, PathParameter()]) -> None:
        return None


@get("/plain", sync_to_thread=False)
def plain_get() -> None:
    return None


@patch("/plain", sync_to_thread=False)
def plain_patch() -> None:
    return None


@get("/nested", sync_to_thread=False)
def nested_get() -> None:
    return None


@post("/nested", sync_to_thread=False)
def nested_post() -> None:
    return None


@route("/own", http_method=["GET", "OPTIONS"], sync_to_thread=False)
def own_options() -> Response[None]:
    return Response(None, status_code=200, headers={"Allow": "mine"})


def app_with_fix() -> Litestar:
    app = Litestar(
        [Things, plain_get, plain_patch, Router("/v2", route_handlers=[nested_get, nested_post])],
        openapi_config=None,
    )
    app.register(own_options)
    point_options_at_routes(app)
    return app


def allowed(client: TestClient[Litestar], path: str) -> set[str]:
    response = client.options(path)
    assert response.status_code == 204, path
    return {method.strip() for method in response.headers["allow"].split(",")}


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/things", {"GET", "POST", "OPTIONS"}),
        ("/things/1", {"DELETE", "PATCH", "OPTIONS"}),
        ("/plain", {"GET", "PATCH", "OPTIONS"}),
        ("/v2/nested", {"GET", "POST", "OPTIONS"}),
    ],
)
def test_options_lists_every_method_of_the_path(path: str, methods: set[str]) -> None:
    with TestClient(app_with_fix()) as client:
        assert allowed(client, path) == methods


def test_without_the_fix_litestar_lists_only_some() -> None:
    """The defect this module exists for: when Litestar lists them all, drop the module."""
    with TestClient(Litestar([Things], openapi_config=None)) as client:
        assert allowed(client, "/things") != {"GET", "POST", "OPTIONS"}


def test_an_options_handler_of_its_own_is_left_alone() -> None:
    with TestClient(app_with_fix()) as client:
        assert client.options("/own").headers["allow"] == "mine"
