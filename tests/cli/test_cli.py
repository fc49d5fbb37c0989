"""The ``outbox-relay`` command, run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest

from outbox_relay.db.migrate import load_migrations

ENV_KEYS = ("DATABASE_URL", "INNGEST_EVENT_KEY", "INNGEST_DEV", "QDRANT_URL")


def run(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    return subprocess.run(
        [sys.executable, "-m", "outbox_relay", *args],
        env={**base, "OUTBOX_LOG_FORMAT": "json", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_commands_that_need_a_database_say_which_variable_is_missing() -> None:
    for command in ("migrate", "relay", "api", "status"):
        result = run(command)
        assert result.returncode == 2, (command, result.stderr)
        assert "DATABASE_URL is not set" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_relay_without_an_event_key_outside_dev_mode_is_a_clear_error(database_url: str) -> None:
    result = run("relay", DATABASE_URL=database_url, OUTBOX_HTTP_PORT="0")
    assert result.returncode == 2
    assert "INNGEST_EVENT_KEY is not set" in result.stderr


@pytest.mark.slow
def test_invalid_settings_name_the_variable_and_the_rule() -> None:
    result = run("status", DATABASE_URL="postgresql://x@127.0.0.1:1/x", OUTBOX_BATCH_SIZE="0")
    assert result.returncode == 2
    assert "OUTBOX_BATCH_SIZE" in result.stderr and "greater than or equal to 1" in result.stderr


@pytest.mark.slow
def test_migrate_applies_once_then_is_a_no_op(fresh_database_url: str) -> None:
    first = run("migrate", DATABASE_URL=fresh_database_url)
    assert first.returncode == 0, first.stderr
    # Every migration of the folder, in order (the list grows as issues add theirs).
    names = [f"{m.version:03d}_{m.name}" for m in load_migrations()]
    assert names[:6] == [
        "001_outbox",
        "002_library",
        "003_retention_and_history",
        "004_relay_role",
        "005_fast_enqueue",
        "006_pending_age_index",
    ]
    assert f"applied {len(names)} migration(s): {', '.join(names)}" in first.stdout
    again = run("migrate", DATABASE_URL=fresh_database_url)
    assert again.returncode == 0
    assert "applied 0 migration(s)" in again.stdout


@pytest.mark.slow
def test_status_and_requeue(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT outbox.enqueue_track('USRC17600001', 't', 'a', 'b')")
        conn.execute("SELECT outbox.enqueue_track('USRC17600002', 'u', 'a', 'b')")
        conn.execute(
            "UPDATE outbox.messages SET status = 'dead', attempts = 5, last_error = '400: nope' "
            "WHERE isrc = 'USRC17600002'"
        )
    text = run("status", DATABASE_URL=database_url)
    assert text.returncode == 0, text.stderr
    assert "pending" in text.stdout and "400: nope" in text.stdout
    report = json.loads(run("status", "--json", DATABASE_URL=database_url).stdout)
    counts = {row["status"]: row["count"] for row in report["statuses"]}
    assert counts == {"pending": 1, "published": 0, "skipped": 0, "dead": 1, "fanned_out": 0}
    assert report["recent_dead_letters"][0]["isrc"] == "USRC17600002"

    assert run("requeue", DATABASE_URL=database_url).returncode == 2  # a selector is required
    requeued = run("requeue", "--reason", "NOPE", DATABASE_URL=database_url)
    # stdout is a pipe here: it carries the result only; the log line went to stderr.
    assert (requeued.returncode, requeued.stdout) == (0, "requeued 1 dead letter(s)\n")
    assert '"event":"dead_letters_requeued"' in requeued.stderr
    assert (
        run("requeue", "--all", DATABASE_URL=database_url).stdout == "requeued 0 dead letter(s)\n"
    )


@pytest.mark.slow
def test_requeue_by_id_says_why_a_row_was_left_alone(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        pending = conn.execute("SELECT outbox.enqueue_track('USRC17600001', 't', 'a', 'b')")
        pending_id = pending.fetchone()[0]  # type: ignore[index]
        dead = conn.execute("SELECT outbox.enqueue_track('USRC17600002', 'u', 'a', 'b')")
        dead_id = dead.fetchone()[0]  # type: ignore[index]
        conn.execute("UPDATE outbox.messages SET status = 'dead' WHERE id = %s", (dead_id,))
    missing_id = dead_id + 100

    result = run(
        "requeue",
        "--id", str(pending_id),
        "--id", str(dead_id),
        "--id", str(missing_id),
        DATABASE_URL=database_url,
    )  # fmt: skip

    assert result.returncode == 1
    # The dead one is requeued all the same; the two others each get one line saying why.
    assert result.stdout == "requeued 1 dead letter(s)\n"
    assert [line for line in result.stderr.splitlines() if not line.startswith("{")] == [
        f"outbox-relay requeue: #{pending_id} is pending, not dead; only dead letters can be "
        "requeued",
        f"outbox-relay requeue: #{missing_id} does not exist; only dead letters can be requeued",
    ]

    only_missing = run("requeue", "--id", str(missing_id), DATABASE_URL=database_url)
    assert only_missing.returncode == 1
    assert only_missing.stdout == "requeued 0 dead letter(s)\n"


@pytest.mark.slow
def test_each_command_help_names_the_variables_it_reads() -> None:
    from outbox_relay.cli.main import COMMAND_SETTINGS, _parser

    # Every subcommand of the parser has its list, so a new command cannot forget it.
    subcommands = next(action for action in _parser()._actions if action.dest == "command").choices
    assert set(subcommands) == set(COMMAND_SETTINGS)  # type: ignore[arg-type]
    expected = {
        "migrate": ["DATABASE_URL", "OUTBOX_LOG_LEVEL"],
        "status": ["DATABASE_URL"],
        "requeue": ["DATABASE_URL"],
        "api": ["DATABASE_URL", "OUTBOX_API_HOST", "OUTBOX_API_PORT"],
        "relay": [
            "DATABASE_URL",
            "INNGEST_EVENT_KEY",
            "INNGEST_DEV",
            "QDRANT_URL",
            "QDRANT_PATH",
            "QDRANT_COLLECTION",
            "OUTBOX_HTTP_HOST",
            "OUTBOX_HTTP_PORT",
            "OUTBOX_ADMIN_TOKEN",
            "OUTBOX_BATCH_SIZE",
        ],
        "scan": ["DATABASE_URL", "OUTBOX_SCAN_HTTP_PORT", "OUTBOX_SCAN_SETTINGS_POLL"],
        "worker": ["DATABASE_URL", "INNGEST_SIGNING_KEY", "OUTBOX_WORKER_PORT", "EMBEDDING_URL"],
    }
    for command, names in expected.items():
        result = run(command, "--help")
        assert result.returncode == 0, result.stderr
        text = " ".join(result.stdout.split())
        assert "environment variables read" in text, command
        for name in names:
            assert name in text, (command, name)


@pytest.mark.slow
def test_demo_runs_the_whole_system_and_exits_0() -> None:
    result = run("demo", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "LOCAL STAND-IN of Inngest's Event API" in out
    assert (
        "received 9 events from the relay and, as Inngest's executor, ran 8 ingestion runs" in out
    )
    for reason in ("invalid_isrc", "already_indexed", "missing_isrc"):
        assert reason in out
    assert "published        9" in out
