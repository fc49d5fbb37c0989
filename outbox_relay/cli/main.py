"""The ``outbox-relay`` command.

Each subcommand is a small function; configuration comes from the environment (DESIGN.md),
and a few flags mirror it for convenience. Errors of configuration print one clear line and
exit 2; anything unexpected exits 1 with the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Sequence

import asyncpg
import structlog

from outbox_relay import __version__
from outbox_relay.backoff import Backoff
from outbox_relay.config import Settings, env_names, load_settings
from outbox_relay.errors import ConfigurationError, OutboxRelayError
from outbox_relay.logs import configure_logging

log = structlog.get_logger("outbox_relay.cli")


# The Settings fields each command reads, by field name (a typo fails at import): `--help`
# lists their environment variables, so an operator sees what configures a command.
_LOGS = ("log_level", "log_format")
_DATABASE = ("database_url",)
COMMAND_SETTINGS: dict[str, tuple[str, ...]] = {
    "migrate": (*_DATABASE, *_LOGS),
    "relay": (
        *_DATABASE,
        "inngest_event_api_base_url",
        "inngest_event_key",
        "inngest_dev",
        "qdrant_url",
        "qdrant_api_key",
        "qdrant_path",
        "qdrant_collection",
        "qdrant_timeout",
        "http_host",
        "http_port",
        "admin_token",
        "replica_id",
        "batch_size",
        "poll_interval",
        "lease_seconds",
        "max_attempts",
        "synchronous_commit",
        "publish_timeout",
        "backoff_base",
        "backoff_cap",
        "retry_base",
        "retry_cap",
        "rate_limit_requests",
        "rate_limit_window",
        "outage_alarm_after",
        "max_request_bytes",
        "refresh_interval",
        "retention_seconds",
        "retention_batch",
        *_LOGS,
    ),
    "api": (*_DATABASE, "api_host", "api_port", "backoff_base", "backoff_cap", *_LOGS),
    "worker": (
        *_DATABASE,
        "inngest_event_api_base_url",
        "inngest_event_key",
        "inngest_dev",
        "inngest_api_base_url",
        "inngest_signing_key",
        "qdrant_url",
        "qdrant_api_key",
        "qdrant_path",
        "qdrant_collection",
        "qdrant_timeout",
        "qdrant_write_timeout",
        "worker_host",
        "worker_port",
        "worker_retries",
        "worker_concurrency",
        "worker_throttle_limit",
        "worker_throttle_period",
        "worker_shutdown_timeout",
        "embedding_url",
        "embedding_dimensions",
        "embedding_timeout",
        # --with-relay: the relay's own settings too (see `relay --help`)
        *_LOGS,
    ),
    "status": (*_DATABASE, *_LOGS),
    "requeue": (*_DATABASE, *_LOGS),
    "scan": (
        *_DATABASE,
        "scan_http_host",
        "scan_http_port",
        "scan_settings_poll",
        "scan_debug_hold",
        "scan_debug_release",
        "backoff_base",
        "backoff_cap",
        *_LOGS,
    ),
    # The demo never uses DATABASE_URL or INNGEST_EVENT_API_BASE_URL (its flags name servers).
    "demo": ("inngest_dev", "qdrant_collection", "replica_id", "log_level"),
}


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` ends with the environment variables it reads."""
    names = env_names(COMMAND_SETTINGS[name])
    return commands.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog="environment variables read (README, Configuration): " + ", ".join(names),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="outbox-relay",
        description="Transactional outbox from PostgreSQL to Inngest. "
        "Configuration comes from the environment (each command's --help lists what it "
        "reads); see the README.",
    )
    parser.add_argument("--version", action="version", version=f"outbox-relay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = _command(
        commands, "migrate", "apply migrations/ (idempotent, safe from many replicas)"
    )
    migrate.add_argument(
        "--sql",
        metavar="NNN",
        type=int,
        help="print migration NNN as SQL for an admin to run with psql (it records itself), "
        "and exit; for a migration skipped for a privilege the migrating role lacks",
    )

    relay = _command(commands, "relay", "run the relay until SIGTERM/SIGINT")
    relay.add_argument("--http-port", type=int, help="health/metrics port (OUTBOX_HTTP_PORT)")

    api = _command(commands, "api", "run the library write API")
    api.add_argument("--port", type=int, help="listen port (OUTBOX_API_PORT)")

    worker = _command(
        commands, "worker", "serve the Inngest ingestion functions until SIGTERM/SIGINT"
    )
    worker.add_argument("--worker-port", type=int, help="listen port (OUTBOX_WORKER_PORT)")
    worker.add_argument(
        "--with-relay",
        action="store_true",
        help="also run the relay in this process, sharing one Qdrant client (embedded Qdrant "
        "locks its folder to one process; see the README)",
    )

    status = _command(commands, "status", "print the outbox state")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--dead", type=int, default=10, help="recent dead letters to show")

    requeue = _command(commands, "requeue", "put dead letters back to pending")
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, action="append", dest="ids", help="a row id (repeatable)")
    which.add_argument("--reason", help="requeue dead letters whose last error contains this")
    which.add_argument("--all", action="store_true", help="requeue every dead letter")

    scan = _command(
        commands, "scan", "run the scheduled inbound scan until SIGTERM (or one cycle with --once)"
    )
    scan.add_argument("--once", action="store_true", help="run one cycle now and exit")
    scan.add_argument(
        "--dry-run", action="store_true", help="with --once: report what would move, change nothing"
    )
    scan.add_argument("--json", action="store_true", help="with --once: the summary as JSON")
    scan.add_argument(
        "--http-port", type=int, dest="scan_http_port", help="metrics port (OUTBOX_SCAN_HTTP_PORT)"
    )

    demo = _command(commands, "demo", "run the whole system on this machine, for a first look")
    demo.add_argument("--serve", action="store_true", help="keep running after the walkthrough")
    # Flags, never the environment: an exported DATABASE_URL is the user's real outbox.
    demo.add_argument(
        "--database-url",
        metavar="URL",
        help="use this PostgreSQL server (in a database of the demo's own, dropped at the end) "
        "instead of a throwaway local one; DATABASE_URL is never used by the demo",
    )
    demo.add_argument(
        "--event-api-url",
        metavar="URL",
        help="publish to this Event API (e.g. an Inngest dev server) instead of the local "
        "stand-in; INNGEST_EVENT_API_BASE_URL is never used by the demo",
    )

    return parser


@contextlib.asynccontextmanager
async def _connect(
    settings: Settings, *, check_schema: bool = True
) -> AsyncIterator[asyncpg.Connection]:
    """A connection for a one-shot command; every start-up failure is one line (preflight)."""
    from outbox_relay.db import preflight

    conn = await preflight.connect(settings.require_database_url())
    try:
        if check_schema:
            await preflight.check_schema(conn)
        yield conn
    finally:
        await conn.close()


_ONE_SHOT = frozenset({"migrate", "status", "requeue"})


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        overrides: dict[str, object] = {}
        if getattr(args, "http_port", None) is not None:
            overrides["http_port"] = args.http_port
        if getattr(args, "scan_http_port", None) is not None:
            overrides["scan_http_port"] = args.scan_http_port
        if getattr(args, "port", None) is not None and args.command == "api":
            overrides["api_port"] = args.port
        if getattr(args, "worker_port", None) is not None:
            overrides["worker_port"] = args.worker_port
        settings = load_settings(**overrides)
        # The one-shot commands print their result on stdout (for pipes and scripts); their
        # log lines go to stderr. The long-running ones log to stdout, as services do.
        stream = sys.stderr if args.command in _ONE_SHOT else None
        configure_logging(settings.log_level, settings.log_format, settings.secrets(), stream)
        return asyncio.run(_run(args, settings))
    except OutboxRelayError as exc:
        # One line that names the problem and the fix; 2 for configuration, 1 for "try later".
        print(f"outbox-relay {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "migrate":
        from outbox_relay.db.migrate import admin_sql, load_migrations, migrate_connection

        if args.sql is not None:
            print(admin_sql(args.sql), end="")
            return 0
        migrations = load_migrations()
        async with _connect(settings, check_schema=False) as conn:
            migrated = await migrate_connection(conn, migrations)
        applied = migrated.applied
        print(
            f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else "")
        )
        for skipped in migrated.skipped:
            print(f"outbox-relay migrate: {skipped.notice()}", file=sys.stderr)
        return 0
    if args.command == "relay":
        from outbox_relay.apps.relay import RelayService

        await RelayService(settings).run(handle_signals=True)
        return 0
    if args.command == "api":
        from outbox_relay.apps.api import serve

        await serve(
            settings.require_database_url(),
            settings.api_host,
            settings.api_port,
            backoff=Backoff(settings.backoff_base, settings.backoff_cap),
        )
        return 0
    if args.command == "worker":
        from outbox_relay.apps.worker import WorkerService

        await _check_before_start(settings, wait_if_down=True)
        await WorkerService(settings, with_relay=args.with_relay).run(handle_signals=True)
        return 0
    if args.command == "status":
        from outbox_relay.cli.status import render_status
        from outbox_relay.db.admin import outbox_status

        async with _connect(settings) as conn:
            report = await outbox_status(conn, dead_letters=args.dead)
        print(json.dumps(report, indent=2) if args.json else render_status(report))
        return 0
    if args.command == "requeue":
        from outbox_relay.db.admin import not_requeued, requeue_dead

        async with _connect(settings) as conn:
            requeued = await requeue_dead(
                conn, ids=args.ids, error_contains=args.reason, everything=args.all or False
            )
            refused = await not_requeued(conn, args.ids, requeued) if args.ids else {}
        print(f"requeued {len(requeued)} dead letter(s)")
        for row_id, reason in refused.items():
            print(
                f"outbox-relay requeue: #{row_id} {reason}; only dead letters can be requeued",
                file=sys.stderr,
            )
        return 1 if refused else 0
    if args.command == "scan":
        return await _scan(args, settings)
    if args.command == "demo":
        from outbox_relay.cli.demo import run_demo

        return await run_demo(
            settings,
            serve=args.serve,
            database_url=args.database_url,
            event_api_url=args.event_api_url,
        )
    raise AssertionError(args.command)


async def _check_before_start(settings: Settings, *, wait_if_down: bool) -> None:
    """One line and exit for a refused login or an unmigrated database (db/preflight.py).

    A server that is down fails a one-shot run (exit 1); a long-running command starts anyway,
    since its own loops wait for the database with backoff.
    """
    from outbox_relay.db.preflight import check_database
    from outbox_relay.errors import DatabaseUnavailable

    try:
        await check_database(settings.require_database_url())
    except DatabaseUnavailable:
        if not wait_if_down:
            raise


async def _scan(args: argparse.Namespace, settings: Settings) -> int:
    from outbox_relay.apps.scan import ScanService

    if args.dry_run and not args.once:
        raise ConfigurationError(
            "--dry-run goes with --once; for scheduled dry runs set staging_scan.dry_run = "
            "'true' in library.settings"
        )
    if args.once:
        # stdout carries the summary table (or JSON); the run's log lines go to stderr.
        configure_logging(
            settings.log_level, settings.log_format, settings.secrets(), stream=sys.stderr
        )
    await _check_before_start(settings, wait_if_down=not args.once)
    service = ScanService(settings)
    if not args.once:
        await service.run(handle_signals=True)
        return 0
    from outbox_relay.cli.scan import ProgressBar, render_summary

    bar = ProgressBar()
    try:
        summary = await service.run_once(dry_run=args.dry_run, progress=bar)
    finally:
        bar.close()
    print(json.dumps(summary.as_dict(), indent=2) if args.json else render_summary(summary))
    return 0 if summary.result in ("success", "partial") else 1


if __name__ == "__main__":
    sys.exit(main())
