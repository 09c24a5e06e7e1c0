"""The demo and the benchmark keep running (figures are printed, not asserted)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_coordinator_demo_shows_every_level() -> None:
    out = run("examples/run_coordinator_demo.py")
    for level in ("level=soft", "level=hard", "level=ok", "reason=queue_recovered"):
        assert level in out
    assert "done: 3000 items written, queue=0/1000" in out


def test_coordinator_benchmark_prints_each_case() -> None:
    out = run("bench/coordinator.py", "--items", "3000", "--chunk", "500", "--repeat", "1")
    lines = out.splitlines()
    assert [ln.split(":")[0].strip() for ln in lines] == [
        "baseline asyncio.Queue",
        "submit",
        "submit_many (   500)",
    ]
    assert all("items/s" in ln for ln in lines)


def test_ingest_benchmark_runs_end_to_end(database_url: str) -> None:
    command = [sys.executable, "bench/ingest.py", "--symbols", "5", "--minutes", "40",
               "--per-request", "50", "--clients", "2", "--repeat", "2",
               "--kind-rows", "1000"]  # fmt: skip
    env = {**os.environ, "DATABASE_URL": database_url}
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert refused.returncode != 0
    assert "pass --truncate" in refused.stderr  # it empties that table: not without consent
    proc = subprocess.run(
        [*command, "--truncate"], cwd=ROOT, capture_output=True, text=True, timeout=180, env=env
    )
    assert proc.returncode == 0, proc.stderr
    cases = ("HTTP JSON, new rows", "HTTP MessagePack, new rows", "10 % existing keys",
             "HTTP JSON, replay of existing rows", "psql \\copy straight into bars")  # fmt: skip
    for case in cases:
        assert case in proc.stdout
    assert "HTTP JSON new / psql \\copy" in proc.stdout
    assert "HTTP new, two tenants / one" in proc.stdout
    for kind in ("options", "quotes", "trades", "fundamentals", "news"):  # each vs its \copy
        assert re.search(
            rf"^{kind} +HTTP +[\d,]+ rows/s +psql \\copy +[\d,]+ rows/s +\d", proc.stdout, re.M
        ), proc.stdout


def test_migration_benchmark_loses_no_write(pg_server_url: str) -> None:
    command = [sys.executable, "bench/migration.py", "--rows", "5000", "--copy-rows", "10000",
               "--rounds", "1"]  # fmt: skip
    env = {**os.environ, "DATABASE_URL": pg_server_url}
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "migration 0004 on 5,000 bars:" in proc.stdout
    assert "bars stored;" in proc.stdout  # (it exits 1 when a write was lost)
    assert "after / before:" in proc.stdout


def test_request_path_benchmark_compares_with_0_4_0() -> None:
    proc = subprocess.run(
        [sys.executable, "bench/request_path.py", "--bars", "600", "--rounds", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("now/0.4.0") == 1
    assert "decode + validate, msgpack, string prices" in proc.stdout


def test_client_cost_benchmark_compares_httpx_http1_and_0_4_0() -> None:
    out = run("bench/client_cost.py", "--rounds", "1", "--requests", "40", "--bars", "200",
              "--total", "2000")  # fmt: skip
    assert out.count("now/0.4.0") == 1
    assert "http1/httpx" in out
    for variant in ("raw (pre-encoded)", "client, 0.4.0 costs", "client, now"):
        assert variant in out


def test_health_benchmark_runs(database_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "bench/health.py", "--duration", "1", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**os.environ, "DATABASE_URL": database_url},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "/healthz / bare Litestar" in proc.stdout
    assert "service trivial / bare" in proc.stdout


def test_compare_trees_runs_a_benchmark_from_two_trees(database_url: str) -> None:
    """Against HEAD (a second checkout of the same code): one round each, the medians
    and this tree's share of the base's for every ratio the benchmark prints."""
    proc = subprocess.run(
        [sys.executable, "bench/compare_trees.py", "--base", "HEAD", "--rounds", "1",
         "health.py", "--duration", "1", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "DATABASE_URL": database_url},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("== round 1/1:") == 2
    table = proc.stdout.split("median of 1 alternating rounds", 1)[1].splitlines()
    rows = {line[:58].strip(): line[58:].split() for line in table[2:] if line.strip()}
    assert set(rows) >= {"/healthz / bare Litestar", "service trivial / bare"}
    assert all(len(cells) == 3 and cells[2].endswith("%") for cells in rows.values())


def test_compare_trees_reads_the_ratios_a_benchmark_prints() -> None:
    spec = importlib.util.spec_from_file_location("compare_trees", ROOT / "bench/compare_trees.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = module.figures
    printed = (
        "/healthz / bare Litestar     :   146.0%  (wrk, 16 connections)\n"
        "HTTP JSON new / psql \\copy (target >= 80 %)                 96.9%\n"
        "HTTP JSON, new rows, until committed                      141,608 rows/s\n"
        "rows: 1,000 (5 symbols x 200 minutes)\n"
    )
    assert figures(printed) == {
        "/healthz / bare Litestar": 146.0,
        "HTTP JSON new / psql \\copy (target >= 80 %)": 96.9,
    }


def test_sse_benchmark_runs(database_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "bench/sse.py", "--subscribers", "20", "--clients", "2", "--rounds", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**os.environ, "DATABASE_URL": database_url},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "20 / 20  all: met" in proc.stdout  # completeness is deterministic
    assert "server RSS per idle subscriber" in proc.stdout
    assert "crossing->client, 1 subscriber p50" in proc.stdout


def test_producer_demo_shows_the_levels_then_the_loop_and_loses_nothing(
    database_url: str,
) -> None:
    from tests.support.process import serve, stop

    env = {"DATABASE_URL": database_url, "MDS_COORDINATOR_CAPACITY": "2000"}
    with serve(env, ROOT) as (service, base):
        proc = subprocess.run(
            [sys.executable, "examples/producer_demo.py", "--url", base, "--bars", "40000",
             "--producers", "4", "--symbols", "2", "--timeout", "60"],
            cwd=ROOT, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        stop(service)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    # raw 5,000-bar bodies against a queue of 2,000: the store's own levels rise
    assert "-> HARD" in out or "-> SOFT" in out
    assert re.search(r"ceiling: [\d,]+ bars/s committed", out), out
    assert re.search(r"goodput [\d,]+ bars/s = \d+\.\d\d x the ceiling", out), out
    assert "written 40,000  committed 40,000  stored 40,000  lost 0  wrong values 0" in out
    assert "nothing lost" in out


def test_durability_benchmark_runs_both_modes_in_both_regimes(database_url: str) -> None:
    command = [sys.executable, "bench/durability.py", "--bars", "3000", "--rounds", "1"]
    env = {**os.environ, "DATABASE_URL": database_url}
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert refused.returncode != 0
    assert "pass --truncate" in refused.stderr  # it empties that table: not without consent
    proc = subprocess.run(
        [*command, "--truncate"], cwd=ROOT, capture_output=True, text=True, timeout=180, env=env
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "slow writer (workers=1, batch_size=100, copy_fast_path=false):" in out
    assert "default service:" in out
    assert out.count("committed (wait_commit=True)") == 2
    assert out.count("queued (wait_commit=False)") == 2
    assert out.count("bars/s") == 4
    for regime in ("slow", "default"):
        assert f"committed / queued, {regime} (target >= 95 %)" in out
        assert f"committed / queued, {regime}, median of A/B pairs" in out


def test_control_benchmark_runs_end_to_end(database_url: str, tmp_path: Path) -> None:
    """Regimes (c) and (d), 1 and 2 producers, 6,000 bars, with the A/A runs: the table
    parses, every ratio is a positive number (the figures themselves are not asserted);
    and it takes --truncate to empty the table of DATABASE_URL."""
    out = tmp_path / "control.json"
    command = [sys.executable, "bench/control.py", "--regimes", "c,d", "--producers", "1,2",
               "--bars", "6000", "--seconds", "0.5", "--aa", "--json", str(out)]  # fmt: skip
    env = {**os.environ, "DATABASE_URL": database_url}
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert refused.returncode != 0
    assert "pass --truncate" in refused.stderr  # it empties that table: not without consent
    proc = subprocess.run(
        [*command, "--truncate"], cwd=ROOT, capture_output=True, text=True, timeout=180, env=env
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\nregime ", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    cells = [line.split() for line in lines]
    assert [(c[0], c[1]) for c in cells] == [("c", "1"), ("c", "2"), ("d", "1"), ("d", "2")]
    for round_, ceiling, goodput, ratio, refusals, hard, jain, jain_first, util, cpu in (
        c[2:] for c in cells
    ):
        assert round_ == "1"
        assert float(ceiling.replace(",", "")) > 0
        assert float(goodput.replace(",", "")) > 0
        assert float(ratio) > 0
        assert all(n.isdigit() for n in refusals.split("/"))
        assert 0 <= float(hard) <= 100
        assert 0 < float(jain) <= 1
        assert 0 < float(jain_first) <= 1
        assert all(float(u) >= 0 for u in util.split("/"))
        assert all(int(share) >= 0 for share in cpu.split("/"))
    assert "(d) ceiling column" in proc.stdout  # the halved ceilings, per K
    assert proc.stdout.count("link capped at") == 2
    figures = json.loads(out.read_text())
    assert [f["clients"]["bars"] for f in figures] == [6000] * 4
    for f in figures:
        assert f["ceiling"]["counted"] >= f["ceiling"]["ended"] > f["ceiling"]["started"]
    assert [f["halved"] is None for f in figures] == [True, True, False, False]
    # --aa: (c) ran its raw clients twice, (d) (its link capped mid-run) did not
    assert [f["again"] is None for f in figures] == [False, False, True, True]
    assert [f["again"]["bars"] for f in figures[:2]] == [6000, 6000]
    aa = proc.stdout.split("\nA/A: ", 1)[1].split("\n\n", 1)[0].splitlines()[3:]
    assert [line.split()[:2] for line in aa] == [["c", "1"], ["c", "2"]]
