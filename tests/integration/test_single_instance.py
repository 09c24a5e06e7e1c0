"""One `mds-store serve` per port and per embedded database: a second one is refused
in one line before it touches the first one's, and a SIGKILLed one's leftovers are
taken over by the next start."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.process import SERVE, Restartable, free_port, serve, stop


@pytest.fixture
def embedded_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key in ("DATABASE_URL", "MDS_DATABASE_URL"):
        monkeypatch.delenv(key, raising=False)
    return {
        "MDS_DATABASE_EMBEDDED_DIR": str(tmp_path / "pgdata"),
        "MDS_DATABASE_HEALTH_INTERVAL": "0.2",
        "MDS_DATABASE_HEALTH_TIMEOUT": "0.2",
    }


def second_serve(port: int, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVE, str(port)],
        env={**os.environ, "MDS_CONFIG": "", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])


def alive(pid: int) -> bool:
    """Running, not a zombie (where nobody reaps orphans, a stopped postmaster is one)."""
    if not Path("/proc/self").exists():  # no procfs: a zombie counts as alive
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def database_checked_reachable(base: str) -> bool:
    time.sleep(0.5)  # a health check newer than the second serve
    components = httpx.get(f"{base}/healthz").json()["components"]
    database = next(c for c in components if c["name"] == "database")
    return bool(database["details"]["reachable"] == "true")


def test_a_second_serve_is_refused_before_it_touches_the_first_ones_database(
    embedded_env: dict[str, str], tmp_path: Path
) -> None:
    with serve(embedded_env, tmp_path) as (first, base):
        postmaster = postmaster_pid(tmp_path / "pgdata")
        port = int(base.rsplit(":", 1)[1])

        same_port = second_serve(port, embedded_env, tmp_path)
        assert same_port.returncode == 3, same_port.stderr
        assert same_port.stderr == (
            f"mds-store: serve failed: port {port} on 127.0.0.1 is already in use (another "
            "mds-store?); choose another with --port or MDS_SERVER_PORT\n"
        )
        assert "embedded PostgreSQL" not in same_port.stdout + same_port.stderr

        same_folder = second_serve(free_port(), embedded_env, tmp_path)
        assert same_folder.returncode == 3, same_folder.stderr
        failures = [line for line in same_folder.stderr.splitlines() if "ERROR" in line]
        assert len(failures) == 2, same_folder.stderr  # the reason, and uvicorn's "Exiting."
        assert (
            f"start-up failed: the embedded PostgreSQL in {tmp_path / 'pgdata'} is in use by "
            f"another mds-store (pid {first.pid}); stop that one" in failures[0]
        )
        assert "embedded PostgreSQL" not in same_folder.stderr.replace(failures[0], "")
        assert "Traceback" not in same_folder.stderr

        # the first one is untouched: its port, its database
        assert alive(postmaster)
        assert postmaster_pid(tmp_path / "pgdata") == postmaster
        assert httpx.get(f"{base}/readyz").status_code == 200
        assert database_checked_reachable(base)
        output = stop(first)
    assert "embedded PostgreSQL stopped" in output
    assert not alive(postmaster)


def test_the_next_serve_takes_over_from_a_sigkilled_one(
    embedded_env: dict[str, str], tmp_path: Path
) -> None:
    service = Restartable(embedded_env, tmp_path, tmp_path / "serve.log")
    try:
        service.start()
        orphan = postmaster_pid(tmp_path / "pgdata")
        service.kill()
        assert alive(orphan)  # the postmaster outlived its service

        service.start()  # reused, not a second postmaster on the same folder
        assert postmaster_pid(tmp_path / "pgdata") == orphan
        assert database_checked_reachable(service.base)
        service.stop()
        assert service.proc is not None
        assert service.proc.returncode == 0
    finally:
        if service.proc is not None and service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait()
    output = service.output().split("==== start 2 ====", 1)[1]
    assert f"embedded PostgreSQL (pid {orphan}) left running by a previous owner" in output
    assert "embedded PostgreSQL stopped" in output
    assert not alive(orphan)  # the last owner stops it: nothing is left running
