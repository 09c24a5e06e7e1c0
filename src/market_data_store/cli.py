"""``mds-store``: command-line entry point."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from market_data_store import __version__
from market_data_store.config import ConfigError, load_settings, redacted


def _config(_: argparse.Namespace) -> int:
    """Validate the configuration and print it (secrets masked)."""
    settings = load_settings()
    print(json.dumps(redacted(settings), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mds-store", description="market-data-store")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="validate and print the effective configuration")
    config.set_defaults(func=_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"mds-store: configuration error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
