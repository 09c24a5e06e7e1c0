"""The real process: `mds-store serve` starts, answers, and exits on its own on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.bars import ONES, wire_bars
from tests.support.postgres import count_bars, replace_url
from tests.support.process import SERVE, free_port, serve, serve_once, stop
from tests.support.waits import until


def test_sigterm_drains_closes_and_exits(database_url: str, tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": database_url,
        "MDS_DATABASE_HEALTH_INTERVAL": "0.2",
        "MDS_DATABASE_HEALTH_TIMEOUT": "0.2",
        "MDS_COORDINATOR_WORKERS": "1",
        "MDS_COORDINATOR_BATCH_SIZE": "100",
        "MDS_SERVER_INSTANCE_ID": "pod-1",
    }
    with serve(env, tmp_path) as (proc, base):
        assert httpx.get(f"{base}/healthz").json()["ok"] is True
        for r in range(4):  # 20,000 bars queued, then SIGTERM at once: the drain writes them
            bars = wire_bars(5000, r * 5000, symbol="S", **ONES)
            response = httpx.post(f"{base}/v1/bars", json={"provider": "p", "bars": bars})
            assert response.status_code == 202
        output = stop(proc)
    assert asyncio.run(count_bars(database_url)) == 20_000
    order = [
        "shutdown started",
        "coordinator pod-1/bars stopped",
        "database pool closed",
    ]
    positions = [output.index(line) for line in order]
    assert positions == sorted(positions), output


def test_embedded_database_when_no_url_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("DATABASE_URL", "MDS_DATABASE_URL"):
        monkeypatch.delenv(key, raising=False)
    env = {"MDS_DATABASE_EMBEDDED_DIR": str(tmp_path / "pgdata")}
    with serve(env, tmp_path) as (proc, base):
        assert httpx.get(f"{base}/readyz").json()["state"] == "healthy"
        output = stop(proc)
    assert "embedded PostgreSQL running: postgresql://" in output
    assert "embedded PostgreSQL stopped" in output
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()


def test_production_with_default_token_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ADMIN_TOKEN", "MDS_ADMIN_TOKEN")}
    proc = serve_once({**env, "MDS_ENV": "production"}, tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "admin_token is still the default" in proc.stderr


def test_unreachable_database_fails_start_up_in_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://u:secret@127.0.0.1:{free_port()}/x",
        "MDS_DATABASE_STARTUP_TIMEOUT": "0.5",
    }
    proc = serve_once(env, tmp_path, timeout=60)
    assert proc.returncode != 0
    assert "start-up failed: database postgresql://u:***@127.0.0.1:" in proc.stderr
    assert "not reachable within 0.5s: ConnectionRefusedError" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "secret" not in proc.stderr


def test_wrong_database_is_not_waited_for(database_url: str, tmp_path: Path) -> None:
    """No amount of waiting creates a missing database: fail at once, clearly."""
    missing = replace_url(database_url, database="no_such_database")
    env = {**os.environ, "DATABASE_URL": missing, "MDS_DATABASE_STARTUP_TIMEOUT": "120"}
    proc = serve_once(env, tmp_path, timeout=30)  # far below the 120 s of retrying
    assert proc.returncode != 0
    assert "not usable: InvalidCatalogNameError" in proc.stderr


def test_sigterm_while_waiting_for_the_database_exits_promptly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*SERVE, str(free_port())],
        env={
            **os.environ,
            "DATABASE_URL": f"postgresql://u@127.0.0.1:{free_port()}/x",
            "MDS_DATABASE_STARTUP_TIMEOUT": "120",
        },
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        seen = ""
        while "not reachable yet" not in seen:  # it is waiting for the database now
            line = proc.stderr.readline()
            assert line, f"exited before retrying: {seen}"
            seen += line
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)  # not the 120 s start-up budget
        err = seen + err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "shutdown requested while waiting for it" in err


async def test_the_serve_command_freezes_the_heap_once_up(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve`` (``tune_gc``) freezes the heap once start-up is over, not before (the
    lifespan's objects are part of it); an embedding process (no ``tune_gc``) keeps
    its collector as it is."""
    from market_data_store.http import ServicePlugin, create_app
    from market_data_store.server import runner as server_module
    from tests.support.service import service_settings

    calls: list[bool] = []
    monkeypatch.setattr(server_module, "freeze_heap", lambda: calls.append(True))
    settings = service_settings(database_url, str(tmp_path))
    for tune_gc, expected in ((False, []), (True, [True])):
        app = create_app(settings)
        srv = server_module.build_server(app, settings, host="127.0.0.1", port=0, tune_gc=tune_gc)
        task = asyncio.create_task(srv.serve())
        # awaited at once: the loop variables cannot change meanwhile
        await until(lambda: srv.started or task.done(), timeout=30, what="started")  # noqa: B023
        assert not task.done()
        assert ServicePlugin.of(app).components.coordinator is not None  # the lifespan had run
        assert calls == expected
        srv.should_exit = True
        await asyncio.wait_for(task, 30)
        calls.clear()


def test_freeze_heap_freezes_and_widens_the_young_generation() -> None:
    import gc

    from market_data_store.server import GC_GEN0_THRESHOLD, freeze_heap

    before = gc.get_threshold()
    try:
        freeze_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
