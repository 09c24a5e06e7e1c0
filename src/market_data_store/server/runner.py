"""Run the app under uvicorn, announcing shutdown the moment SIGTERM arrives.

uvicorn, on SIGTERM, first waits for open connections and only then runs the
lifespan shutdown. The service must know earlier - readiness has to fail at
once and long-lived responses (SSE) must end by themselves - so the signal
handler also flips the app's ``Lifecycle`` before uvicorn's own handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import math
import resource
import signal
import socket
from types import FrameType
from typing import Any

import uvicorn
from litestar import Litestar

from market_data_store.config import Settings
from market_data_store.http import ServicePlugin, create_app
from market_data_store.service import Lifecycle

from .internals import check_uvicorn_internals
from .limits import PROBE_RESERVE, TransportLimits, TransportStats
from .protocol import guarded_protocol

log = logging.getLogger(__name__)

# Served even beyond server.max_connections: the kubelet must not kill a busy pod.
PROBE_PATHS = frozenset({"/healthz", "/health", "/readyz"})
# Descriptors kept free of client connections within the cap: the PROBE_RESERVE (64)
# connections beyond it (probes, 503s; an idle one gives its place to a newer one), and
# pool, Redis, webhook, DLQ file, the listening socket and the rest.
FD_RESERVE = 512


class ListenError(Exception):
    """The configured address cannot be listened on (the port is taken, the host is
    not this machine's...). Raised before anything was started; the message says so in
    one line, with what to change."""


def listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on ``host``:``port`` - one per address the host resolves to,
    bound as asyncio's ``create_server`` binds them - or ``ListenError``. Taken before
    anything starts, so a second service on a used port is refused at once (not after
    its database started), and held from then on: no other process can take the
    port while this one starts. Connections wait in the backlog until the server
    accepts them."""
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise ListenError(
            f"cannot listen on {where}: {exc}; choose another with --host or MDS_SERVER_HOST"
        ) from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio: the IPv4 address is a socket of its own
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen()
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(
                f"port {port} on {host} is already in use (another mds-store?); choose "
                "another with --port or MDS_SERVER_PORT"
            ) from None
        raise ListenError(
            f"cannot listen on {where}: {exc.strerror or exc}; choose another address with "
            "--host/--port or MDS_SERVER_HOST/MDS_SERVER_PORT"
        ) from None
    return sockets


class _OneLineStartupFailure(logging.Filter):
    """uvicorn logs a failed start-up as the full traceback text the app reported.
    For our own ``StartupError`` (database unreachable, bad migration...) the
    last line says it all: print that."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        marker = "StartupError: "
        if marker in text:
            reason = text.rsplit(marker, 1)[1].splitlines()[0]
            record.msg, record.args, record.exc_info = f"start-up failed: {reason}", (), None
        return True


# Young-generation size between garbage collections (Python's default: 700).
GC_GEN0_THRESHOLD = 50_000


def freeze_heap() -> None:
    """Once the service is up: collect, then move everything alive (the app, its
    routes, Litestar, OpenTelemetry, the pool...) out of the collector's sight, and
    let the young generation grow larger before it is scanned. A 5,000-bar request
    allocates thousands of short-lived containers; with Python's defaults each burst
    triggers collections that rescan that whole stable heap. Measured with
    bench/ingest.py's service process: about 7 % less CPU per ingested bar."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one (Go does the same at start);
    the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        # an unlimited hard limit may be refused (macOS): the soft one then stays
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft


def connection_cap(max_connections: int) -> int:
    """``server.max_connections``, lowered to fit the open-files limit (with a warning)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or max_connections + FD_RESERVE <= soft:
        return max_connections
    cap = max(1, soft - FD_RESERVE)
    log.warning(
        "server.max_connections (%d) lowered to %d: the open-files limit is %d (raise it, "
        "e.g. ulimit -n, or lower server.max_connections)",
        max_connections,
        cap,
        soft,
    )
    return cap


class _Server(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        lifecycle: Lifecycle,
        transport_stats: TransportStats,
        *,
        tune_gc: bool = False,
    ) -> None:
        super().__init__(config)
        self._lifecycle = lifecycle
        self._tune_gc = tune_gc
        self.transport_stats = transport_stats

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if sockets and self.started:  # uvicorn says where it listens only for its own
            host, port = sockets[0].getsockname()[:2]
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            log.info("Uvicorn running on http://%s (Press CTRL+C to quit)", where)
        if self._tune_gc and self.started:
            freeze_heap()

    def transport_of(self, scope: Any) -> asyncio.BaseTransport | None:
        """The transport of the connection whose current request has ``scope`` (uvicorn
        keeps its protocols in ``server_state``; each has its request ``cycle``)."""
        for protocol in self.server_state.connections:
            cycle = getattr(protocol, "cycle", None)
            if cycle is not None and cycle.scope is scope:
                transport: asyncio.BaseTransport | None = getattr(protocol, "transport", None)
                return transport
        return None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._lifecycle.begin_shutdown_threadsafe()
        super().handle_exit(sig, frame)


def build_server(
    app: Litestar,
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    tune_gc: bool = False,
) -> uvicorn.Server:
    """The uvicorn server of ``app``; ``tune_gc`` (the ``serve`` command's, not an
    embedding process's) freezes the heap once started: see ``freeze_heap``. Its
    connections enforce ``server.read_timeout``, ``min_body_rate``,
    ``max_header_bytes`` and ``max_connections`` (with ``PROBE_RESERVE`` connections
    beyond it for the probes): see ``server.protocol``."""
    check_uvicorn_internals()
    s = settings.server
    limits = TransportLimits(
        read_timeout=s.read_timeout,
        min_body_rate=s.min_body_rate,
        max_header_bytes=s.max_header_bytes,
        max_connections=connection_cap(s.max_connections),
        probe_paths=PROBE_PATHS,
        probe_reserve=PROBE_RESERVE,
    )
    stats = TransportStats()
    service = ServicePlugin.find(app)  # None: a bare Litestar app (bench/health.py)
    if service is not None:
        service.telemetry.instruments.transport.track(stats)
    config = uvicorn.Config(
        app,
        http=guarded_protocol(limits, stats),
        host=host or settings.server.host,
        port=settings.server.port if port is None else port,
        lifespan="on",
        # never swap this protocol for a WebSocket one (it would skip the cap's accounting)
        ws="none",
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.server.graceful_timeout),
        log_config=None,
    )
    # With log_config=None uvicorn leaves logging alone, access_log=False included:
    # detach its access logger so per-request lines stay off (metrics count requests).
    errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _OneLineStartupFailure) for f in errors.filters):
        errors.addFilter(_OneLineStartupFailure())
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    lifecycle = service.lifecycle if service is not None else Lifecycle()
    server = _Server(config, lifecycle, stats, tune_gc=tune_gc)
    lifecycle.transport_of = server.transport_of
    return server


def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> bool:
    """Serve until SIGTERM/SIGINT; False when start-up failed, ``ListenError`` (before
    anything started) when the address cannot be listened on.

    uvicorn re-raises SIGTERM/SIGINT once its graceful shutdown is over (so the
    exit status would say "killed", or Ctrl+C would end in a traceback); a
    shutdown that completed is a clean exit here.
    """
    host = host or settings.server.host
    port = settings.server.port if port is None else port
    sockets = listen(host, port)
    try:
        raise_fd_limit()
        server = build_server(create_app(settings), settings, host=host, port=port, tune_gc=True)
        signals = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, _ignore_after_shutdown) for sig in signals}
        try:
            server.run(sockets=sockets)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        for sock in sockets:
            sock.close()
    return bool(server.started)


def _ignore_after_shutdown(sig: int, frame: FrameType | None) -> None:
    """Receives the signal uvicorn re-raises after it finished shutting down."""
