"""Bearer-token guard for the admin routes."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

from .plugin import ServicePlugin


async def admin_token_guard(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Require ``Authorization: Bearer <admin_token>`` (compared in constant time)."""
    settings = ServicePlugin.of(connection.app).settings
    scheme, _sep, token = connection.headers.get("authorization", "").partition(" ")
    expected = settings.admin_token.encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise NotAuthorizedException("a valid admin bearer token is required")
