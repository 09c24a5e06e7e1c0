"""The Makefile's promises: `make run` installs what running needs, visibly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def planned(target: str, tmp_path: Path) -> str:
    """The commands ``make <target>`` would run on a fresh clone (no venv yet)."""
    return subprocess.run(
        ["make", "--dry-run", "--always-make", target, f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


@pytest.mark.parametrize("target", ["run", "demo", "producer-demo"])
def test_run_installs_the_runtime_dependencies_only_and_shows_progress(
    target: str, tmp_path: Path
) -> None:
    plan = planned(target, tmp_path)
    installs = [line for line in plan.splitlines() if " install " in line]
    assert any(line.rstrip().endswith("-e .") for line in installs), plan
    assert "[dev]" not in plan
    assert "--quiet" not in plan
    assert "-q " not in plan
    assert "echo" in plan  # says what it is doing before the long step


@pytest.mark.parametrize("target", ["test", "lint", "bench"])
def test_dev_targets_add_the_dev_tools(target: str, tmp_path: Path) -> None:
    installs = [line for line in planned(target, tmp_path).splitlines() if " install " in line]
    assert any(line.rstrip().endswith("-e '.[dev]'") for line in installs), installs
    assert not any("--quiet" in line for line in installs)
