"""What the transport protocol enforces, and what it counts (plain data, no uvicorn)."""

from __future__ import annotations

from dataclasses import dataclass

# Connections beyond max_connections that may be open at once (each one descriptor),
# kept for the probes: an idle connection holding one is closed to make room for a
# new one (see ``server.protocol``).
PROBE_RESERVE = 64


@dataclass(frozen=True)
class TransportLimits:
    """What ``GuardedHttpToolsProtocol`` enforces (see ``server.protocol``)."""

    read_timeout: float
    min_body_rate: int  # bytes/s; 0: only the no-progress rule
    max_header_bytes: int
    max_connections: int
    probe_paths: frozenset[str]
    retry_after: int = 1
    probe_reserve: int = PROBE_RESERVE


@dataclass
class TransportStats:
    """Per-server counts, shared by all connections (plain integers on the hot path)."""

    open_connections: int = 0  # admitted connections (within max_connections) now open
    over_capacity: int = 0  # connections accepted beyond max_connections
    reserve_open: int = 0  # of those, now open (at most probe_reserve)
    # beyond max_connections and closed without being served, to keep probe_reserve:
    # at once (every reserved one served a probe) or the oldest not serving one
    reserve_closed: int = 0
    header_timeouts: int = 0
    body_timeouts: int = 0
    oversize_headers: int = 0
    write_timeouts: int = 0  # aborted: their unsent answer did not shrink for read_timeout
    bad_requests: int = 0  # refused by the HTTP parser (400)


__all__ = ["PROBE_RESERVE", "TransportLimits", "TransportStats"]
