"""The catalog lookup end to end: real PostgreSQL, the relay in this process, the Event API and
the catalog stand-ins over real HTTP.

Albums and tracks known by TIDAL id only: looked up in requests of at most 20 ids, cached in
``outbox.catalog_tracks``, unknown ids skipped as missing_isrc, outages and 429s hand rows back
uncharged, an expired token is renewed once, refused credentials show in /readyz.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from outbox_relay.testing.tidal import CatalogStandIn, StandInTrack, album_tracks

from relay.harness import Harness, RunningRelay, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
async def catalog() -> AsyncIterator[CatalogStandIn]:
    async with CatalogStandIn(album_tracks(200)) as stand_in:
        yield stand_in


def catalog_settings(catalog: CatalogStandIn, **overrides: Any) -> dict[str, Any]:
    return {
        "tidal_client_id": catalog.client_id,
        "tidal_client_secret": catalog.client_secret,
        "tidal_api_base_url": catalog.api_base_url,
        "tidal_auth_url": catalog.auth_url,
        "catalog_requests_per_second": 50.0,
        **overrides,
    }


async def enqueue_album(harness: Harness, title: str, tracks: list[StandInTrack]) -> int:
    conn = await harness.conn()
    listing = [{"tidalTrackId": t.id, "title": t.title} for t in tracks]
    album_id: int = await conn.fetchval(
        "SELECT outbox.enqueue_album($1, 'Artist', $2::text::jsonb)", title, json.dumps(listing)
    )
    return album_id


def published_isrcs(harness: Harness) -> Counter[str]:
    return Counter(event.data["isrc"] for event in harness.standin.events)


async def test_an_album_of_45_ids_is_three_lookups_and_45_events_and_a_repeat_costs_none(
    harness: Harness, catalog: CatalogStandIn
) -> None:
    tracks = album_tracks(45, first_id=300_000_000, album="Forty-Five")
    catalog.add(tracks)
    relay = await harness.start_relay(**catalog_settings(catalog))
    await enqueue_album(harness, "Forty-Five", tracks)
    await harness.wait_settled(expected=45)

    assert [len(r.ids) for r in catalog.requests] == [20, 20, 5]
    assert sorted(published_isrcs(harness)) == sorted(t.isrc for t in tracks)
    assert catalog.token_requests == 1
    conn = await harness.conn()
    cached = await conn.fetch(
        "SELECT tidal_id, isrc FROM outbox.catalog_tracks WHERE country_code = 'US'"
    )
    assert {r["tidal_id"]: r["isrc"] for r in cached} == {t.id: t.isrc for t in tracks}
    assert relay.metric("outbox_relay_catalog_lookups_total", result="found") == 45
    assert relay.metric("outbox_relay_catalog_ids_per_request_count") == 3

    # The same album added again: every ISRC from the cache, no request.
    await enqueue_album(harness, "Forty-Five", tracks)
    await harness.wait_settled(expected=90)
    assert len(catalog.requests) == 3
    assert published_isrcs(harness) == Counter({t.isrc: 2 for t in tracks})
    assert relay.metric("outbox_relay_catalog_cache_hits_total", kind="found") == 45


async def test_unknown_ids_are_skipped_with_the_album_log_and_the_rest_proceed(
    harness: Harness, catalog: CatalogStandIn
) -> None:
    known = album_tracks(4, first_id=310_000_000)
    unknown = [StandInTrack(id=str(390_000_000 + n), isrc="", title=f"Lost {n}") for n in range(2)]
    catalog.add(known)
    await harness.start_relay(**catalog_settings(catalog))
    with capture_logs() as logs:
        album_id = await enqueue_album(harness, "Partly Lost", [*known, *unknown])
        await harness.wait_settled(expected=6)
    assert sorted(published_isrcs(harness)) == sorted(t.isrc for t in known)
    conn = await harness.conn()
    skipped = await conn.fetch(
        "SELECT tidal_id, skip_reason FROM outbox.messages WHERE status = 'skipped'"
    )
    assert {(r["tidal_id"], r["skip_reason"]) for r in skipped} == {
        (t.id, "missing_isrc") for t in unknown
    }
    errors = [e for e in logs if e["event"] == "album_track_listing_error"]
    assert [(e["album"], e["outbox_id"]) for e in errors] == [("Partly Lost", album_id)]
    # The SQL recipe of the README: which ids the catalog did not know.
    rows = await conn.fetch(
        "SELECT tidal_id FROM outbox.catalog_tracks WHERE isrc IS NULL ORDER BY tidal_id"
    )
    assert [r["tidal_id"] for r in rows] == [t.id for t in unknown]


@pytest.mark.parametrize("fault", ["503", "429"])
async def test_a_catalog_outage_charges_nothing_and_everything_goes_out_once_it_is_back(
    harness: Harness, catalog: CatalogStandIn, fault: str
) -> None:
    tracks = album_tracks(25, first_id=320_000_000)
    catalog.add(tracks)
    relay = await harness.start_relay(**catalog_settings(catalog))
    # (A 5xx switch hits the token endpoint too; 429s only /tracks.)
    plain = await harness.enqueue_track("USRC17607839", "Plain")
    await harness.wait_settled(expected=1)
    if fault == "503":
        catalog.status = 503
    else:
        catalog.rate_429 = 1.0  # 429 with no headers, as documented
    await enqueue_album(harness, "Outage", tracks)
    await wait_until(lambda: relay.metric("outbox_relay_catalog_paused") == 1, 10, "lookups paused")
    # Rows that need no lookup keep flowing while the catalog is out.
    during = await harness.enqueue_track("USRC17607840", "During")
    conn = await harness.conn()
    await wait_until(lambda: "USRC17607840" in published_isrcs(harness), 10, "the plain track")
    waiting = await conn.fetch(
        "SELECT status, attempts FROM outbox.messages WHERE tidal_id IS NOT NULL"
    )
    assert len(waiting) == 25
    assert {(r["status"], r["attempts"]) for r in waiting} == {("pending", 0)}
    result = "5xx" if fault == "503" else "429"
    await wait_until(
        lambda: (
            sum(
                relay.metric("outbox_relay_catalog_requests_total", endpoint=e, result=result)
                for e in ("token", "tracks")
            )
            >= 2
        ),
        10,
        "a second try, paused in between",
    )

    catalog.status = None
    catalog.rate_429 = 0.0
    await harness.wait_settled(expected=27, timeout=20)
    assert sorted(published_isrcs(harness)) == sorted(
        [*(t.isrc for t in tracks), "USRC17607839", "USRC17607840"]
    )
    counts = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE attempts > 0) AS charged, "
        "count(*) FILTER (WHERE status = 'dead') AS dead FROM outbox.messages"
    )
    assert (counts["charged"], counts["dead"]) == (0, 0)
    assert relay.metric("outbox_relay_catalog_paused") == 0
    assert plain and during


async def test_a_token_that_expires_mid_run_is_renewed_once(
    harness: Harness, catalog: CatalogStandIn
) -> None:
    first = album_tracks(10, first_id=330_000_000)
    second = album_tracks(10, first_id=331_000_000)
    catalog.add([*first, *second])
    await harness.start_relay(**catalog_settings(catalog))
    await enqueue_album(harness, "Before", first)
    await harness.wait_settled(expected=10)
    assert catalog.token_requests == 1

    catalog.expire_tokens()
    await enqueue_album(harness, "After", second)
    await harness.wait_settled(expected=20)
    assert catalog.token_requests == 2
    assert [r.status for r in catalog.requests] == [200, 401, 200]
    assert len(published_isrcs(harness)) == 20


async def readyz(relay: RunningRelay) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{relay.service.http_port}/readyz"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def test_refused_credentials_are_a_configuration_error_in_readyz(
    harness: Harness, catalog: CatalogStandIn
) -> None:
    tracks = album_tracks(3, first_id=340_000_000)
    catalog.add(tracks)
    catalog.refuse_credentials = True
    relay = await harness.start_relay(**catalog_settings(catalog))
    await enqueue_album(harness, "Locked", tracks)
    await wait_until(lambda: relay.service.relay.readiness().get("catalog") is False, 10)
    status, body = await readyz(relay)
    assert status == 503
    assert "TIDAL_CLIENT_ID" in json.dumps(body)

    catalog.refuse_credentials = False
    await harness.wait_settled(expected=3, timeout=20)
    status, _ = await readyz(relay)
    assert status == 200
    assert sorted(published_isrcs(harness)) == sorted(t.isrc for t in tracks)


async def test_two_relays_never_ask_for_an_id_more_often_than_their_batches_allow(
    harness: Harness, catalog: CatalogStandIn
) -> None:
    tracks = album_tracks(40, first_id=350_000_000)
    catalog.add(tracks)
    catalog.latency = 0.05
    settings = catalog_settings(catalog, batch_size=2)
    for n in range(2):
        await harness.start_relay(**settings, qdrant_path=str(harness.tmp / f"q{n}"))
    for n in range(6):
        await enqueue_album(harness, f"Copy {n}", tracks)
    await harness.wait_settled(expected=240, timeout=30)

    asked = Counter(catalog.ids_asked())
    # Each relay asks for an id at most once per batch it has in flight, and caches the answer:
    # with two relays, an id is asked at most twice, whatever the copies.
    assert set(asked) == {t.id for t in tracks}
    assert max(asked.values()) <= 2
    assert all(len(r.ids) <= 20 for r in catalog.requests)
    assert published_isrcs(harness) == Counter({t.isrc: 6 for t in tracks})
