"""Transport: the app under uvicorn (``runner``) through a connection protocol with the
limits uvicorn lacks (``protocol``, over ``refusal`` and ``flow``; its settings and
counts in ``limits``), built on uvicorn internals that ``internals`` checks. Nothing
here knows a route but the probe paths."""

from .limits import TransportLimits, TransportStats
from .protocol import GuardedHttpToolsProtocol, guarded_protocol
from .runner import (
    FD_RESERVE,
    GC_GEN0_THRESHOLD,
    PROBE_PATHS,
    build_server,
    connection_cap,
    freeze_heap,
    raise_fd_limit,
    serve,
)

__all__ = [
    "FD_RESERVE",
    "GC_GEN0_THRESHOLD",
    "PROBE_PATHS",
    "GuardedHttpToolsProtocol",
    "TransportLimits",
    "TransportStats",
    "build_server",
    "connection_cap",
    "freeze_heap",
    "guarded_protocol",
    "raise_fd_limit",
    "serve",
]
