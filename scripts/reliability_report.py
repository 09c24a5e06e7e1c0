"""Rewrite the figures table of docs/reliability.md from the fault suite's results.

    python scripts/reliability_report.py [RESULTS_DIR] [DOC]

RESULTS_DIR (default .mds/reliability) holds one NN.json per scenario, written by
tests/reliability (see tests/support/reliability.py); only the part of DOC between
the reliability:start and reliability:end markers is replaced.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
START = "<!-- reliability:start -->"
END = "<!-- reliability:end -->"
SCENARIOS = 12


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value) or "none"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(results: dict[int, dict[str, Any]]) -> str:
    lines = [
        "| # | Scenario | Injected | Asserted | Result | Figures of the last run |",
        "|---|---|---|---|---|---|",
    ]
    for number in range(1, SCENARIOS + 1):
        result = results.get(number)
        if result is None:
            lines.append(f"| {number} | - | - | - | not run | - |")
            continue
        figures = "<br>".join(
            f"{_cell(name)}: {_cell(_value(v))}" for name, v in result["figures"].items()
        )
        outcome = f"{result['outcome']} ({result['duration_s']:.0f} s)"
        lines.append(
            f"| {number} | {_cell(result['name'])} | {_cell(result['injected'])} | "
            f"{_cell(result['asserted'])} | {outcome} | {figures or '-'} |"
        )
    finished = sorted(r["finished_at"] for r in results.values())
    when = f"Last run: {finished[-1]}." if finished else "No run recorded yet."
    return "\n".join([when, "", *lines])


def rewrite(doc: str, results: dict[int, dict[str, Any]]) -> str:
    head, found, rest = doc.partition(START)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise SystemExit(f"{START} ... {END} not found")
    return f"{head}{START}\n{table(results)}\n{END}{tail}"


def load(results_dir: Path) -> dict[int, dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    for path in sorted(results_dir.glob("*.json")):
        body = json.loads(path.read_text())
        results[int(body["number"])] = body
    return results


def main(argv: list[str]) -> int:
    results_dir = Path(argv[1]) if len(argv) > 1 else ROOT / ".mds" / "reliability"
    doc_path = Path(argv[2]) if len(argv) > 2 else ROOT / "docs" / "reliability.md"
    results = load(results_dir)
    doc_path.write_text(rewrite(doc_path.read_text(), results))
    print(f"{doc_path}: {len(results)} scenario(s) from {results_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
