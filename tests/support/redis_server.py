"""Redis for tests: the CI one (``MDS_TEST_REDIS_URL``), or a private ``redis-server``
on its own port (never the machine's shared one): one for the session when the CI one
is not set, or one a test starts, stops and restarts itself."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.postgres import REQUIRE_SERVICES
from tests.support.waits import until_sync


@contextmanager
def shared_redis(workdir: Path) -> Iterator[str]:
    """The Redis tests share (each on a ``unique_channel``): the CI one, or else a private
    ``redis-server`` for as long as the context lasts. Skips, saying why, when neither
    is there; under MDS_TEST_REQUIRE_SERVICES=1 fails without the CI one."""
    url = os.environ.get("MDS_TEST_REDIS_URL")
    if url:
        yield url
        return
    if REQUIRE_SERVICES:
        pytest.fail("MDS_TEST_REQUIRE_SERVICES=1 but MDS_TEST_REDIS_URL is not set")
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server installed or MDS_TEST_REDIS_URL (.ci/run sets it)")
    server = PrivateRedis(workdir)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def unique_channel() -> str:
    """A channel (and key prefix) of this test's own on a shared Redis."""
    return f"mds.test.{uuid.uuid4().hex[:12]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` of the test's own, on a free port, without persistence."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if REQUIRE_SERVICES:
                pytest.fail("MDS_TEST_REQUIRE_SERVICES=1 but redis-server is not installed")
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.workdir = workdir
        self.password = password
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir),
             *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        proc = self.proc

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return True
            except OSError:
                pass
            assert proc.poll() is None, "redis-server exited"
            return False

        until_sync(answers, timeout=10, what="redis-server started")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def replica_env(
    database_url: str, tmp: Path, name: str, redis_url: str, channel: str
) -> dict[str, str]:
    """Environment of one ``mds-store serve`` replica sharing feedback over Redis."""
    return {
        "DATABASE_URL": database_url,
        "MDS_SERVER_INSTANCE_ID": name,
        "MDS_FEEDBACK_REDIS_URL": redis_url,
        "MDS_FEEDBACK_REDIS_CHANNEL": channel,
        "MDS_FEEDBACK_REDIS_TIMEOUT": "0.5",
        "MDS_COORDINATOR_CAPACITY": "100",
        "MDS_COORDINATOR_HIGH_WATERMARK": "80",
        "MDS_COORDINATOR_LOW_WATERMARK": "50",
        "MDS_COORDINATOR_BATCH_SIZE": "50",
        "MDS_COORDINATOR_DEAD_LETTER_PATH": str(tmp / f"{name}.ndjson"),
        "MDS_DATABASE_HEALTH_INTERVAL": "0.2",
        "MDS_DATABASE_HEALTH_TIMEOUT": "0.2",
    }
