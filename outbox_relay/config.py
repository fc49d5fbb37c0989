"""Configuration from the environment (flags may override a few of these in the CLI).

The variable names in DESIGN.md are a contract; the ``OUTBOX_*`` knobs are ours, with
defaults that suit a sidecar. Secrets are ``SecretStr`` so they never print by accident.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from collections.abc import Iterable
from typing import Final, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from outbox_relay.errors import ConfigurationError

# The key the SDK sends to a dev server when none is configured.
DEV_SERVER_EVENT_KEY: Final = "NO_EVENT_KEY_SET"
# Inngest Cloud rate-limits the Event API per key (a 429 beyond it).
INNGEST_CLOUD_REQUESTS_PER_5S: Final = 75
DEV_SERVER_ORIGIN: Final = "http://127.0.0.1:8288"
# What asyncpg (and libpq) accept as the scheme of a connection URL.
POSTGRES_SCHEMES: Final = frozenset({"postgresql", "postgres"})


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    """Every setting of every command; unused ones cost nothing."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    database_url: SecretStr | None = Field(None, validation_alias=_env("DATABASE_URL"))

    inngest_event_api_base_url: str | None = Field(
        None, validation_alias=_env("INNGEST_EVENT_API_BASE_URL")
    )
    inngest_event_key: SecretStr | None = Field(None, validation_alias=_env("INNGEST_EVENT_KEY"))
    inngest_dev: str | None = Field(None, validation_alias=_env("INNGEST_DEV"))
    # The worker's SDK: where it syncs its functions (PUT -> POST {base}/fn/register) and how it
    # verifies the executor's requests. Unset base URL: the Event API's origin (one server, as
    # the dev server and the stand-in are).
    inngest_api_base_url: str | None = Field(None, validation_alias=_env("INNGEST_API_BASE_URL"))
    inngest_signing_key: SecretStr | None = Field(
        None, validation_alias=_env("INNGEST_SIGNING_KEY")
    )

    qdrant_url: str | None = Field(None, validation_alias=_env("QDRANT_URL"))
    qdrant_api_key: SecretStr | None = Field(None, validation_alias=_env("QDRANT_API_KEY"))
    qdrant_path: str = Field("./.outbox-relay/qdrant", validation_alias=_env("QDRANT_PATH"))
    qdrant_collection: str = Field("tracks", validation_alias=_env("QDRANT_COLLECTION"))
    qdrant_timeout: float = Field(1.0, gt=0, validation_alias=_env("OUTBOX_QDRANT_TIMEOUT"))

    # The TIDAL catalog (issue 13): tracks added by catalog id get their ISRC from it. Without
    # client credentials the relay has no catalog, and rows needing a lookup wait for one.
    tidal_client_id: str | None = Field(None, validation_alias=_env("TIDAL_CLIENT_ID"))
    tidal_client_secret: SecretStr | None = Field(
        None, validation_alias=_env("TIDAL_CLIENT_SECRET")
    )
    tidal_country_code: str = Field(
        "US", pattern=r"^[A-Z]{2}$", validation_alias=_env("TIDAL_COUNTRY_CODE")
    )
    tidal_api_base_url: str = Field(
        "https://openapi.tidal.com/v2", validation_alias=_env("TIDAL_API_BASE_URL")
    )
    tidal_auth_url: str = Field(
        "https://auth.tidal.com/v1/oauth2/token", validation_alias=_env("TIDAL_AUTH_URL")
    )
    # Client-side pace (requests a second; the catalog 429s at a few), requests in flight at
    # once, and one request's timeout.
    catalog_requests_per_second: float = Field(
        4.0, gt=0, validation_alias=_env("OUTBOX_CATALOG_REQUESTS_PER_SECOND")
    )
    catalog_burst: int = Field(5, ge=1, le=10, validation_alias=_env("OUTBOX_CATALOG_BURST"))
    catalog_concurrency: int = Field(
        2, ge=1, le=16, validation_alias=_env("OUTBOX_CATALOG_CONCURRENCY")
    )
    catalog_timeout: float = Field(5.0, gt=0, validation_alias=_env("OUTBOX_CATALOG_TIMEOUT"))
    # How long an id the catalog did not return is believed unknown before it is asked again.
    catalog_unknown_ttl: float = Field(
        86400.0, ge=0, validation_alias=_env("OUTBOX_CATALOG_UNKNOWN_TTL")
    )

    http_host: str = Field("0.0.0.0", validation_alias=_env("OUTBOX_HTTP_HOST"))
    http_port: int = Field(9108, ge=0, le=65535, validation_alias=_env("OUTBOX_HTTP_PORT"))
    admin_token: SecretStr | None = Field(None, validation_alias=_env("OUTBOX_ADMIN_TOKEN"))
    # The admin page's link to the Grafana dashboard (http or https); unset: no link.
    grafana_url: str | None = Field(None, validation_alias=_env("OUTBOX_GRAFANA_URL"))
    api_host: str = Field("0.0.0.0", validation_alias=_env("OUTBOX_API_HOST"))
    api_port: int = Field(8080, ge=0, le=65535, validation_alias=_env("OUTBOX_API_PORT"))

    replica_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        validation_alias=_env("OUTBOX_REPLICA_ID"),
    )
    batch_size: int = Field(500, ge=1, le=5000, validation_alias=_env("OUTBOX_BATCH_SIZE"))
    poll_interval: float = Field(1.0, gt=0, validation_alias=_env("OUTBOX_POLL_INTERVAL"))
    lease_seconds: float = Field(30.0, gt=0, validation_alias=_env("OUTBOX_LEASE_SECONDS"))
    max_attempts: int = Field(5, ge=1, validation_alias=_env("OUTBOX_MAX_ATTEMPTS"))
    # The relay's own session only: its claims and outcomes are re-done with the same event ids
    # if a crash loses them, so they need not wait for a disk flush (the writes they relay do).
    synchronous_commit: Literal["on", "off"] = Field(
        "off", validation_alias=_env("OUTBOX_SYNCHRONOUS_COMMIT")
    )
    publish_timeout: float = Field(10.0, gt=0, validation_alias=_env("OUTBOX_PUBLISH_TIMEOUT"))
    backoff_base: float = Field(0.5, gt=0, validation_alias=_env("OUTBOX_BACKOFF_BASE"))
    backoff_cap: float = Field(30.0, gt=0, validation_alias=_env("OUTBOX_BACKOFF_CAP"))
    retry_base: float = Field(5.0, gt=0, validation_alias=_env("OUTBOX_RETRY_BASE"))
    retry_cap: float = Field(600.0, gt=0, validation_alias=_env("OUTBOX_RETRY_CAP"))
    # None: follow the destination (Inngest Cloud's 75 per 5 s there, no limit elsewhere).
    rate_limit_requests: int | None = Field(
        None, ge=0, validation_alias=_env("OUTBOX_RATE_LIMIT_REQUESTS")
    )
    rate_limit_window: float = Field(5.0, gt=0, validation_alias=_env("OUTBOX_RATE_LIMIT_WINDOW"))
    one_unrecorded_batch: bool = Field(True, validation_alias=_env("OUTBOX_ONE_UNRECORDED_BATCH"))
    outage_alarm_after: float = Field(
        180.0, gt=0, validation_alias=_env("OUTBOX_OUTAGE_ALARM_AFTER")
    )
    max_request_bytes: int = Field(
        3 * 1024 * 1024, ge=1024, validation_alias=_env("OUTBOX_MAX_REQUEST_BYTES")
    )
    refresh_interval: float = Field(10.0, gt=0, validation_alias=_env("OUTBOX_REFRESH_INTERVAL"))
    # 0 keeps finished rows forever
    retention_seconds: float = Field(
        7 * 24 * 3600.0, ge=0, validation_alias=_env("OUTBOX_RETENTION_SECONDS")
    )
    retention_batch: int = Field(1000, ge=1, validation_alias=_env("OUTBOX_RETENTION_BATCH"))
    # `outbox-relay scan`: its own health/metrics port, how often a waiting scheduler re-reads
    # library.settings, and a debug knob (README, "The inbound scan"): hold a run at a named
    # point (`locked`, `journal_written`, `linked:N`, `moved:N`, `before_commit`, `committed`)
    # until the release file exists, to inspect or kill it there.
    scan_http_host: str = Field("0.0.0.0", validation_alias=_env("OUTBOX_SCAN_HTTP_HOST"))
    scan_http_port: int = Field(
        9109, ge=0, le=65535, validation_alias=_env("OUTBOX_SCAN_HTTP_PORT")
    )
    scan_settings_poll: float = Field(5.0, gt=0, validation_alias=_env("OUTBOX_SCAN_SETTINGS_POLL"))
    scan_debug_hold: str | None = Field(None, validation_alias=_env("OUTBOX_SCAN_DEBUG_HOLD"))
    scan_debug_release: str | None = Field(None, validation_alias=_env("OUTBOX_SCAN_DEBUG_RELEASE"))

    # -- the ingestion worker (`outbox-relay worker`) -----------------------------------------
    worker_host: str = Field("0.0.0.0", validation_alias=_env("OUTBOX_WORKER_HOST"))
    worker_port: int = Field(8090, ge=0, le=65535, validation_alias=_env("OUTBOX_WORKER_PORT"))
    worker_retries: int = Field(5, ge=0, le=20, validation_alias=_env("OUTBOX_WORKER_RETRIES"))
    worker_concurrency: int = Field(10, ge=1, validation_alias=_env("OUTBOX_WORKER_CONCURRENCY"))
    # 0 registers no throttle
    worker_throttle_limit: int = Field(
        10, ge=0, validation_alias=_env("OUTBOX_WORKER_THROTTLE_LIMIT")
    )
    worker_throttle_period: int = Field(
        60, ge=1, validation_alias=_env("OUTBOX_WORKER_THROTTLE_PERIOD")
    )
    worker_shutdown_timeout: float = Field(
        30.0, gt=0, validation_alias=_env("OUTBOX_WORKER_SHUTDOWN_TIMEOUT")
    )
    qdrant_write_timeout: float = Field(
        10.0, gt=0, validation_alias=_env("OUTBOX_QDRANT_WRITE_TIMEOUT")
    )
    embedding_url: str | None = Field(None, validation_alias=_env("EMBEDDING_URL"))
    embedding_dimensions: int = Field(
        1024, ge=2, le=65536, validation_alias=_env("EMBEDDING_DIMENSIONS")
    )
    embedding_timeout: float = Field(30.0, gt=0, validation_alias=_env("OUTBOX_EMBEDDING_TIMEOUT"))

    log_level: str = Field("info", validation_alias=_env("OUTBOX_LOG_LEVEL"))
    log_format: str = Field("auto", validation_alias=_env("OUTBOX_LOG_FORMAT"))

    @field_validator("grafana_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urllib.parse.urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL (the Grafana dashboard's)")
        return value.strip()

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError("must be one of debug, info, warning, error, critical")
        return value.lower()

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value.lower() not in {"auto", "json", "console"}:
            raise ValueError("must be one of auto, json, console")
        return value.lower()

    # -- derived values --------------------------------------------------------------------

    def require_database_url(self) -> str:
        if self.database_url is None or not self.database_url.get_secret_value():
            raise ConfigurationError(
                "DATABASE_URL is not set: give the PostgreSQL DSN, e.g. "
                "postgresql://app:secret@db:5432/app"
            )
        dsn = self.database_url.get_secret_value()
        scheme, separator, _ = dsn.partition("://")
        if not separator or scheme not in POSTGRES_SCHEMES:
            # Only the scheme is repeated: the rest of a DSN may hold a password.
            got = f"a {scheme}:// URL" if separator and scheme else "no scheme"
            raise ConfigurationError(
                f"DATABASE_URL must be a postgresql:// DSN (got {got}), e.g. "
                "postgresql://app:secret@db:5432/app"
            )
        return dsn

    @property
    def dev_mode(self) -> bool:
        value = (self.inngest_dev or "").strip().lower()
        return value not in {"", "0", "false", "no", "off"}

    def event_api_origin(self) -> str:
        """INNGEST_EVENT_API_BASE_URL, else a URL given as INNGEST_DEV, else the dev server."""
        if self.inngest_event_api_base_url:
            return self.inngest_event_api_base_url.rstrip("/")
        dev = (self.inngest_dev or "").strip()
        if dev.startswith(("http://", "https://")):
            return dev.rstrip("/")
        return DEV_SERVER_ORIGIN

    def request_budget(self) -> tuple[int, float] | None:
        """The client-side request budget: (requests, window seconds), or None for no limit.

        ``OUTBOX_RATE_LIMIT_REQUESTS`` decides when set (0: no limit). Unset, the budget follows
        the destination: Inngest Cloud limits each key to 75 requests per 5 s; a dev or
        self-hosted server has no limit, and a budget there would only add latency.
        """
        requests = self.rate_limit_requests
        if requests is None:
            host = urllib.parse.urlsplit(self.event_api_origin()).hostname or ""
            cloud = host == "inn.gs" or host.endswith((".inn.gs", ".inngest.com"))
            requests = INNGEST_CLOUD_REQUESTS_PER_5S if cloud else 0
            return (requests, 5.0) if requests else None
        return (requests, self.rate_limit_window) if requests else None

    def event_key(self) -> str:
        if self.inngest_event_key is not None and self.inngest_event_key.get_secret_value():
            return self.inngest_event_key.get_secret_value()
        if self.dev_mode:
            return DEV_SERVER_EVENT_KEY
        raise ConfigurationError(
            "INNGEST_EVENT_KEY is not set: give the event key of your Inngest environment, "
            "or set INNGEST_DEV=1 to use a local dev server"
        )

    def api_origin(self) -> str:
        """Where the worker's SDK syncs: INNGEST_API_BASE_URL, else the Event API's origin."""
        if self.inngest_api_base_url:
            return self.inngest_api_base_url.rstrip("/")
        return self.event_api_origin()

    def signing_key(self) -> str | None:
        """INNGEST_SIGNING_KEY; required outside dev mode (the worker refuses to start)."""
        if self.inngest_signing_key is not None and self.inngest_signing_key.get_secret_value():
            return self.inngest_signing_key.get_secret_value()
        if self.dev_mode:
            return None
        raise ConfigurationError(
            "INNGEST_SIGNING_KEY is not set: the worker verifies that requests come from "
            "Inngest with it; set it, or INNGEST_DEV=1 for a local dev server or the stand-in"
        )

    def secrets(self) -> list[str]:
        """Every secret value configured, for the log redaction safety net."""
        values = [
            secret.get_secret_value()
            for secret in (
                self.inngest_event_key,
                self.inngest_signing_key,
                self.admin_token,
                self.qdrant_api_key,
            )
            if secret is not None and secret.get_secret_value()
        ]
        if self.database_url is not None:
            from urllib.parse import urlsplit

            password = urlsplit(self.database_url.get_secret_value()).password
            if password:
                values.append(password)
        return values


def env_name(field: str) -> str:
    """The variable of a :class:`Settings` field: ``http_port`` → ``OUTBOX_HTTP_PORT``."""
    alias = Settings.model_fields[field].validation_alias
    assert isinstance(alias, AliasChoices), field
    name = alias.choices[0]
    assert isinstance(name, str), field
    return name


def env_names(fields: Iterable[str]) -> list[str]:
    """The environment variables of several fields, in order."""
    return [env_name(field) for field in fields]


def load_settings(**overrides: object) -> Settings:
    """Reads the environment; turns validation errors into a message naming each variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            alias = (
                Settings.model_fields[field].validation_alias
                if field in Settings.model_fields
                else None
            )
            name = alias.choices[0] if isinstance(alias, AliasChoices) else field
            problems.append(f"{name}: {error['msg']}")
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from exc
