"""US1–US5 of the seed (002), end to end: SQL functions or the write API → relay → Event API.

Real PostgreSQL, the stand-in over real HTTP, embedded Qdrant; the relay runs in-process.
"""

from __future__ import annotations

import asyncpg
import psycopg
from structlog.testing import capture_logs

from outbox_relay.write.asyncpg import enqueue_album, enqueue_track
from outbox_relay.write.psycopg import enqueue_track as enqueue_track_psycopg

from .conftest import Harness


async def test_us1_a_track_added_with_asyncpg_is_scheduled(harness: Harness) -> None:
    await harness.start_relay()
    conn = await asyncpg.connect(harness.dsn)
    try:
        async with conn.transaction():
            row_id = await enqueue_track(
                conn,
                isrc=" usrc17607839 ",
                title="Lose Yourself",
                artist="Eminem",
                album="8 Mile",
                artwork_url="https://img.example/8mile.jpg",
            )
    finally:
        await conn.close()
    await harness.standin.wait_for_events(1)
    [event] = harness.standin.events
    assert event.name == "track/ingestion.requested"
    assert event.id == "track-ingestion-USRC17607839"
    assert event.data == {
        "isrc": "USRC17607839",
        "title": "Lose Yourself",
        "artist": "Eminem",
        "album": "8 Mile",
        "artworkUrl": "https://img.example/8mile.jpg",
    }
    await harness.wait_settled()
    row = await (await harness.conn()).fetchrow(
        "SELECT status, event_id, inngest_id, attempts, processed_at IS NOT NULL AS done "
        "FROM outbox.messages WHERE id = $1",
        row_id,
    )
    assert dict(row) == {
        "status": "published",
        "event_id": "track-ingestion-USRC17607839",
        "inngest_id": event.ulid,
        "attempts": 0,
        "done": True,
    }


async def test_us1_a_track_added_with_psycopg_is_scheduled(harness: Harness) -> None:
    await harness.start_relay()
    with psycopg.connect(harness.dsn) as conn, conn.transaction():
        enqueue_track_psycopg(
            conn,
            isrc="GBAYE0000351",
            title="Help!",
            artist="The Beatles",
            album="Help!",
            priority=120,
        )
    await harness.standin.wait_for_events(1)
    assert harness.standin.events[0].data["priority"] == 120


async def test_us2_an_album_schedules_one_event_per_track(harness: Harness) -> None:
    await harness.start_relay()
    tracks = [{"isrc": f"USWB1000{n:04d}", "title": f"Track {n}"} for n in range(12)]
    conn = await asyncpg.connect(harness.dsn)
    try:
        with capture_logs() as logs:
            async with conn.transaction():
                await enqueue_album(conn, title="Rumours", artist="Fleetwood Mac", tracks=tracks)
            await harness.standin.wait_for_events(12)
            await harness.wait_settled(expected=12)
    finally:
        await conn.close()
    events = harness.standin.events
    assert len(events) == 12
    assert {e.id for e in events} == {f"track-ingestion-USWB1000{n:04d}" for n in range(12)}
    assert all(e.data["album"] == "Rumours" and e.data["artist"] == "Fleetwood Mac" for e in events)
    [batch_log] = [entry for entry in logs if entry["event"] == "album_ingestion_batch"]
    assert batch_log["total_tracks"] == 12
    assert batch_log["scheduled_count"] == 12
    assert batch_log["skipped_count"] == 0
    statuses = await (await harness.conn()).fetch(
        "SELECT kind, status, count(*) AS n FROM outbox.messages GROUP BY 1, 2 ORDER BY 1"
    )
    assert [tuple(r) for r in statuses] == [("album", "fanned_out", 1), ("track", "published", 12)]


async def test_a_150_track_album_sends_150_events(harness: Harness) -> None:
    await harness.start_relay(batch_size=50)
    tracks = [{"isrc": f"USBIG{n:07d}", "title": f"Part {n}"} for n in range(150)]
    conn = await harness.conn()
    await enqueue_album(conn, title="Box Set", artist="Various", tracks=tracks)
    await harness.standin.wait_for_events(150)
    await harness.wait_settled(expected=150)
    assert len({e.id for e in harness.standin.events}) == 150
    assert harness.standin.run_count() == 150


async def test_us3_the_same_track_twice_is_one_ingestion_run(harness: Harness) -> None:
    await harness.start_relay()
    await harness.enqueue_track("usrc17607839", "Lose Yourself")
    await harness.standin.wait_for_events(1)
    await harness.enqueue_track("USRC17607839", "Lose Yourself")
    # and again inside an album
    await enqueue_album(
        await harness.conn(),
        title="Curtain Call",
        artist="Eminem",
        tracks=[{"isrc": "USRC17607839", "title": "Lose Yourself"}],
    )
    await harness.standin.wait_for_events(3)
    await harness.wait_settled()
    assert {e.id for e in harness.standin.events} == {"track-ingestion-USRC17607839"}
    assert harness.standin.runs_for("track-ingestion-USRC17607839") == 1


async def test_us4_an_indexed_track_is_skipped_and_force_sends_it(harness: Harness) -> None:
    await harness.seed_indexed(["GBAYE0601498"])
    await harness.start_relay()
    with capture_logs() as logs:
        skipped = await harness.enqueue_track("GBAYE0601498", "Paranoid Android")
        fresh = await harness.enqueue_track("GBAYE0601499", "Let Down")
        await harness.standin.wait_for_events(1)
        await harness.wait_settled()
        forced = await harness.enqueue_track("gbaye0601498", "Paranoid Android", force=True)
        await harness.standin.wait_for_events(2)
        await harness.wait_settled()
    ids = [e.id for e in harness.standin.events]
    assert ids == ["track-ingestion-GBAYE0601499", f"track-ingestion-GBAYE0601498-{forced}"]
    assert harness.standin.events[1].data["force"] is True
    rows = await (await harness.conn()).fetch(
        "SELECT id, status, skip_reason FROM outbox.messages ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        (skipped, "skipped", "already_indexed"),
        (fresh, "published", None),
        (forced, "published", None),
    ]
    [warning] = [e for e in logs if e["event"] == "ingestion_skipped"]
    assert warning["log_level"] == "warning"
    assert warning["reason"] == "already_indexed"
    assert warning["isrc"] == "GBAYE0601498"
    assert warning["result"] == "skipped"


async def test_missing_and_invalid_isrcs_are_skipped_visibly(harness: Harness) -> None:
    await harness.start_relay()
    with capture_logs() as logs:
        missing = await harness.enqueue_track(None, "No Code")
        blank = await harness.enqueue_track("   ", "Blank Code")
        invalid = await harness.enqueue_track("US-RC1-76", "Bad Code")
        good = await harness.enqueue_track("USRC17607839", "Good")
        await harness.standin.wait_for_events(1)
        await harness.wait_settled()
    rows = await (await harness.conn()).fetch(
        "SELECT id, status, skip_reason FROM outbox.messages ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        (missing, "skipped", "missing_isrc"),
        (blank, "skipped", "missing_isrc"),
        (invalid, "skipped", "invalid_isrc"),
        (good, "published", None),
    ]
    reasons = sorted(e["reason"] for e in logs if e["event"] == "ingestion_skipped")
    assert reasons == ["invalid_isrc", "missing_isrc", "missing_isrc"]
    assert len(harness.standin.events) == 1


async def test_album_with_indexed_and_invalid_tracks_schedules_n_minus_m(harness: Harness) -> None:
    await harness.seed_indexed(["USAL10000001", "USAL10000002"])
    await harness.start_relay()
    tracks = [{"isrc": f"USAL1000000{n}", "title": f"T{n}"} for n in range(1, 7)]
    tracks.append({"isrc": "bad", "title": "Broken"})
    with capture_logs() as logs:
        await enqueue_album(await harness.conn(), title="Mixed", artist="Band", tracks=tracks)
        await harness.standin.wait_for_events(4)
        await harness.wait_settled(expected=7)
    assert len(harness.standin.events) == 4
    [summary] = [e for e in logs if e["event"] == "album_ingestion_batch"]
    assert (summary["total_tracks"], summary["scheduled_count"], summary["skipped_count"]) == (
        7,
        4,
        3,
    )


async def test_an_album_without_tracks_is_an_error_log_and_skipped(harness: Harness) -> None:
    await harness.start_relay()
    with capture_logs() as logs:
        album = await enqueue_album(await harness.conn(), title="Empty", artist="Nobody", tracks=[])
        await harness.wait_settled()
        await harness.enqueue_track("USRC17607839", "Next")
        await harness.standin.wait_for_events(1)
    row = await (await harness.conn()).fetchrow(
        "SELECT status, skip_reason FROM outbox.messages WHERE id = $1", album
    )
    assert tuple(row) == ("skipped", "no_tracks")
    errors = [e for e in logs if e["event"] == "ingestion_error"]
    assert errors and errors[0]["reason"] == "no_tracks" and errors[0]["log_level"] == "error"


async def test_a_rolled_back_write_sends_nothing(harness: Harness) -> None:
    await harness.start_relay()
    conn = await asyncpg.connect(harness.dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        await enqueue_track(conn, isrc="USRC17600001", title="Never", artist="A", album="B")
        await enqueue_album(
            conn, title="Never", artist="A", tracks=[{"isrc": "USRC17600002", "title": "x"}]
        )
        await tx.rollback()
    finally:
        await conn.close()
    # A committed write after the rolled-back one proves the relay was awake and looked.
    await harness.enqueue_track("USRC17600003", "Committed")
    await harness.standin.wait_for_events(1)
    await harness.wait_settled()
    assert [e.id for e in harness.standin.events] == ["track-ingestion-USRC17600003"]
    assert await (await harness.conn()).fetchval("SELECT count(*) FROM outbox.messages") == 1


async def test_notification_wakes_the_relay_long_before_the_poll(harness: Harness) -> None:
    relay = await harness.start_relay(poll_interval=30.0)
    await relay.wait_idle()
    await harness.enqueue_track("USRC17600004", "Quick")
    await harness.standin.wait_for_events(1, timeout=5.0)
    metrics = relay.service.metrics
    assert metrics.wakeups.labels(cause="notify")._value.get() >= 1


async def test_polling_finds_rows_without_any_notification(harness: Harness) -> None:
    # A row inserted by hand, not through the enqueue functions, sends no NOTIFY: only the poll
    # can find it.
    relay = await harness.start_relay(poll_interval=0.1)
    await relay.wait_idle()
    conn = await harness.conn()
    await conn.execute(
        "INSERT INTO outbox.messages (kind, isrc, title, artist, album) "
        "VALUES ('track', 'USRC17600005', 'Silent', 'A', 'B')"
    )
    await harness.standin.wait_for_events(1, timeout=5.0)
    wakeups = relay.service.metrics.wakeups
    assert wakeups.labels(cause="notify")._value.get() == 0
    assert wakeups.labels(cause="poll")._value.get() >= 1


async def test_us1_to_us4_through_the_http_api(harness: Harness) -> None:
    """Track, album, repeat and an indexed track, all through POST /v1/library/*."""
    from aiohttp.test_utils import TestClient, TestServer

    from outbox_relay.http.write_api import create_app

    await harness.seed_indexed(["GBAYE0601498"])
    await harness.start_relay()
    api = TestClient(TestServer(create_app(harness.dsn)))
    await api.start_server()
    try:
        track = {
            "isrc": "usrc17607839",
            "title": "Lose Yourself",
            "artist": "Eminem",
            "album": "8 Mile",
        }
        for body in (track, track, {**track, "isrc": "GBAYE0601498", "title": "Indexed"}):
            response = await api.post("/v1/library/tracks", json=body)
            assert response.status == 201
        album = {
            "title": "Rumours",
            "artist": "Fleetwood Mac",
            "tracks": [{"isrc": f"USWB1000239{n}", "title": f"T{n}"} for n in range(3)],
        }
        response = await api.post("/v1/library/albums", json=album)
        assert response.status == 201
        ids = await response.json()
        await harness.wait_settled(expected=6)
    finally:
        await api.close()
    sent = sorted(e.id or "" for e in harness.standin.events)
    assert sent == ["track-ingestion-USRC17607839"] * 2 + [
        f"track-ingestion-USWB1000239{n}" for n in range(3)
    ]
    assert harness.standin.runs_for("track-ingestion-USRC17607839") == 1
    children = await (await harness.conn()).fetchval(
        "SELECT count(*) FROM outbox.messages WHERE parent_id = $1 AND status = 'published'",
        ids["outboxId"],
    )
    assert children == 3
