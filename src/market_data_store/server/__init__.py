"""Transport: the app under uvicorn (``runner``) through a connection protocol with the
limits uvicorn lacks (``protocol``, over ``refusal`` and ``flow``; its settings and
counts in ``limits``), built on uvicorn internals that ``internals`` checks. Nothing
here knows a route but the probe paths."""

from .limits import PROBE_RESERVE, TransportLimits, TransportStats
from .protocol import GuardedHttpToolsProtocol, guarded_protocol
from .runner import (
    FD_RESERVE,
    GC_GEN0_THRESHOLD,
    PROBE_PATHS,
    ListenError,
    build_server,
    connection_cap,
    freeze_heap,
    listen,
    raise_fd_limit,
    serve,
)

__all__ = [
    "FD_RESERVE",
    "GC_GEN0_THRESHOLD",
    "PROBE_PATHS",
    "PROBE_RESERVE",
    "GuardedHttpToolsProtocol",
    "ListenError",
    "TransportLimits",
    "TransportStats",
    "build_server",
    "connection_cap",
    "freeze_heap",
    "guarded_protocol",
    "listen",
    "raise_fd_limit",
    "serve",
]
