"""The table of settings in docs/configuration.md, generated from the shipped ``default.toml``.

    .venv/bin/python scripts/config_table.py            # print the table (markdown)
    .venv/bin/python scripts/config_table.py --write    # rewrite it into docs/configuration.md
    .venv/bin/python scripts/config_table.py --check    # exit 1 if docs/configuration.md is stale

One row per setting, in the order of default.toml: key, environment variable,
default, meaning (the comment lines right above the key, joined). A key shown
commented out (``# database_url = ...``) is a setting without a default: "unset".
docs/configuration.md is only touched between ``<!-- config-table:start -->`` and
``<!-- config-table:end -->``; tests/unit/config/test_config_table.py keeps it current.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from market_data_store.config import DEFAULTS_FILE, ENV_PREFIX, UNPREFIXED

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
START = "<!-- config-table:start -->"
END = "<!-- config-table:end -->"
HEADER = ("Key", "Environment variable", "Default", "Meaning")

_SECTION = re.compile(r"^\[([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)\]$")
_KEY = re.compile(r"^([A-Za-z0-9_]+) *=")
_COMMENTED_KEY = re.compile(r"^# ?([a-z0-9_]+) = ")


@dataclass(frozen=True)
class Setting:
    key: str  # dotted: "feedback.redis.url"
    env: tuple[str, ...]  # the variables that set it, preferred first
    default: Any  # None: no default (commented out in default.toml)
    meaning: str


def read_settings(text: str) -> list[Setting]:
    """Every setting of a default.toml text, in file order."""
    values = tomllib.loads(text)
    found: list[Setting] = []
    section: tuple[str, ...] = ()
    comments: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        key = _KEY.match(line) or _COMMENTED_KEY.match(line)
        if not line:
            comments = []  # a blank line ends a comment block
        elif section_match := _SECTION.match(line):
            section, comments = tuple(section_match[1].split(".")), []
        elif key:
            path = (*section, key[1])
            default = None if line.startswith("#") else _lookup(values, path)
            meaning = " ".join(c for c in comments if c)
            if not meaning:
                raise ValueError(f"line {number}: {'.'.join(path)} has no comment above it")
            found.append(Setting(".".join(path), env_names(path), default, meaning))
            comments = []
        elif line.startswith("#"):
            comments.append(line[1:].strip())
        else:  # a value spread over several lines, for instance
            raise ValueError(f"line {number}: cannot read {raw!r}")
    return found


def _lookup(values: Mapping[str, Any], path: Sequence[str]) -> Any:
    node: Any = values
    for part in path:
        node = node[part]
    return node


def env_names(path: Sequence[str]) -> tuple[str, ...]:
    """``MDS_<SECTION>_<KEY>``, then the unprefixed name if there is one."""
    unprefixed = tuple(name for name, target in UNPREFIXED.items() if target == tuple(path))
    return (ENV_PREFIX + "_".join(path).upper(), *unprefixed)


def toml_literal(value: Any) -> str:
    """``value`` written as in a TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if value == {}:
        return "{}"
    raise TypeError(f"no TOML literal for {value!r}")


def _cell(text: str) -> str:
    """``text`` as a table cell: ``|`` escaped (code spans included, as GFM wants), and
    ``<`` outside code spans, lest ``<instance_id>`` be taken for an HTML tag."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code spans
        parts = [text]
    prose = (p if i % 2 else p.replace("<", "\\<") for i, p in enumerate(parts))
    return "`".join(prose).replace("|", "\\|")


def render(settings: Sequence[Setting]) -> str:
    """The markdown table, ending with a newline."""
    rows = [
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    for s in settings:
        default = "unset" if s.default is None else f"`{toml_literal(s.default)}`"
        env = ", ".join(f"`{name}`" for name in s.env)
        cells = (f"`{s.key}`", env, default, s.meaning)
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows) + "\n"


def table() -> str:
    """The table of the shipped default.toml."""
    return render(read_settings(DEFAULTS_FILE.read_text(encoding="utf-8")))


def with_table(page: str, table_text: str) -> str:
    """``page`` with the text between the markers replaced by ``table_text``
    (a blank line either side, so the markers never join the table)."""
    if page.count(START) != 1 or page.count(END) != 1:
        raise ValueError(f"the page needs exactly one {START} and one {END}")
    before, _, rest = page.partition(START)
    _, _, after = rest.partition(END)
    if END in before:
        raise ValueError(f"{END} comes before {START}")
    return f"{before}{START}\n\n{table_text}\n{END}{after}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the table in the page")
    mode.add_argument("--check", action="store_true", help="exit 1 if the page's is stale")
    parser.add_argument("--page", "--readme", type=Path, default=PAGE, help="default: %(default)s")
    args = parser.parse_args(argv)
    generated = table()
    if not (args.write or args.check):
        sys.stdout.write(generated)
        return 0
    page: Path = args.page
    current = page.read_text(encoding="utf-8")
    try:
        wanted = with_table(current, generated)
    except ValueError as exc:
        print(f"{page}: {exc}", file=sys.stderr)
        return 2
    if wanted == current:
        return 0
    if args.check:
        print(
            f"{page}: the configuration table is out of date; run scripts/config_table.py --write",
            file=sys.stderr,
        )
        return 1
    page.write_text(wanted, encoding="utf-8")
    print(f"{page}: configuration table rewritten", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
