"""What the transport protocol enforces, and what it counts (plain data, no uvicorn)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TransportLimits:
    """What ``GuardedHttpToolsProtocol`` enforces (see ``server.protocol``)."""

    read_timeout: float
    min_body_rate: int  # bytes/s; 0: only the no-progress rule
    max_header_bytes: int
    max_connections: int
    probe_paths: frozenset[str]
    retry_after: int = 1


@dataclass
class TransportStats:
    """Per-server counts, shared by all connections (plain integers on the hot path)."""

    open_connections: int = 0  # admitted connections (within max_connections) now open
    over_capacity: int = 0  # connections accepted beyond max_connections
    header_timeouts: int = 0
    body_timeouts: int = 0
    oversize_headers: int = 0
    write_timeouts: int = 0  # aborted: their unsent answer did not shrink for read_timeout
    bad_requests: int = 0  # refused by the HTTP parser (400)


__all__ = ["TransportLimits", "TransportStats"]
