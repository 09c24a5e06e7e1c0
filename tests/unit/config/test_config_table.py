"""The settings table of docs/configuration.md: generated from default.toml by
scripts/config_table.py, current, complete, and true to what the loader does."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest

from market_data_store.config import UNPREFIXED, Settings, _env_path, load_settings

ROOT = Path(__file__).parents[3]
SCRIPT = ROOT / "scripts" / "config_table.py"
PAGE = ROOT / "docs" / "configuration.md"
START = "<!-- config-table:start -->"
END = "<!-- config-table:end -->"
FIX = "run: .venv/bin/python scripts/config_table.py --write"


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_table", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.fixture(scope="module")
def printed() -> str:
    proc = run_script()
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def region(text: str) -> str:
    assert text.count(START) == 1, f"docs/configuration.md needs one {START}"
    assert text.count(END) == 1, f"docs/configuration.md needs one {END}"
    return text.split(START, 1)[1].split(END, 1)[0]


def rows(table: str) -> dict[str, list[str]]:
    """Table rows by key, cells unescaped and without their code backticks."""
    out: dict[str, list[str]] = {}
    for line in table.strip().splitlines()[2:]:
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        key = cells[0].strip("`")
        assert key not in out, f"{key} listed twice"
        out[key] = cells
    return out


def leaf_keys(struct: type[msgspec.Struct], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for f in msgspec.structs.fields(struct):
        if isinstance(f.type, type) and issubclass(f.type, msgspec.Struct):
            keys += leaf_keys(f.type, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def test_the_pages_region_is_the_scripts_output(printed: str) -> None:
    # a blank line either side of the table, so the markers never join it
    assert region(PAGE.read_text(encoding="utf-8")) == f"\n\n{printed}\n", FIX
    assert run_script("--check").returncode == 0, FIX


def test_every_setting_is_in_the_table_once(printed: str) -> None:
    table = rows(printed)
    assert list(table) == list(dict.fromkeys(table))
    assert set(table) == set(leaf_keys(Settings))
    assert all(len(cells) == 4 and all(cells) for cells in table.values())


def test_environment_variables_set_their_key(printed: str) -> None:
    for key, (_, variables, _, _) in rows(printed).items():
        path = tuple(key.split("."))
        names = [v.strip().strip("`") for v in variables.split(",")]
        assert names[0] == "MDS_" + "_".join(path).upper()
        assert _env_path(names[0].removeprefix("MDS_").lower(), Settings) == path
        assert names[1:] == [n for n, p in UNPREFIXED.items() if p == path]


def test_defaults_are_what_the_loader_loads(printed: str) -> None:
    loaded: dict[str, Any] = msgspec.to_builtins(load_settings({}))
    for key, (_, _, default, _) in rows(printed).items():
        value: Any = loaded
        for part in key.split("."):
            value = value.get(part)
        if default == "unset":
            assert value is None, key
        else:
            literal = default.strip("`")
            assert tomllib.loads(f"v = {literal}")["v"] == value, key


def test_meaning_is_the_comment_above_the_key(script: ModuleType) -> None:
    text = """# File header, not about any key.

# First line
# second line.
a = 1
#
# Without a default: <x> | `<y>`.
# b = "x"

[s.t]
# Nested.
c = "v"
d = true  # no comment above: refused below
"""
    with pytest.raises(ValueError, match=r"line 13: s\.t\.d has no comment above it"):
        script.read_settings(text)
    settings = script.read_settings(
        text.replace("d = true  # no comment above: refused below\n", "")
    )
    assert [(s.key, s.default, s.meaning) for s in settings] == [
        ("a", 1, "First line second line."),
        ("b", None, "Without a default: <x> | `<y>`."),
        ("s.t.c", "v", "Nested."),
    ]
    assert script.render(settings).splitlines()[2:] == [
        "| `a` | `MDS_A` | `1` | First line second line. |",
        "| `b` | `MDS_B` | unset | Without a default: \\<x> \\| `<y>`. |",
        '| `s.t.c` | `MDS_S_T_C` | `"v"` | Nested. |',
    ]


def test_write_replaces_the_region_only(tmp_path: Path, printed: str) -> None:
    page = tmp_path / "configuration.md"
    before, after = "# Title\n\nText.\n\n", "\n\nMore text.\n"
    page.write_text(f"{before}{START}\n| stale |\n{END}{after}", encoding="utf-8")
    assert run_script("--check", "--page", str(page)).returncode == 1
    assert run_script("--write", "--page", str(page)).returncode == 0
    assert page.read_text(encoding="utf-8") == f"{before}{START}\n\n{printed}\n{END}{after}"
    assert run_script("--check", "--page", str(page)).returncode == 0
    page.write_text("no markers\n", encoding="utf-8")
    proc = run_script("--write", "--page", str(page))
    assert proc.returncode == 2
    assert "needs exactly one" in proc.stderr
    assert page.read_text(encoding="utf-8") == "no markers\n"
