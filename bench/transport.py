"""Cost of the transport limits: uvicorn's httptools protocol vs ours, same run.

    .venv/bin/python bench/transport.py [--duration 5] [--connections 16] [--rounds 3]

Serves one bare ASGI app (a small JSON answer; POST bodies read whole) twice, in
two processes: once with uvicorn's ``HttpToolsProtocol``, once with
``GuardedHttpToolsProtocol`` and the default ``[server]`` limits. A bare app, so
the protocol's share of each request is as large as it can be. Loads each with wrk
in alternating rounds (GET; POST with a 256 KiB body, which arrives in several reads
and runs the body clock). On a shared machine req/s swing widely between rounds, so
the figure is each server process's own CPU time per request (from /proc, summed
over all rounds): guarded/stock of 1.0 means no measurable cost. req/s (best round)
are printed too.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

VARIANTS = ("stock", "guarded")
POST_BODY = 256 * 1024


def serve(port: int, variant: str) -> None:
    import uvicorn
    from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from market_data_store.config import load_settings
    from market_data_store.server import PROBE_PATHS, TransportLimits, guarded_protocol

    body = b'{"ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]

    async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message["type"] == "http.request" and message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    s = load_settings({}).server
    limits = TransportLimits(
        read_timeout=s.read_timeout,
        min_body_rate=s.min_body_rate,
        max_header_bytes=s.max_header_bytes,
        max_connections=s.max_connections,
        probe_paths=PROBE_PATHS,
    )
    protocol = HttpToolsProtocol if variant == "stock" else guarded_protocol(limits)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=protocol, lifespan="off", access_log=False,
        log_level="warning",
    )  # fmt: skip
    uvicorn.Server(config).run()


def wrk(url: str, duration: int, connections: int, script: str | None) -> tuple[int, float]:
    """Requests done and req/s."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", url]
    if script:
        command[1:1] = ["-s", script]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        sys.exit(f"errors under load:\n{out}")
    done = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    return done, float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"server on {port} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per round and load")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
        return

    ports = {variant: free_port() for variant in VARIANTS}
    procs = [
        subprocess.Popen([sys.executable, __file__, "--serve", str(port), variant])
        for variant, port in ports.items()
    ]
    best: dict[tuple[str, str], float] = {}
    cpu: dict[tuple[str, str], float] = {}
    requests: dict[tuple[str, str], int] = {}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(
            f'wrk.method = "POST"\nwrk.body = string.rep("a", {POST_BODY})\n'
            'wrk.headers["Content-Type"] = "application/octet-stream"\n'
        )
    loads = {"GET": None, f"POST {POST_BODY // 1024} KiB": lua.name}
    try:
        for port in ports.values():
            wait_listening(port)
            wrk(f"http://127.0.0.1:{port}/", 1, args.connections, None)  # warm-up
        for _ in range(args.rounds):
            for name, script in loads.items():
                for proc, (variant, port) in zip(procs, ports.items(), strict=True):
                    key = name, variant
                    before = cpu_seconds(proc.pid)
                    done, rps = wrk(
                        f"http://127.0.0.1:{port}/", args.duration, args.connections, script
                    )
                    cpu[key] = cpu.get(key, 0.0) + cpu_seconds(proc.pid) - before
                    requests[key] = requests.get(key, 0) + done
                    best[key] = max(rps, best.get(key, 0.0))
    finally:
        os.unlink(lua.name)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    print(f"wrk, {args.connections} connections, best of {args.rounds}x{args.duration}s each")
    for name in loads:
        per = {v: cpu[name, v] / requests[name, v] * 1e6 for v in VARIANTS}
        print(
            f"{name:<13} CPU/request: stock {per['stock']:7.1f} us  guarded "
            f"{per['guarded']:7.1f} us  guarded/stock {per['guarded'] / per['stock']:6.1%}   "
            f"(best req/s: stock {best[name, 'stock']:,.0f}, guarded "
            f"{best[name, 'guarded']:,.0f})"
        )


if __name__ == "__main__":
    main()
