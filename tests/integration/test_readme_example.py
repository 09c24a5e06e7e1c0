"""The README's client example, run as printed (in a process of its own) against a live
service: the first ```python block after the README's example marker."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from decimal import Decimal
from pathlib import Path

from tests.support.postgres import stored_bars
from tests.support.service import service_factory

ROOT = Path(__file__).parents[2]
MARKER = "<!-- readme-example:client -->"
DEFAULT_URL = 'os.environ.get("MDS_URL", "http://127.0.0.1:8081")'


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(MARKER) == 1, f"README.md needs one {MARKER}"
    block = re.search(r"```python\n(.*?)^```", text.split(MARKER, 1)[1], re.S | re.M)
    assert block is not None, f"no ```python block after {MARKER}"
    return block.group(1)


def test_the_example_is_a_whole_script_on_the_readmes_port() -> None:
    source = readme_example()
    compile(source, "README.md", "exec")  # no fragment: it compiles as a module
    assert source.rstrip().endswith("asyncio.run(main())")
    assert DEFAULT_URL in source  # the port the README's first screen names


async def test_the_readme_client_example_runs_as_printed(database_url: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(readme_example(), encoding="utf-8")
    async with service_factory(database_url, str(tmp_path))() as service:
        env = {**os.environ, "MDS_URL": service.base_url, "NO_PROXY": "127.0.0.1,localhost"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 45)
    assert proc.returncode == 0, err.decode()
    printed = out.decode().splitlines()
    assert printed[0] == "committed: 3"
    assert len(printed) == 4  # the three bars, read back over GET /v1/bars
    rows = await stored_bars(database_url)
    assert [(r["provider"], r["symbol"], r["resolution"]) for r in rows] == [
        ("example", "MSFT", "1m")
    ] * 3
    assert [r["close"] for r in rows] == [Decimal("375.40")] * 3
    assert [int(r["volume"]) for r in rows] == [900, 901, 902]
