"""The package's exceptions: one root, a few precise subclasses.

Messages say what was wrong and what to do about it.
"""


class OutboxRelayError(Exception):
    """Root of every error this package raises on purpose.

    The CLI prints the message as one line and exits with ``exit_code``: 2 means "fix the
    configuration (or the database's state) and run again"; 1 means "try again later".
    """

    exit_code: int = 2


class ConfigurationError(OutboxRelayError):
    """A setting is missing or invalid; the message names the variable."""


class DatabaseUnavailable(OutboxRelayError):
    """PostgreSQL cannot be reached now (down, starting, refusing, out of connections).

    Not a configuration error: the same command succeeds once the server answers. ``relay``
    and ``api`` wait for it with backoff; one-shot commands exit 1.
    """

    exit_code = 1


class SchemaNotReady(ConfigurationError):
    """The database answers but is not migrated (or not to this release): run ``migrate``."""


class MigrationError(OutboxRelayError):
    """The migrations folder or the applied history is inconsistent."""


class EventApiError(OutboxRelayError):
    """The Event API could not take a request (see the subclasses)."""


class EventApiUnavailable(EventApiError):
    """Inngest is unreachable or overloaded: an outage, never charged to the events."""

    def __init__(self, cause: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"Event API unavailable ({cause}): {detail}")
        self.cause = cause
        self.detail = detail
        self.retry_after = retry_after


class CatalogError(OutboxRelayError):
    """The music catalog (TIDAL) could not answer a lookup (see the subclasses)."""


class CatalogUnavailable(CatalogError):
    """The catalog is unreachable or limiting us (connection, timeout, 5xx, 429): an outage;
    the rows that wait on it are handed back uncharged."""

    exit_code = 1

    def __init__(self, cause: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"catalog unavailable ({cause}): {detail}")
        self.cause = cause
        self.detail = detail
        self.retry_after = retry_after


class CatalogAuthError(CatalogError):
    """The catalog's token endpoint refused the client credentials (401/400 invalid_client):
    TIDAL_CLIENT_ID / TIDAL_CLIENT_SECRET are wrong; shown in /readyz until fixed."""


class IndexCheckError(OutboxRelayError):
    """The index (Qdrant) could not answer; the relay fails open and publishes anyway."""


class EmbeddedServerError(OutboxRelayError):
    """A local server (PostgreSQL for the demo and tests) could not be started or stopped."""


class TagReadError(OutboxRelayError):
    """An inbound file could not be read as tagged audio; ``reason`` says why, in one word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ScanError(OutboxRelayError):
    """A scan run cannot proceed (settings, libraries, folders); the message names what and why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class EmbeddingError(OutboxRelayError):
    """The embedder could not embed a document (down, timed out, or answered the wrong shape).

    The ingestion step that met it fails, and Inngest retries it with backoff.
    """


class PointWriteError(OutboxRelayError):
    """Qdrant did not take a point (down, timed out, or a collection of another schema).

    The ingestion step that met it fails, and Inngest retries it with backoff.
    """


class MalformedEventError(OutboxRelayError):
    """An event's data breaks its schema; the message names every field and its rule.

    Retrying cannot help: the worker fails the run without retry (``NonRetriableError``).
    """
