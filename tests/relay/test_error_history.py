"""last_error is only ever current; every error a row met stays in error_history (migration 007).

A real relay, the stand-in rejecting one event, a requeue, and the republish that follows.
"""

from __future__ import annotations

import json
from typing import Any

from outbox_relay.db.admin import requeue_dead
from outbox_relay.testing.inngest import Reject

from .conftest import Harness

ISRC = "USAAA0000001"


async def _row(harness: Harness, row_id: int) -> dict[str, Any]:
    row = await (await harness.conn()).fetchrow(
        "SELECT status, attempts, last_error, error_history FROM outbox.messages WHERE id = $1",
        row_id,
    )
    assert row is not None
    return {**dict(row), "error_history": json.loads(row["error_history"])}


async def test_a_requeued_and_republished_row_keeps_its_errors_as_history_only(
    harness: Harness,
) -> None:
    await harness.standin.inject(Reject(ids=frozenset({f"track-ingestion-{ISRC}"}), message="no"))
    await harness.start_relay(max_attempts=2)
    row_id = await harness.enqueue_track(ISRC)
    await harness.wait_settled(expected=1)

    dead = await _row(harness, row_id)
    assert (dead["status"], dead["attempts"]) == ("dead", 2)
    assert "no" in dead["last_error"]
    assert [(e["attempt"], e["error"]) for e in dead["error_history"]] == [
        (1, dead["last_error"]),
        (2, dead["last_error"]),
    ]
    assert all(e["at"] for e in dead["error_history"])
    letters = await (await harness.conn()).fetch(
        "SELECT id, last_error, error_history FROM outbox.dead_letters"
    )
    assert [(r["id"], r["last_error"]) for r in letters] == [(row_id, dead["last_error"])]
    assert len(json.loads(letters[0]["error_history"])) == 2

    # The cause is fixed; the operator requeues. The old error is no longer current.
    await harness.standin.clear()
    assert await requeue_dead(await harness.conn(), ids=[row_id]) == [row_id]
    await harness.wait_settled(expected=1)

    published = await _row(harness, row_id)
    assert (published["status"], published["attempts"], published["last_error"]) == (
        "published",
        0,
        None,
    )
    assert published["error_history"] == dead["error_history"]
    assert await (await harness.conn()).fetch("SELECT id FROM outbox.dead_letters") == []


async def test_a_rejection_then_an_acceptance_leaves_no_current_error(harness: Harness) -> None:
    await harness.standin.inject(
        Reject(ids=frozenset({f"track-ingestion-{ISRC}"}), message="once"), times=1
    )
    await harness.start_relay(max_attempts=5)
    row_id = await harness.enqueue_track(ISRC)
    await harness.wait_settled(expected=1)

    row = await _row(harness, row_id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("published", 1, None)
    assert [e["attempt"] for e in row["error_history"]] == [1]
    assert "once" in row["error_history"][0]["error"]
