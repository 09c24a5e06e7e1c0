"""mds-store command line."""

from __future__ import annotations

import json

import pytest

from market_data_store.cli import main


def test_config_prints_effective_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MDS_COORDINATOR_WORKERS", "7")
    monkeypatch.setenv("ADMIN_TOKEN", "very-secret")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["coordinator"]["workers"] == 7
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
    assert "0.4.0" in capsys.readouterr().out
