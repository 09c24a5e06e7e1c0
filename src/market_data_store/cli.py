"""``mds-store``: serve, migrate, config."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from market_data_store import __version__
from market_data_store.config import ConfigError, Settings, load_settings, redacted

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from market_data_store.server import serve

    return 0 if serve(settings, host=args.host, port=args.port) else 1


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from market_data_store.storage import apply_migrations, schema_state
    from market_data_store.storage.database import database

    async def run() -> int:
        db = settings.database
        async with (
            database(
                settings.database_url,
                db.embedded_dir,
                min_size=1,
                max_size=1,
                startup_timeout=db.startup_timeout,
            ) as (pool, _),
            pool.acquire() as conn,
        ):
            applied = await apply_migrations(conn)
            state = await schema_state(conn)
        names = ", ".join(f"{m.version}_{m.name}" for m in applied) or "nothing to apply"
        print(f"schema version {state.version}: {names}")
        return 0

    return asyncio.run(run())


def _config(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(redacted(settings), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mds-store", description="market-data-store")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="listen address (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default: server.port, 8081)")
    serve.set_defaults(func=_serve)
    migrate = commands.add_parser("migrate", help="apply pending schema migrations and exit")
    migrate.set_defaults(func=_migrate)
    config = commands.add_parser("config", help="validate and print the effective configuration")
    config.set_defaults(func=_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        settings = load_settings()
        code: int = args.func(args, settings)
    except ConfigError as exc:
        print(f"mds-store: configuration error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
