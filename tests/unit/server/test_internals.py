"""server/internals.py: the uvicorn internals the transport relies on are checked, and a
uvicorn without one is refused with a message naming it (a patched copy stands for
such a uvicorn; the real classes are left alone)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http import httptools_impl

from market_data_store.config import load_settings
from market_data_store.server.internals import check_uvicorn_internals, uvicorn_internals_problems

PROTOCOL = "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol"
SUFFIX = "the transport protocol (server/protocol.py) must be updated before this uvicorn is used"


def copy_of(cls: type, *, without: str = "", **extra: Any) -> type:
    """``cls`` again, as a new class: less ``without``, plus ``extra``."""
    members = {
        name: value
        for name, value in vars(cls).items()
        if name not in (without, "__dict__", "__weakref__")
    }
    return type(cls.__name__, cls.__bases__, {**members, **extra})


class CycleWithoutScope:
    """uvicorn's ``RequestResponseCycle`` as if it no longer kept its ``scope``."""

    def __init__(self) -> None:
        self.message_event = asyncio.Event()
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.waiting_for_100_continue = False


def refusal(check: Any = check_uvicorn_internals) -> str:
    with pytest.raises(RuntimeError) as raised:
        check()
    message = str(raised.value)
    assert message.startswith(f"uvicorn {uvicorn.__version__} changed internals"), message
    assert message.endswith(SUFFIX), message
    return message


def test_the_installed_uvicorn_has_every_internal_the_transport_uses() -> None:
    assert uvicorn_internals_problems() == []
    check_uvicorn_internals()


def test_a_method_uvicorn_no_longer_has_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real = httptools_impl.HttpToolsProtocol
    monkeypatch.setattr(httptools_impl, "HttpToolsProtocol", copy_of(real, without="on_body"))
    message = refusal()
    assert f"{PROTOCOL}.on_body() missing" in message
    assert message.count("missing") == 1, message
    assert "on_body" in vars(real)


def test_an_attribute_uvicorn_no_longer_sets_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httptools_impl, "RequestResponseCycle", CycleWithoutScope)
    message = refusal()
    assert "uvicorn.protocols.http.httptools_impl.RequestResponseCycle.scope missing" in message
    assert "waiting_for_100_continue" not in message


def test_a_module_name_uvicorn_no_longer_has_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr("uvicorn._types.ASGI3Application")
    assert "uvicorn._types.ASGI3Application missing" in refusal()


def test_a_new_uvicorn_name_clashing_with_one_of_ours_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Our ``_refuse`` would silently override a uvicorn method of that name."""
    real = httptools_impl.HttpToolsProtocol
    monkeypatch.setattr(httptools_impl, "HttpToolsProtocol", copy_of(real, _refuse=print))
    message = refusal()
    assert (
        f"{PROTOCOL}._refuse is also market_data_store.server.refusal.RefusingProtocol._refuse"
        in message
    )


def test_building_a_server_checks_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from market_data_store.http import create_app
    from market_data_store.server import build_server

    settings = load_settings({})
    app = create_app(settings)
    real = httptools_impl.HttpToolsProtocol
    monkeypatch.setattr(
        httptools_impl, "HttpToolsProtocol", copy_of(real, without="_should_upgrade")
    )
    message = refusal(lambda: build_server(app, settings, host="127.0.0.1", port=0))
    assert f"{PROTOCOL}._should_upgrade() missing" in message
