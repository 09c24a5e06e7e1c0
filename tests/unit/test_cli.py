"""mds-store command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from market_data_store.cli import main


def test_config_prints_effective_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MDS_COORDINATOR_WORKERS", "6")
    monkeypatch.setenv("ADMIN_TOKEN", "very-secret")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["coordinator"]["workers"] == 6
    assert "very-secret" not in out


def test_bad_config_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MDS_COORDINATOR_WORKERS", "zero")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("mds-store: configuration error: coordinator.workers")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert "0.5.0" in capsys.readouterr().out


def test_config_into_a_closed_pipe_is_quiet() -> None:
    """``mds-store config | head -1``: the reader went away; no BrokenPipeError."""
    read, write = os.pipe()
    os.close(read)  # closed before the command writes: its first write meets EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "market_data_store.cli", "config"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert proc.stderr == ""
    assert proc.returncode == 0


def test_config_file_flag_wins_over_mds_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file, flag_file = tmp_path / "env.toml", tmp_path / "flag.toml"
    env_file.write_text("[coordinator]\nworkers = 3\n")
    flag_file.write_text("[coordinator]\nworkers = 5\n")
    monkeypatch.setenv("MDS_CONFIG", str(env_file))
    assert main(["config"]) == 0
    assert json.loads(capsys.readouterr().out)["coordinator"]["workers"] == 3
    assert main(["--config", str(flag_file), "config"]) == 0
    assert json.loads(capsys.readouterr().out)["coordinator"]["workers"] == 5
    assert main(["config", "--config", str(flag_file)]) == 0
    assert json.loads(capsys.readouterr().out)["coordinator"]["workers"] == 5
    assert main(["config", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["migrate", "--help"]])
def test_help_names_the_environment_variables(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in ("MDS_CONFIG", "MDS_<SECTION>_<KEY>", "DATABASE_URL", "ADMIN_TOKEN", "--config"):
        assert name in out


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("DATABASE_URL", "postgresql://me:pa/SEKRET99@db:5432/x"),
        ("DATABASE_URL", "postgresql://me:SEKRET99@db:abc/x"),
        ("DATABASE_URL", "postgresql://db/x?sslpassword=SEKRET99"),
        ("MDS_FEEDBACK_REDIS_URL", "redis://:pa#SEKRET99@redis:6379/0"),
        ("MDS_FEEDBACK_REDIS_URL", "redis://redis:6379/0?password=SEKRET99"),
        ("MDS_FEEDBACK_WEBHOOK_URL", "https://u:p@ss/wSEKRET99@hooks.example/x"),
        ("MDS_FEEDBACK_WEBHOOK_URL", "https://hooks.example/x?token=SEKRET99"),
    ],
)
def test_config_never_prints_a_credential(variable: str, url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "market_data_store.cli", "config"],
        env={**os.environ, variable: url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "SEKRET99" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (0, 2)
    if proc.returncode == 2:
        assert proc.stderr.count("\n") == 1
