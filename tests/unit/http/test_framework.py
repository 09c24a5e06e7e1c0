"""``FrameworkFixes``: the plugin applies the fixes to every route as Litestar registers
it, routes registered after the app was built included; the OpenAPI document of
``create_app`` has no ``null`` in parameter schemas from the moment the app exists."""

from __future__ import annotations

import json
from typing import Annotated, Any

from litestar import Litestar, get, patch
from litestar.params import QueryParameter
from litestar.testing import TestClient

from market_data_store.config import load_settings
from market_data_store.http import create_app
from market_data_store.http.framework import FrameworkFixes

from .test_allow import Things, allowed


@get("/late", sync_to_thread=False)
def late_get(limit: Annotated[int, QueryParameter()] = 1) -> int:
    return limit


@patch("/late", sync_to_thread=False)
def late_patch() -> None:
    return None


def test_the_plugin_fixes_routes_registered_with_the_app_and_later() -> None:
    app = Litestar([Things], plugins=[FrameworkFixes()], openapi_config=None)
    app.register(late_get)
    app.register(late_patch)  # a second handler on a path registered after construction
    with TestClient(app) as client:
        assert allowed(client, "/things") == {"GET", "POST", "OPTIONS"}
        assert allowed(client, "/late") == {"GET", "PATCH", "OPTIONS"}
        repeated = client.get("/late?limit=1&limit=2")
        assert repeated.status_code == 400
        assert repeated.json()["extra"][0]["key"] == "limit"


def _nullable_parameters(document: dict[str, Any]) -> list[str]:
    found = []
    for path, item in document["paths"].items():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if '"null"' in json.dumps(parameter["schema"], default=str):
                    found.append(f"{path} {parameter['name']}")
    return found


def test_the_document_has_no_null_parameter_before_the_app_starts() -> None:
    app = create_app(load_settings({}))
    assert _nullable_parameters(app.openapi_schema.to_schema()) == []


def test_without_the_fix_litestar_documents_null_parameters() -> None:
    """The defect the fix exists for (``str | None`` parameters as ``oneOf [string, null]``):
    when Litestar stops doing it, drop the fix."""

    @get("/q", sync_to_thread=False)
    def optional(q: Annotated[str | None, QueryParameter()] = None) -> None:
        return None

    assert _nullable_parameters(Litestar([optional]).openapi_schema.to_schema()) != []
