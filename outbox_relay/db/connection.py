"""What every part of the package that talks to PostgreSQL agrees on about the connection.

- :data:`CONNECTION_ERRORS`: the errors after which a connection is gone or unusable. The relay
  (loop, listener, maintenance) drops the connection and reconnects with backoff.
- :data:`UNAVAILABLE_ERRORS`: those, and the server states in which no statement can succeed
  for a while (shutting down, starting up, out of resources, a read-only standby). The write
  API answers them with 503 and ``Retry-After``: the client's retry is the right answer.
- :data:`NOTIFY_CHANNEL`: the channel that wakes sleeping relays. The trigger of
  ``outbox.messages`` notifies it (migration 001; ``tests/db/test_channel.py`` checks that the
  schema and this constant agree), the listener listens on it, and requeueing dead letters
  notifies it.
"""

from __future__ import annotations

from typing import Final

import asyncpg

__all__ = ["CONNECTION_ERRORS", "NOTIFY_CHANNEL", "UNAVAILABLE_ERRORS"]

NOTIFY_CHANNEL: Final = "outbox_relay"

# InternalClientError is asyncpg's protocol losing track of its state, which a backend killed
# in the middle of a statement (a server shutdown) can cause: the connection is beyond use, and
# a relay that let it through would exit instead of reconnecting.
CONNECTION_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    TimeoutError,
)

# Wider than CONNECTION_ERRORS by whole SQLSTATE classes, on purpose for a request that will
# not be retried inside the process: class 57 (operator intervention, which includes a
# cancelled statement) and class 53 (insufficient resources) mean "not now", and a read-only
# transaction error means a standby after a failover. The relay keeps the narrower list: on a
# connection that still works, such an error is not a lost connection to reconnect from.
UNAVAILABLE_ERRORS: Final[tuple[type[BaseException], ...]] = (
    *CONNECTION_ERRORS,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)
