"""Scenario 12: more idle connections than the process has descriptors; the probes'."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.process import SERVE, free_port, wait_ready
from tests.support.reliability import ScenarioReport, ms, percentile

NOFILE = 1200  # soft and hard: `mds-store serve` raises the soft limit to the hard one
IDLE = 1400
PROBES = 50  # of each probe path
RESERVE = 64  # descriptors kept for probes beyond the cap (server.runner.PROBE_RESERVE)
READ_TIMEOUT = 60.0  # no idle connection is timed out while the scenario runs
SETTLE = 5.0  # seconds: "closed at once" means EOF within this of its connect
PROBE_TIMEOUT = 2.0
SCENARIO = ScenarioReport(
    12,
    "Idle connections beyond the descriptors",
    f"`mds-store serve` under `ulimit -n {NOFILE}` (its connection cap lowered to fit),"
    f" {IDLE:,} connections that never send a byte; then {PROBES} /healthz and {PROBES}"
    " /readyz probes, each on a new connection, with the idle ones still open",
    f"every probe answered 200 within {PROBE_TIMEOUT:g} s; the idle connections beyond the"
    f" cap and its {RESERVE} probe descriptors closed by the server within {SETTLE:g} s,"
    " those within the cap kept; the server's descriptors stay below its limit",
)


@contextlib.contextmanager
def serve_limited(
    env: dict[str, str], cwd: Path, log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``mds-store serve`` with ``RLIMIT_NOFILE`` at ``NOFILE`` (soft and hard), its
    output in ``log`` (nobody reads a pipe while the scenario runs)."""

    def lower_limit() -> None:  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*SERVE, str(port)],
            env={**os.environ, "MDS_CONFIG": "", **env},
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lower_limit,
        )
    try:
        wait_ready(proc, base, lambda: log.read_text(errors="replace")[-3000:])
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class IdleConnections:
    """Sockets that never send a byte; when the server closed each (EOF or reset)."""

    port: int
    sockets: list[socket.socket] = field(default_factory=list)
    opened: dict[int, float] = field(default_factory=dict)  # fd -> monotonic
    closed: dict[int, float] = field(default_factory=dict)  # fd -> monotonic
    sent_data: int = 0  # the server wrote something (it must not)

    def open(self, count: int) -> None:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            sock.setblocking(False)
            self.sockets.append(sock)
            self.opened[sock.fileno()] = time.monotonic()

    def watch(self, seconds: float, sample: list[int], pid: int) -> None:
        """Note every socket the server closes within ``seconds``; ``sample``: the
        server's descriptors in use, every 0.1 s."""
        poller = select.poll()
        for sock in self.sockets:
            if sock.fileno() not in self.closed:
                poller.register(sock.fileno(), select.POLLIN)
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            sample.append(descriptors(pid))
            for fd, _ in poller.poll(min(left, 0.1) * 1000):
                poller.unregister(fd)
                sock = socket.socket(fileno=fd)
                try:
                    data = sock.recv(1024)
                except ConnectionResetError:
                    data = b""
                finally:
                    sock.detach()
                if data:
                    self.sent_data += 1
                self.closed[fd] = time.monotonic()

    @property
    def open_now(self) -> int:
        return len(self.sockets) - len(self.closed)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@dataclass
class ProbeRun:
    latencies: list[float] = field(default_factory=list)  # of each 200
    failures: list[str] = field(default_factory=list)


def probe(base: str, path: str, run: ProbeRun) -> None:
    """``PROBES`` GETs of ``path``, each on a new connection (no keep-alive)."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=base, timeout=PROBE_TIMEOUT, limits=limits) as client:
        for _ in range(PROBES):
            sent = time.monotonic()
            try:
                response = client.get(path)
            except httpx.HTTPError as exc:
                run.failures.append(f"{type(exc).__name__}: {exc}")
            else:
                if response.status_code == 200:
                    run.latencies.append(time.monotonic() - sent)
                else:
                    run.failures.append(f"{response.status_code}: {response.text[:200]}")
            time.sleep(0.02)


@pytest.mark.timeout(180)
def test_probes_get_descriptors_beyond_idle_connections(
    database_url: str, tmp_path: Path, report: ScenarioReport
) -> None:
    env = {
        "DATABASE_URL": database_url,
        "MDS_SERVER_INSTANCE_ID": "rel-12",
        "MDS_SERVER_READ_TIMEOUT": str(READ_TIMEOUT),
        "MDS_COORDINATOR_DEAD_LETTER_PATH": str(tmp_path / "dlq.ndjson"),
    }
    log = tmp_path / "serve.log"
    with serve_limited(env, tmp_path, log) as (proc, base):
        idle_fds = descriptors(proc.pid)
        lowered = re.search(r"max_connections \(\d+\) lowered to (\d+)", log.read_text())
        cap = int(lowered.group(1)) if lowered else None
        idle = IdleConnections(int(base.rsplit(":", 1)[1]))
        fds: list[int] = []
        runs = {"/healthz": ProbeRun(), "/readyz": ProbeRun()}
        try:
            started = time.monotonic()
            idle.open(IDLE)
            opened_in = time.monotonic() - started
            idle.watch(SETTLE, fds, proc.pid)
            closed_at_once = len(idle.closed)
            slow_closes = [idle.closed[fd] - idle.opened[fd] for fd in idle.closed]
            open_before_probes = idle.open_now
            for path, run in runs.items():
                probe(base, path, run)
            idle.watch(0.5, fds, proc.pid)
            open_after = idle.open_now
        finally:
            idle.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    output = log.read_text(errors="replace")

    healthz, readyz = runs["/healthz"], runs["/readyz"]
    latencies = healthz.latencies + readyz.latencies
    report.figures.update(
        {
            "open-files limit": NOFILE,
            "connection cap": cap,
            "idle connections": IDLE,
            "all connected in (s)": round(opened_in, 2),
            f"closed by the server within {SETTLE:g} s": closed_at_once,
            "slowest of those closes after connect (s)": round(max(slow_closes, default=0), 2),
            "idle connections open before / after the probes": (
                f"{open_before_probes} / {open_after}"
            ),
            "/healthz answered 200": f"{len(healthz.latencies)} of {PROBES}",
            "/readyz answered 200": f"{len(readyz.latencies)} of {PROBES}",
            "probe p50 / p99 / max (ms)": (
                f"{ms(percentile(latencies, 0.5))} / {ms(percentile(latencies, 0.99))}"
                f" / {ms(max(latencies))}"
                if latencies
                else None
            ),
            "probe failures (first)": (healthz.failures + readyz.failures)[:1] or None,
            "server descriptors idle / peak": f"{idle_fds} / {max(fds, default=0)}",
        }
    )

    assert proc.returncode == 0, output[-3000:]
    assert cap is not None, output[-3000:]
    assert not healthz.failures, healthz.failures[:5]
    assert not readyz.failures, readyz.failures[:5]
    assert idle.sent_data == 0  # closed without an answer: they sent no request
    # beyond the cap and its reserve: closed at once; within the cap: kept
    assert closed_at_once >= IDLE - cap - RESERVE, (closed_at_once, cap)
    assert open_before_probes >= cap, (open_before_probes, cap)
    assert open_after >= cap, (open_after, cap)
    assert max(fds) < NOFILE, max(fds)
