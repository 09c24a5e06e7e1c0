"""``mds-store``: serve, migrate, config."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence

from market_data_store import __version__
from market_data_store.config import (
    ConfigError,
    Settings,
    guard_logging,
    load_settings,
    redacted,
)

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# Exit statuses, the same for every command.
EXIT_CONFIG = 2  # the configuration (or the command line) is wrong
# could not start: the port is taken, the database unreachable, unusable or another
# instance's, a migration failed. uvicorn ends `serve` with this status (its
# STARTUP_FAILURE); `migrate` answers the same.
EXIT_STARTUP = 3

ENVIRONMENT_HELP = """\
environment variables read:
  MDS_CONFIG               TOML file layered over the shipped defaults (--config wins)
  MDS_<SECTION>_<KEY>      any setting, e.g. MDS_COORDINATOR_CAPACITY=20000,
                           MDS_FEEDBACK_REDIS_URL=redis://..., MDS_ENV=production
                           (`mds-store config` prints every key)
  DATABASE_URL             = MDS_DATABASE_URL; unset: an embedded PostgreSQL
  ADMIN_TOKEN              = MDS_ADMIN_TOKEN, the bearer token of /admin
Order: shipped defaults < config file < environment. The MDS_ form wins over the
unprefixed one. An empty variable counts as unset.

exit status: 0 ok, 2 configuration error, 3 start-up failed (port in use, database
unreachable, unusable or another instance's, migration failed)"""


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from market_data_store.server import ListenError, serve

    try:
        started = serve(settings, host=args.host, port=args.port)
    except ListenError as exc:  # nothing was started
        print(f"mds-store: serve failed: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    return 0 if started else EXIT_STARTUP


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from market_data_store.service import StartupError, migrate, open_database

    async def run() -> None:
        async with open_database(settings, pool_size=1) as db:
            applied, state = await migrate(db.pool, settings)
        names = ", ".join(f"{m.version}_{m.name}" for m in applied) or "nothing to apply"
        print(f"schema version {state.version}: {names}")

    try:
        asyncio.run(run())
    except StartupError as exc:
        print(f"mds-store: migrate failed: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    return 0


def _config(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(redacted(settings), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    # --config is accepted before and after the command: `mds-store --config f serve`
    # and `mds-store serve --config f` (the latter wins)
    config_flag = argparse.ArgumentParser(add_help=False)
    config_flag.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML settings file layered over the defaults (overrides MDS_CONFIG)",
    )
    parser = argparse.ArgumentParser(
        prog="mds-store",
        description="market-data-store",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[config_flag],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help,
            description=help,
            epilog=ENVIRONMENT_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[config_flag],
        )

    serve = command("serve", "run the HTTP service")
    serve.add_argument("--host", help="listen address (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default: server.port, 8081)")
    serve.set_defaults(func=_serve)
    migrate = command("migrate", "apply pending schema migrations and exit")
    migrate.set_defaults(func=_migrate)
    config = command("config", "validate and print the effective configuration (secrets masked)")
    config.set_defaults(func=_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        settings = load_settings(config_file=getattr(args, "config", None))
        guard_logging(settings)  # before anything connects anywhere
        code: int = args.func(args, settings)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except ConfigError as exc:
        print(f"mds-store: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BrokenPipeError:
        # `mds-store config | head -1`: the reader has what it wanted. Point stdout at
        # /dev/null so the interpreter's final flush does not fail once more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
