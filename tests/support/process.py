"""`mds-store serve` as a real process: started, probed, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support.waits import until_sync


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(env: dict[str, str], cwd: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    proc = subprocess.Popen(
        [*SERVE, str(port)],
        env={**os.environ, "MDS_CONFIG": "", **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base, lambda: proc.communicate()[0])
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def wait_ready(proc: subprocess.Popen[Any], base: str, output: Callable[[], str]) -> None:
    """Until ``base/readyz`` answers 200; fails with ``output()`` if ``proc`` exits first."""

    def ready() -> bool:
        assert proc.poll() is None, output()
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    until_sync(ready, timeout=60, what="the service ready", interval=0.1)


SERVE = [sys.executable, "-m", "market_data_store.cli", "serve", "--port"]


def serve_once(env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``mds-store serve`` that is expected to end by itself (a failed start)."""
    return subprocess.run(
        [*SERVE, str(free_port())],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)  # exits by itself, no SIGKILL needed
    assert proc.returncode == 0, output
    return output


class Restartable:
    """``mds-store serve`` on a fixed port that can be SIGKILLed and started again
    there (the same settings, the same database). Its output goes to ``log`` (each
    start appended), not to a pipe nobody reads while the test runs."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path, port: int | None = None) -> None:
        self.env = {**os.environ, "MDS_CONFIG": "", **env}
        self.cwd = cwd
        self.log = log
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    def start(self, timeout: float = 60) -> float:
        """Start it and wait until /readyz says 200; the seconds that took."""
        assert self.proc is None or self.proc.poll() is not None, "still running"
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n==== start {self.starts} ====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [*SERVE, str(self.port)],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc

        def ready() -> bool:
            assert proc.poll() is None, f"exited {proc.returncode}: {self.output()[-3000:]}"
            try:
                return httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        return until_sync(ready, timeout=timeout, what="the service ready", interval=0.05)

    def kill(self) -> None:
        """SIGKILL: no drain, no shutdown hook; whatever it held in memory is gone."""
        assert self.proc is not None, "never started"
        assert self.proc.poll() is None, "not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.kills += 1

    def stop(self) -> None:
        """SIGTERM (a clean exit) if running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def restartable(env: dict[str, str], cwd: Path, log: Path) -> Iterator[Restartable]:
    """A started ``Restartable``, killed at the end whatever happened."""
    service = Restartable(env, cwd, log)
    try:
        service.start()
        yield service
    finally:
        if service.proc is not None and service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait()
