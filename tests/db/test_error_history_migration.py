"""Migration 007 on a database with history: last errors become history, current ones stay."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import asyncpg

from outbox_relay.db.migrate import migrate, migrations_dir


async def test_007_moves_stale_last_errors_into_the_history(
    fresh_database_url: str, tmp_path: Path
) -> None:
    before = tmp_path / "before"
    before.mkdir()
    for path in sorted(migrations_dir().glob("00[1-6]_*.sql")):
        shutil.copy(path, before)
    await migrate(fresh_database_url, before)
    conn = await asyncpg.connect(fresh_database_url)
    try:
        # (status, attempts, last_error) as releases before 007 left them.
        rows = {
            "dead": ("dead", 5, "400: bad"),
            "retrying": ("pending", 2, "400: flaky"),
            "requeued": ("pending", 0, "400: fixed since"),
            "published": ("published", 1, "400: once"),
            "clean": ("published", 0, None),
        }
        ids = {}
        for name, (status, attempts, error) in rows.items():
            row_id = await conn.fetchval(
                "SELECT outbox.enqueue_track('USRC17600001', $1, 'a', 'b')", name
            )
            await conn.execute(
                "UPDATE outbox.messages SET status = $2, attempts = $3, last_error = $4, "
                "processed_at = CASE WHEN $2 IN ('dead', 'published') THEN now() END "
                "WHERE id = $1",
                row_id,
                status,
                attempts,
                error,
            )
            ids[name] = row_id

        assert "007_error_history" in await migrate(fresh_database_url)

        after = {
            r["title"]: (r["last_error"], json.loads(r["error_history"]))
            for r in await conn.fetch(
                "SELECT title, last_error, error_history FROM outbox.messages"
            )
        }
        # Current errors stay current; stale ones are history only; every error is history.
        assert after["dead"][0] == "400: bad"
        assert after["retrying"][0] == "400: flaky"
        assert after["requeued"][0] is None
        assert after["published"][0] is None
        assert after["clean"] == (None, [])
        for name in ("dead", "retrying", "requeued", "published"):
            (entry,) = after[name][1]
            assert (entry["attempt"], entry["error"]) == (rows[name][1], rows[name][2])
        assert after["dead"][1][0]["at"] is not None
        assert after["retrying"][1][0]["at"] is None  # never finished: time unknown
        letters = await conn.fetch("SELECT title, error_history FROM outbox.dead_letters")
        assert [r["title"] for r in letters] == ["dead"]
    finally:
        await conn.close()
