"""Per-bar CPU between the socket and the queue: this tree against the 0.4.0 code.

    .venv/bin/python bench/request_path.py [--bars 5000] [--rounds 30]

What ``POST /v1/bars`` does with a body before the coordinator takes its rows
(decode, validate, build rows), and what a writer then does per batch before
COPY (keep the latest version of each key, build the CSV text), timed for the
same bodies with the code of this tree and with the code of 0.4.0, read from
git (``BASELINE``). The two alternate round by round; each figure is the best
round, in microseconds per bar, and the ratio is what matters on a shared
machine. Bodies: ``--bars`` 1-minute bars of 500 symbols, prices as JSON
strings and as JSON numbers, in JSON and in MessagePack.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from market_data_store import ingest
from market_data_store.storage import bars_sink

BASELINE = "86b97f9"  # main at release 0.4.0
ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2024, 1, 2, tzinfo=UTC)


def baseline_module(path: str) -> types.ModuleType:
    """A module of this package as it was at ``BASELINE`` (needs git history)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{BASELINE}:src/market_data_store/{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType(f"baseline_{path.replace('/', '_')[:-3]}")
    module.__dict__["__package__"] = "market_data_store." + path.rsplit("/", 1)[0].replace("/", ".")
    sys.modules[module.__name__] = module  # msgspec resolves annotations through it
    exec(compile(source, f"{BASELINE}:{path}", "exec"), module.__dict__)
    return module


def bodies(count: int) -> dict[str, tuple[bytes, str]]:
    bars: list[dict[str, Any]] = []
    numeric: list[dict[str, Any]] = []
    for i in range(count):
        ts = T0 + timedelta(minutes=i // 500)
        price = 100 + (i % 50) + (i % 60) / 100
        text = {"open": f"{price:.2f}", "high": f"{price + 0.5:.2f}",
                "low": f"{price - 0.5:.2f}", "close": f"{price + 0.1:.2f}"}  # fmt: skip
        bar = {"symbol": f"SYM{i % 500:04d}", "ts": ts, "resolution": "1m"}
        bars.append({**bar, **text, "volume": str(1000 + i)})
        numeric.append({**bar, **{k: float(v) for k, v in text.items()}, "volume": 1000 + i})
    return {
        "json, string prices": (
            msgspec.json.encode({"provider": "bench", "bars": bars}),
            ingest.JSON,
        ),
        "json, number prices": (
            msgspec.json.encode({"provider": "bench", "bars": numeric}),
            ingest.JSON,
        ),
        "msgpack, string prices": (
            msgspec.msgpack.encode({"provider": "bench", "bars": bars}),
            ingest.MSGPACK,
        ),
        "msgpack, number prices": (
            msgspec.msgpack.encode({"provider": "bench", "bars": numeric}),
            ingest.MSGPACK,
        ),
    }


def best_of(rounds: int, cases: dict[str, Callable[[], object]], per: int) -> dict[str, float]:
    """Best round of each case, cases alternating within every round (us per item)."""
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, case in cases.items():
            started = time.perf_counter()
            case()
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: seconds / per * 1e6 for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bars", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    old_input = baseline_module("http/bars_input.py")
    old_sink = baseline_module("storage/bars_sink.py")
    now = datetime.now(UTC)
    decoder = ingest.BarDecoder()  # what the service runs: rows_in_steps, in one go

    def old_path(body: bytes, media: str) -> Callable[[], object]:
        return lambda: old_input.to_rows(old_input.decode(body, media, 10**6), now)

    def new_path(body: bytes, media: str) -> Callable[[], object]:
        return lambda: decoder.rows_of(body, media, 10**6, now)

    print(f"{args.bars} bars per body, best of {args.rounds} rounds, us per bar")
    print(f"{'':44} {'0.4.0':>8} {'now':>8} {'now/0.4.0':>10}")
    for label, (body, media) in bodies(args.bars).items():
        old, new = old_path(body, media), new_path(body, media)
        if old() != new():  # same rows (text of prices aside, none differ here)
            sys.exit(f"{label}: this tree and 0.4.0 build different rows")
        figures = best_of(args.rounds, {"old": old, "new": new}, args.bars)
        print(
            f"{'decode + validate, ' + label:44} {figures['old']:8.3f} {figures['new']:8.3f}"
            f" {figures['new'] / figures['old']:10.2f}"
        )
    body, media = bodies(args.bars)["json, string prices"]
    rows = decoder.rows_of(body, media, 10**6, now)
    figures = best_of(
        args.rounds,
        {
            "old": lambda: old_sink.encode_csv(old_sink.latest_versions(rows)),
            "new": lambda: bars_sink.encode_csv(rows),  # the fast path needs no dedupe
        },
        len(rows),
    )
    print(
        f"{'writer: CSV text (0.4.0: + dedupe)':44} {figures['old']:8.3f} {figures['new']:8.3f}"
        f" {figures['new'] / figures['old']:10.2f}"
    )


if __name__ == "__main__":
    main()
