"""The uvicorn internals the transport relies on, checked once per server built.

``protocol`` (over ``refusal`` and ``flow``) subclasses uvicorn's httptools protocol
and flow control, overrides and calls their private methods and reads their
attributes; ``runner`` finds a request's connection through the server's state. None
of it is uvicorn's public API, so pyproject.toml pins the uvicorn releases it was
tested with, and ``check_uvicorn_internals`` refuses, at start-up, a uvicorn that
lacks one of these names or now uses a name of the transport's own (which would
silently override uvicorn's, or be overridden). It catches what was renamed, removed
or added, not a changed meaning: an upgrade of uvicorn is a code change, tested like
one.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import logging
import re
from dataclasses import dataclass

import uvicorn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UvicornUse:
    """A name of a uvicorn module the transport uses, and what it uses of it."""

    module: str
    name: str
    # methods the transport overrides or calls: defined by the class or a base (not
    # asyncio's protocol classes, whose empty defaults always exist)
    methods: tuple[str, ...] = ()
    # attributes of its instances the transport reads or sets: assigned as
    # ``self.<name>`` somewhere in the source of the class or a base
    attributes: tuple[str, ...] = ()
    # the transport's subclasses (module.Class): a name one defines or assigns that the
    # uvicorn class has too must be one of the above (an override, listed) - any other
    # is uvicorn's new name clashing with one of ours
    subclasses: tuple[str, ...] = ()


_HTTPTOOLS = "uvicorn.protocols.http.httptools_impl"

USES: tuple[UvicornUse, ...] = (
    UvicornUse(
        _HTTPTOOLS,
        "HttpToolsProtocol",
        methods=(
            # overridden, uvicorn's called through super()
            "connection_made",
            "connection_lost",
            "on_message_begin",
            "on_url",
            "on_header",
            "on_headers_complete",
            "on_body",
            "on_message_complete",
            "on_response_complete",  # also what each request's cycle calls back
            "timeout_keep_alive_handler",  # also what the keep-alive timer calls
            # overridden in place of uvicorn's (a renamed one would bypass ours)
            "data_received",  # ours feeds the parser itself
            "send_400_response",
            "_unsupported_upgrade_warning",
            "pause_writing",
            "resume_writing",
            # called
            "_unset_keepalive_if_required",
            "_should_upgrade",
            "handle_websocket_upgrade",
        ),
        attributes=(
            "app",  # an over-cap connection's is wrapped before its first request
            "loop",
            "parser",
            "pipeline",
            "cycle",
            "flow",  # replaced by the timed one once connected
            "server_state",
            "url",
            "transport",
        ),
        subclasses=(
            "market_data_store.server.refusal.RefusingProtocol",
            "market_data_store.server.protocol.GuardedHttpToolsProtocol",
        ),
    ),
    UvicornUse(
        _HTTPTOOLS,
        "RequestResponseCycle",
        attributes=(
            "scope",  # runner: transport_of
            "message_event",
            "disconnected",
            "response_started",
            "response_complete",
            "waiting_for_100_continue",
        ),
    ),
    UvicornUse(
        "uvicorn.protocols.http.flow_control",
        "FlowControl",
        methods=("pause_reading", "resume_reading", "pause_writing", "resume_writing"),
        attributes=("_transport", "read_paused", "write_paused"),
        subclasses=("market_data_store.server.flow.TimedFlowControl",),
    ),
    UvicornUse("uvicorn.server", "ServerState", attributes=("connections", "total_requests")),
    UvicornUse(  # runner's subclass
        "uvicorn.server",
        "Server",
        methods=("startup", "handle_exit"),
        attributes=("server_state", "started"),
    ),
    UvicornUse("uvicorn._types", "ASGI3Application"),
    UvicornUse("uvicorn._types", "ASGIReceiveCallable"),
    UvicornUse("uvicorn._types", "ASGISendCallable"),
    UvicornUse("uvicorn._types", "Scope"),
)

_NOT_UVICORNS = (object, asyncio.BaseProtocol, asyncio.Protocol)
_ASSIGNED = re.compile(r"\bself\.(\w+)\s*(?::[^=\n]*)?=(?!=)")


def uvicorn_internals_problems(uses: tuple[UvicornUse, ...] = USES) -> list[str]:
    """What of ``uses`` the installed uvicorn lacks (``module.Name.member``) or now
    defines against a subclass of ours; empty when all is well. Reads the modules as
    they are now (a patched one included)."""
    problems: list[str] = []
    for use in uses:
        where = f"{use.module}.{use.name}"
        try:
            found = getattr(importlib.import_module(use.module), use.name)
        except (ImportError, AttributeError):
            problems.append(f"{where} missing")
            continue
        bases = [k for k in getattr(found, "__mro__", ()) if k not in _NOT_UVICORNS]
        problems += [
            f"{where}.{name}() missing"
            for name in use.methods
            if not any(name in vars(base) for base in bases)
        ]
        assigned = _assigned_attributes(bases) if use.attributes or use.subclasses else None
        if assigned is not None:
            problems += [
                f"{where}.{name} missing" for name in use.attributes if name not in assigned
            ]
            theirs = assigned.union(*(vars(base) for base in bases))
            listed = {*use.methods, *use.attributes}
            for path in use.subclasses:
                ours = _defined_by(_resolve(path))
                problems += [
                    f"{where}.{name} is also {path}.{name} (a name uvicorn took since, or an "
                    "override USES does not list)"
                    for name in sorted((ours & theirs) - listed)
                    if not name.startswith("__")
                ]
    return problems


def _resolve(path: str) -> type:
    module, _, name = path.rpartition(".")
    found: type = getattr(importlib.import_module(module), name)
    return found


def _defined_by(cls: type) -> set[str]:
    """The names ``cls`` itself defines, declares or assigns as ``self.<name>``."""
    return {*vars(cls), *vars(cls).get("__annotations__", {}), *(_assigned_in(cls) or ())}


def _assigned_attributes(bases: list[type]) -> set[str] | None:
    """The ``self.<name>`` assigned in the source of ``bases`` (None: a source is not
    readable, the attributes are then not checked)."""
    names: set[str] = set()
    for base in bases:
        found = _assigned_in(base)
        if found is None:
            return None
        names |= found
    return names


@functools.cache
def _assigned_in(cls: type) -> frozenset[str] | None:
    """``_assigned_attributes`` of one class; once per class (parsing takes ms)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError) as exc:
        log.warning("attributes of %s not checked: its source is not readable (%s)", cls, exc)
        return None
    return frozenset(_ASSIGNED.findall(source))


def check_uvicorn_internals() -> None:
    """Raise ``RuntimeError`` saying what changed when the installed uvicorn does not
    have the internals the transport relies on as ``USES`` lists them."""
    problems = uvicorn_internals_problems()
    if problems:
        raise RuntimeError(
            f"uvicorn {uvicorn.__version__} changed internals the transport relies on: "
            f"{'; '.join(problems)}; the transport protocol (server/protocol.py) must be "
            "updated before this uvicorn is used"
        )


__all__ = ["USES", "UvicornUse", "check_uvicorn_internals", "uvicorn_internals_problems"]
