"""Start-up checks of the database: reachable, logged in, migrated — each failure one clear line.

Every command that needs the database connects through :func:`connect` and (except
``migrate``) checks the schema with :func:`check_schema` first, so that what goes wrong is
said once, with the fix, instead of surfacing as a driver traceback (or an endless retry)
from deep inside a loop:

- ``DATABASE_URL`` that is not a ``postgresql://`` URL: ``Settings.require_database_url``;
- the server cannot be reached (down, starting, refusing, out of connections, a wrong host or
  port): :class:`DatabaseUnavailable`. ``relay`` and ``api`` wait for it (:func:`wait_until_ready`,
  one log line per attempt); one-shot commands exit 1;
- the login is refused (unknown role, wrong password, no ``pg_hba.conf`` entry) or the database
  does not exist: :class:`ConfigurationError`, exit 2;
- the database is not migrated, or lacks a migration of this release: :class:`SchemaNotReady`,
  exit 2, "run `outbox-relay migrate`".

Messages name host, port and database, never the DSN (it may carry a password).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import urllib.parse
from collections.abc import Callable

import asyncpg
import structlog

from outbox_relay.aio import wait_event
from outbox_relay.backoff import Backoff
from outbox_relay.db.connection import CONNECTION_ERRORS
from outbox_relay.db.migrate import load_migrations
from outbox_relay.db.queries import QUERIES
from outbox_relay.errors import ConfigurationError, DatabaseUnavailable, SchemaNotReady

__all__ = ["check_database", "check_schema", "connect", "describe", "wait_until_ready"]

log = structlog.get_logger("outbox_relay.preflight")

CONNECT_TIMEOUT = 10.0
MIGRATE_HINT = "run `outbox-relay migrate` with this DATABASE_URL"


def describe(dsn: str) -> str:
    """``host:port/database`` of a DSN, without user or password, for messages."""
    parts = urllib.parse.urlsplit(dsn)
    host = parts.hostname or "localhost"
    try:
        port = parts.port or 5432
    except ValueError:
        port = 5432
    database = parts.path.lstrip("/") or parts.username or "postgres"
    return f"{host}:{port}/{database}"


def _unreachable(dsn: str, exc: BaseException) -> DatabaseUnavailable:
    where = describe(dsn).rsplit("/", 1)[0]
    if isinstance(exc, ConnectionRefusedError):
        cause = "connection refused"
    elif isinstance(exc, socket.gaierror):
        cause = "unknown host"
    elif isinstance(exc, TimeoutError):
        cause = f"no answer within {CONNECT_TIMEOUT:g} s"
    elif isinstance(exc, asyncpg.PostgresError):
        cause = str(exc)
    else:
        cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return DatabaseUnavailable(
        f"cannot reach PostgreSQL at {where} ({cause}): start it, or fix the host and port in "
        "DATABASE_URL"
    )


async def connect(dsn: str, *, timeout: float = CONNECT_TIMEOUT) -> asyncpg.Connection:
    """A connection, or the one-line error that says what is wrong and what to do."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=timeout)
    except (
        asyncpg.InvalidAuthorizationSpecificationError,
        asyncpg.InvalidPasswordError,
    ) as exc:
        # 28000 (unknown role, no pg_hba.conf entry) and 28P01 (wrong password).
        raise ConfigurationError(
            f"PostgreSQL at {describe(dsn)} refused the login ({exc}): fix the user and "
            "password in DATABASE_URL"
        ) from None
    except asyncpg.InvalidCatalogNameError as exc:
        raise ConfigurationError(
            f"{exc} on {describe(dsn).rsplit('/', 1)[0]}: create it, or fix the database name "
            "in DATABASE_URL"
        ) from None
    except asyncpg.ClientConfigurationError as exc:
        raise ConfigurationError(f"DATABASE_URL is not usable: {exc}") from None
    except CONNECTION_ERRORS as exc:
        raise _unreachable(dsn, exc) from None
    return conn


async def check_schema(conn: asyncpg.Connection) -> None:
    """Raises :class:`SchemaNotReady` unless every migration this release needs is applied.

    Migrations that need a privilege the migrating role may lack (see ``db/migrate.py``) are
    not needed to run. A role that may not read the migrations' record (the relay's own role)
    is only checked for the outbox's existence.
    """
    try:
        state = await conn.fetchrow(QUERIES["preflight_schema"])
    except asyncpg.InsufficientPrivilegeError as exc:
        raise ConfigurationError(
            f"{exc}: log in as a role that may use schema outbox (the application's role, or a "
            "member of outbox_relay_role)"
        ) from None
    assert state is not None
    database = state["database"]
    if not state["has_outbox"]:
        raise SchemaNotReady(
            f'database "{database}" is not migrated (outbox.messages does not exist): '
            f"{MIGRATE_HINT}"
        )
    if not state["can_read_record"]:
        return
    applied = set(await conn.fetchval(QUERIES["preflight_applied"]))
    missing = [label for version, label in _needed() if version not in applied]
    if missing:
        raise SchemaNotReady(
            f'database "{database}" lacks migration(s) {", ".join(missing)}: {MIGRATE_HINT}'
        )


@functools.cache
def _needed() -> tuple[tuple[int, str], ...]:
    """(version, label) of the migrations a command needs: all but the privileged ones."""
    return tuple((m.version, m.label) for m in load_migrations() if m.requires is None)


async def check_database(dsn: str) -> None:
    """Connects once and checks the schema; every failure is one of the errors above."""
    conn = await connect(dsn)
    try:
        await check_schema(conn)
    except CONNECTION_ERRORS as exc:
        raise _unreachable(dsn, exc) from None
    finally:
        conn.terminate()


async def wait_until_ready(
    dsn: str,
    *,
    stop: asyncio.Event,
    backoff: Backoff,
    component: str,
    on_problem: Callable[[str | None], None] | None = None,
) -> bool:
    """Waits, with backoff, until the database answers and is migrated; False if stopped first.

    A database that cannot be reached is waited for, with one ``database_unavailable`` warning
    per attempt; ``on_problem`` gets the reason (for ``/readyz``), then None once it answers.
    Configuration errors and an unmigrated database are raised at once: waiting cannot fix them.
    """
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            await check_database(dsn)
        except DatabaseUnavailable as exc:
            delay = backoff.next_delay()
            if on_problem is not None:
                on_problem(str(exc))
            log.warning(
                "database_unavailable",
                component=component,
                attempt=attempt,
                error=str(exc),
                retry_in_s=round(delay, 3),
            )
            await wait_event(stop, delay)
            continue
        backoff.reset()
        if on_problem is not None:
            on_problem(None)
        if attempt > 1:
            log.info("database_available", component=component, attempts=attempt)
        return True
    return False
