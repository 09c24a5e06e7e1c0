"""server/runner.py: the transport settings, the open-files limit and the connection cap."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from market_data_store.config import ConfigError, load_settings


def test_transport_defaults_leave_room_beyond_the_feedback_streams() -> None:
    s = load_settings({})
    assert s.server.read_timeout == 10.0
    assert s.server.min_body_rate == 65536
    assert s.server.max_header_bytes == 65536
    assert s.server.max_connections > s.feedback.sse.max_streams


def test_streams_must_not_take_every_connection() -> None:
    env = {"MDS_SERVER_MAX_CONNECTIONS": "100", "MDS_FEEDBACK_SSE_MAX_STREAMS": "100"}
    with pytest.raises(ConfigError, match=r"feedback\.sse\.max_streams \(100\) must be below"):
        load_settings(env)
    load_settings({**env, "MDS_FEEDBACK_SSE_ENABLED": "false"})  # no streams: no rule


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MDS_SERVER_READ_TIMEOUT": "0"}, r"server\.read_timeout = '0'"),
        ({"MDS_SERVER_MAX_HEADER_BYTES": "100"}, r"server\.max_header_bytes = '100'"),
        ({"MDS_SERVER_MIN_BODY_RATE": "-1"}, r"server\.min_body_rate = '-1'"),
    ],
)
def test_bad_transport_values_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def in_subprocess(code: str) -> str:
    """Run ``code`` in a fresh interpreter (the open-files limit is process-wide)."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_start_raises_the_soft_open_files_limit_to_the_hard_one() -> None:
    out = in_subprocess(
        "import resource as r\n"
        "soft, hard = r.getrlimit(r.RLIMIT_NOFILE)\n"
        "r.setrlimit(r.RLIMIT_NOFILE, (min(hard, 256), hard))\n"
        "from market_data_store.server import raise_fd_limit\n"
        "print(raise_fd_limit() == hard == r.getrlimit(r.RLIMIT_NOFILE)[0])"
    )
    assert out == "True"


def test_the_cap_is_lowered_to_fit_the_open_files_limit() -> None:
    out = in_subprocess(
        "import resource as r\n"
        "r.setrlimit(r.RLIMIT_NOFILE, (2048, 2048))\n"
        "from market_data_store.server import connection_cap\n"
        "print(connection_cap(12000), connection_cap(1000))"
    )
    assert out == "1536 1000"


def test_websocket_support_is_off_whatever_is_installed() -> None:
    """Installing ``websockets`` must not swap the guarded HTTP protocol for
    uvicorn's WebSocket one (that would skip the connection cap's accounting)."""
    from market_data_store.http import create_app
    from market_data_store.server import build_server

    settings = load_settings({})
    server = build_server(create_app(settings), settings, host="127.0.0.1", port=0)
    assert server.config.ws == "none"


def test_a_used_port_is_refused_in_one_line_naming_it_and_how_to_change_it() -> None:
    from market_data_store.server import ListenError, listen

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as info:
            listen("127.0.0.1", port)
    assert str(info.value) == (
        f"port {port} on 127.0.0.1 is already in use (another mds-store?); choose another "
        "with --port or MDS_SERVER_PORT"
    )


def test_an_address_not_of_this_machine_is_refused_in_one_line() -> None:
    from market_data_store.server import ListenError, listen

    with pytest.raises(ListenError, match=r"^cannot listen on 192\.0\.2\.1:\d+: .+; choose"):
        listen("192.0.2.1", 8081)  # TEST-NET-1: no interface has it


def test_the_sockets_listen_at_once() -> None:
    from market_data_store.server import listen

    sockets = listen("127.0.0.1", 0)
    try:
        with socket.create_connection(sockets[0].getsockname()[:2], timeout=1):
            pass  # accepted into the backlog: nobody else can take the port meanwhile
    finally:
        for sock in sockets:
            sock.close()
