"""Log output and configuration: JSON lines, secrets never printed, clear config errors."""

from __future__ import annotations

import io

import orjson
import pytest
import structlog

from outbox_relay.config import DEV_SERVER_EVENT_KEY, load_settings
from outbox_relay.errors import ConfigurationError
from outbox_relay.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_structlog() -> object:
    yield
    structlog.reset_defaults()


def test_logs_are_one_json_object_a_line_with_level_and_time() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    structlog.get_logger("t").info("ingestion_scheduled", isrc="USRC17607839", result="success")
    structlog.get_logger("t").debug("hidden_below_level")
    [line] = out.getvalue().splitlines()
    record = orjson.loads(line)
    assert record["event"] == "ingestion_scheduled"
    assert record["isrc"] == "USRC17607839"
    assert record["level"] == "info"
    assert "timestamp" in record


def test_configured_secrets_are_redacted_from_every_value() -> None:
    out = io.StringIO()
    configure_logging("debug", "json", secrets=["evt-key-123456", "pg-pass-789"], stream=out)
    log = structlog.get_logger("t")
    log.error("inngest_error", error="POST http://x/e/evt-key-123456 failed")
    log.info("connected", dsn="postgresql://app:pg-pass-789@db/app")
    text = out.getvalue()
    assert "evt-key-123456" not in text and "pg-pass-789" not in text
    assert text.count("[redacted]") == 2


def test_secrets_of_the_settings_include_the_dsn_password() -> None:
    settings = load_settings(
        database_url="postgresql://app:s3cr3t-pw@db:5432/app",
        inngest_event_key="key-abc",
        admin_token="tok-xyz",
    )
    assert set(settings.secrets()) == {"s3cr3t-pw", "key-abc", "tok-xyz"}
    assert "s3cr3t-pw" not in repr(settings) and "key-abc" not in repr(settings)


def test_event_key_and_origin_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INNGEST_EVENT_KEY", "INNGEST_DEV", "INNGEST_EVENT_API_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="INNGEST_EVENT_KEY is not set"):
        load_settings().event_key()
    dev = load_settings(inngest_dev="1")
    assert dev.event_key() == DEV_SERVER_EVENT_KEY
    assert dev.event_api_origin() == "http://127.0.0.1:8288"
    assert load_settings(inngest_dev="http://inngest:8288/").event_api_origin() == (
        "http://inngest:8288"
    )
    assert load_settings(inngest_dev="0").dev_mode is False


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX_POLL_INTERVAL", "-1")
    monkeypatch.setenv("OUTBOX_LOG_LEVEL", "loud")
    monkeypatch.setenv("OUTBOX_SYNCHRONOUS_COMMIT", "sometimes")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    message = str(info.value)
    assert "OUTBOX_POLL_INTERVAL" in message and "OUTBOX_LOG_LEVEL" in message
    assert "OUTBOX_SYNCHRONOUS_COMMIT" in message and "'on' or 'off'" in message


@pytest.mark.parametrize(
    ("env", "budget"),
    [
        ({}, None),  # the dev server, the default destination: no limit
        ({"INNGEST_EVENT_API_BASE_URL": "http://inngest.internal:8288"}, None),  # self-hosted
        ({"INNGEST_EVENT_API_BASE_URL": "https://inn.gs"}, (75, 5.0)),  # Inngest Cloud
        ({"INNGEST_EVENT_API_BASE_URL": "https://inn.gs/", "INNGEST_EVENT_KEY": "k"}, (75, 5.0)),
        ({"OUTBOX_RATE_LIMIT_REQUESTS": "10"}, (10, 5.0)),
        ({"OUTBOX_RATE_LIMIT_REQUESTS": "10", "OUTBOX_RATE_LIMIT_WINDOW": "1"}, (10, 1.0)),
        ({"INNGEST_EVENT_API_BASE_URL": "https://inn.gs", "OUTBOX_RATE_LIMIT_REQUESTS": "0"}, None),
    ],
)
def test_the_request_budget_follows_the_destination_unless_set(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], budget: tuple[int, float] | None
) -> None:
    for name in (
        "INNGEST_EVENT_API_BASE_URL",
        "INNGEST_DEV",
        "OUTBOX_RATE_LIMIT_REQUESTS",
        "OUTBOX_RATE_LIMIT_WINDOW",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings(database_url="postgresql://x@localhost/db").request_budget() == budget


def test_a_negative_request_budget_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX_RATE_LIMIT_REQUESTS", "-1")
    with pytest.raises(ConfigurationError, match="OUTBOX_RATE_LIMIT_REQUESTS"):
        load_settings()
