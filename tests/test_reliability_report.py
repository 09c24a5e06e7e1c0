"""scripts/reliability_report.py: the table of docs/reliability.md, from the fault suite's
figures files; the prose around it untouched."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "scripts" / "reliability_report.py"
DOC = """# Title

Prose before.

<!-- reliability:start -->
old table
<!-- reliability:end -->

Prose after.
"""


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reliability_report", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(number: int, outcome: str, figures: dict[str, object]) -> dict[str, object]:
    return {
        "number": number,
        "name": f"Scenario {number}",
        "injected": "a | fault",
        "asserted": "exact things",
        "outcome": outcome,
        "duration_s": 12.4,
        "finished_at": f"2026-01-0{number}T00:00:00+00:00",
        "figures": figures,
    }


def test_the_table_is_rewritten_from_the_figures_and_nothing_else(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    figures = {"bars accepted": 99000, "time to 503 (s)": 0.25, "states": ["closed", "open"]}
    (results / "01.json").write_text(json.dumps(result(1, "passed", figures)))
    (results / "03.json").write_text(json.dumps(result(3, "failed", {"peak": {"a": 1}})))
    doc = tmp_path / "reliability.md"
    doc.write_text(DOC)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(results), str(doc)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    text = doc.read_text()
    assert text.startswith("# Title\n\nProse before.\n\n<!-- reliability:start -->\n")
    assert text.endswith("<!-- reliability:end -->\n\nProse after.\n")
    assert "old table" not in text
    assert "Last run: 2026-01-03T00:00:00+00:00." in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 12  # header + one per scenario
    assert rows[1] == (
        "| 1 | Scenario 1 | a \\| fault | exact things | passed (12 s) | bars accepted: 99,000"
        "<br>time to 503 (s): 0.25<br>states: closed, open |"
    )
    assert rows[2] == "| 2 | - | - | - | not run | - |"
    assert rows[3].endswith("| failed (12 s) | peak: a: 1 |")
    assert rows[8:] == [f"| {n} | - | - | - | not run | - |" for n in (8, 9, 10, 11, 12)]


def test_the_table_has_a_row_for_every_scenario_of_the_suite() -> None:
    """One module per scenario, numbered 1..SCENARIOS (test_NN_*.py, SCENARIO number NN)."""
    modules = sorted((ROOT / "tests" / "reliability").glob("test_[0-9][0-9]_*.py"))
    numbers = [int(path.name[5:7]) for path in modules]
    assert numbers == list(range(1, load_script().SCENARIOS + 1))
    for number, path in zip(numbers, modules, strict=True):
        assert f"SCENARIO = ScenarioReport(\n    {number},\n" in path.read_text(), path.name


def test_a_document_without_markers_is_refused() -> None:
    with pytest.raises(SystemExit, match="reliability:start"):
        load_script().rewrite("# no markers\n", {})


def test_the_shipped_document_has_the_markers() -> None:
    text = (ROOT / "docs" / "reliability.md").read_text()
    assert text.count("<!-- reliability:start -->") == 1
    assert text.count("<!-- reliability:end -->") == 1
