"""Poison and oversized events end as dead letters with a clear reason; the rest flow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from outbox_relay.testing.inngest import EventApiStandIn, Reject

from .conftest import Fleet, delivery_report

# Slow (long fault tests): CI runs them, -m "not slow" leaves them out.
pytestmark = pytest.mark.slow

MAX_EVENT = 3000


async def test_poison_and_oversized_events_are_isolated_as_dead_letters(
    database_url: str, tmp_path: Path
) -> None:
    async with EventApiStandIn(max_event_size=MAX_EVENT) as strict:
        fleet = Fleet(database_url, strict, tmp_path)
        try:
            poison = {"track-ingestion-USPSN0000013", "track-ingestion-USPSN0000077"}
            # One album track is poison too: its album's other tracks must still go out.
            rejected = poison | {"track-ingestion-USALB0000002"}
            await strict.inject(Reject(ids=frozenset(rejected), message="poisoned payload"))
            await fleet.start(name="relay", OUTBOX_MAX_ATTEMPTS="3", OUTBOX_BATCH_SIZE="40")
            await fleet.enqueue_tracks(200, prefix="USPSN")
            big = await fleet.enqueue_track(
                "USBIG0000001", "t" * 1000, artist="a" * 1000, album="b" * 1000
            )
            conn = await fleet.conn()
            album = await conn.fetchval(
                "SELECT outbox.enqueue_album('Album', 'Artist', $1::jsonb)",
                json.dumps(
                    [{"isrc": f"USALB000000{n}", "title": f"Track {n}"} for n in range(1, 5)]
                ),
            )
            await fleet.wait_drained(timeout=60)

            dead = await conn.fetch("SELECT * FROM outbox.dead_letters ORDER BY id")
            reasons = {row["event_id"]: (row["attempts"], row["last_error"]) for row in dead}
            assert set(reasons) == poison | {
                "track-ingestion-USBIG0000001",
                "track-ingestion-USALB0000002",
            }
            for event_id in rejected:
                assert reasons[event_id] == (3, "400: poisoned payload")
            attempts, error = reasons["track-ingestion-USBIG0000001"]
            assert attempts == 3 and "Event is over the max size" in error
            assert dead[-1]["parent_id"] == album
            assert {row["id"] for row in dead if row["kind"] == "track"} >= {big}

            # everything else flowed, each event accepted once
            statuses = await fleet.statuses()
            assert statuses == {"published": 200 - 2 + 3, "dead": 4}
            report = await delivery_report(fleet)
            assert report.lost == [] and report.duplicates == 0
        finally:
            await fleet.close()
