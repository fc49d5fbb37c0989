"""The admin web page over real HTTP: sign-in, CSRF, every page, bad input, escaping, requeue.

The browser tests (tests/browser) drive the same page in Chromium; these check the edges
quickly with an HTTP client, against a real relay and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from structlog.testing import capture_logs

from outbox_relay.http.ui import human_age, why_pending
from outbox_relay.testing.inngest import Refuse

from relay.harness import Harness

TOKEN = "admin-ui-4f2a9c"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
HTMX_SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"


class Client:
    """A signed-in browser-like client: a cookie jar and the session's CSRF token."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.csrf = ""

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.base + path, allow_redirects=False) as response:
            return response.status, await response.text()

    async def post(self, path: str, data: list[tuple[str, str]]) -> tuple[int, str, str]:
        async with self.http.post(self.base + path, data=data, allow_redirects=False) as r:
            return r.status, await r.text(), r.headers.get("Location", "")

    @asynccontextmanager
    async def signing_in(self, token: str = TOKEN) -> AsyncIterator[aiohttp.ClientResponse]:
        """The sign-in form's answer to ``token``, sent with the form's own CSRF token."""
        _, form = await self.get("/admin/signin")
        match = CSRF.search(form)
        assert match, form
        data = {"csrf": match[1], "token": token}
        async with self.http.post(
            self.base + "/admin/signin", data=data, allow_redirects=False
        ) as response:
            yield response

    async def sign_in(self, token: str = TOKEN) -> int:
        async with self.signing_in(token) as response:
            status = response.status
        if status == 303:
            _, page = await self.get("/admin/")
            found = CSRF.search(page)
            assert found
            self.csrf = found[1]
        return status


@pytest.fixture
async def ui(harness: Harness) -> AsyncIterator[tuple[Harness, Client]]:
    relay = await harness.start_relay(admin_token=TOKEN, poll_interval=30, max_attempts=1)
    await relay.wait_idle()
    base = f"http://127.0.0.1:{relay.service.http_port}"
    # unsafe: keep cookies of an IP address host (127.0.0.1), as a browser does
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield harness, Client(http, base)


async def _staged_album(
    conn: asyncpg.Connection, outbox_id: int, title: str, artist: str, tracks: str, path: str
) -> None:
    """The library's album row for the outbox row ``outbox_id``, and the staging item of the
    scan run that wrote it (one track, folder ``path``)."""
    album_id = await conn.fetchval(
        "INSERT INTO library.albums (title, artist, tracks, outbox_id) "
        "VALUES ($1, $2, $3::jsonb, $4) RETURNING id",
        title,
        artist,
        tracks,
        outbox_id,
    )
    scan_id = await conn.fetchval(
        "INSERT INTO library.scan_runs (trigger, dry_run, host) VALUES ('once', false, 'h') "
        "RETURNING id"
    )
    await conn.execute(
        "INSERT INTO library.staging_items (staging_path, scan_id, album_key, artist, album, "
        "track_count, files, album_id, outbox_id) VALUES ($1, $2, 'k', $3, $4, 1, '[]', $5, $6)",
        path,
        scan_id,
        artist,
        title,
        album_id,
        outbox_id,
    )


async def _dead(harness: Harness, titles: list[str], error: str = "400: bad event") -> list[int]:
    conn = await harness.conn()
    ids = []
    async with conn.transaction():
        for n, title in enumerate(titles):
            ids.append(await harness.enqueue_track(f"USDED{n:07d}", title))
        await conn.execute(
            "UPDATE outbox.messages SET status = 'dead', attempts = 5, last_error = $2, "
            "processed_at = now() WHERE id = ANY($1)",
            ids,
            error,
        )
    return ids


async def test_pages_need_a_session_and_sign_in_sets_a_strict_httponly_cookie(
    ui: tuple[Harness, Client],
) -> None:
    _, client = ui
    for path in ("/admin/", "/admin/dead", "/admin/track?isrc=USRC17607839"):
        status, _ = await client.get(path)
        assert status == 303
    async with client.http.get(client.base + "/admin", allow_redirects=False) as r:
        assert r.status == 308 and r.headers["Location"] == "admin/"

    # a live section polling after the session ended: a whole-page redirect for htmx
    async with client.http.get(
        client.base + "/admin/", headers={"HX-Request": "true"}, allow_redirects=False
    ) as r:
        assert r.status == 200 and r.headers["HX-Redirect"] == "signin"

    assert await client.sign_in("wrong-token") == 401
    # the sign-in form without its CSRF token is refused, even with the right admin token
    status, page, _ = await client.post("/admin/signin", [("token", TOKEN)])
    assert status == 403 and "expired or came from elsewhere" in page

    async with client.signing_in(TOKEN) as response:
        assert response.status == 303
        assert response.headers["Location"] == "./"  # relative: works behind any prefix
        cookie = next(
            v for k, v in response.headers.items() if k == "Set-Cookie" and "session" in v
        )
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=" not in cookie
    status, page = await client.get("/admin/")
    assert status == 200 and "Overview" in page
    assert TOKEN not in page


async def test_wrong_tokens_are_limited_per_client_address(ui: tuple[Harness, Client]) -> None:
    """5 wrong tokens within a minute: that address gets 429 with Retry-After, even with the
    right token; another address signs in; counted, and logged with the address."""
    _, client = ui
    with capture_logs() as logs:
        for _ in range(5):
            assert await client.sign_in("wrong-token") == 401
        async with client.signing_in(TOKEN) as response:
            assert response.status == 429
            retry_after = int(response.headers["Retry-After"])
            assert 1 <= retry_after <= 60
            page = await response.text()
        assert f"Too many wrong tokens from your address: try again in {retry_after} s." in page
        assert TOKEN not in page

        # the limit is the address's: a client from 127.0.0.2 is not held up
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)),
        ) as other:
            assert await Client(other, client.base).sign_in() == 303

    refused = [e for e in logs if e["event"] == "admin_signin_refused"]
    assert [e["failures"] for e in refused] == [1, 2, 3, 4, 5]
    assert all(e["remote"] == "127.0.0.1" for e in refused)
    [limited] = [e for e in logs if e["event"] == "admin_signin_limited"]
    assert limited["remote"] == "127.0.0.1" and limited["retry_after_s"] == retry_after
    assert limited["log_level"] == "warning"
    _, metrics = await client.get("/metrics")
    assert "outbox_relay_admin_signin_failures_total 5.0" in metrics
    assert "outbox_relay_admin_signin_limited_total 1.0" in metrics
    assert (
        'outbox_relay_admin_page_requests_total{route="/admin/signin",status="429"} 1.0' in metrics
    )


async def test_the_json_endpoints_keep_their_bearer_token(ui: tuple[Harness, Client]) -> None:
    _, client = ui
    await client.sign_in()
    # a session cookie is not a bearer token: the JSON API still asks for the header
    async with client.http.get(client.base + "/admin/status") as response:
        assert response.status == 401


async def test_every_page_answers_with_data(ui: tuple[Harness, Client]) -> None:
    harness, client = ui
    await _dead(harness, ["Dead One", "Dead Two"])
    await harness.enqueue_track("USPND0000001", "Waiting Song")
    await client.sign_in()
    for path, expected in [
        ("/admin/", "dead letters"),
        ("/admin/dead", "Dead One"),
        ("/admin/dead?error=400%3A+bad+event", "Dead Two"),
        ("/admin/pending", "pending"),
        ("/admin/search?q=dead", "Dead One"),
        ("/admin/search?q=usded0000000", "Track USDED0000000"),
        ("/admin/track?isrc=USDED0000001", "Dead Two"),
        ("/admin/scans", "scan run"),
        ("/admin/search", "Search a track"),
    ]:
        async with client.http.get(client.base + path) as response:
            text = await response.text()
            assert response.status == 200, (path, text)
            assert expected in text, path
            assert response.headers["Cache-Control"] == "no-store"
            assert "script-src 'self'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/admin/dead?before=abc", 400, "before must be a whole number"),
        ("/admin/dead?before=-1", 400, "before must be a whole number"),
        ("/admin/dead?before=99999999999999999999", 400, "before must be a whole number"),
        ("/admin/dead?limit=0", 400, "limit must be from 1 to 200"),
        ("/admin/dead?limit=5000", 400, "limit must be from 1 to 200"),
        ("/admin/pending?after=yesterday,1", 400, "after must be"),
        ("/admin/pending?after=2026-01-01T00:00:00,1", 400, "after must be"),
        ("/admin/pending?after=2026-01-01T00:00:00%2B00:00,x", 400, "after must be"),
        ("/admin/scans?before=0", 400, "before must be from 1"),
        ("/admin/dead?error=" + "e" * 6001, 400, "error must be at most 6000 characters"),
        ("/admin/track", 400, "isrc must not be empty"),
        ("/admin/track?isrc=%3Cscript%3E", 400, "isrc must be 12 letters or digits"),
        ("/admin/track?isrc=USRC17607839", 404, "Nothing is known about ISRC USRC17607839"),
        ("/admin/search?q=" + "x" * 201, 400, "q must be at most 200 characters"),
        ("/admin/search?q=a%00b", 400, "q must not contain NUL"),
        ("/admin/nope", 404, "There is no page /admin/nope"),
        ("/admin/static/passwd", 404, "There is no page"),
        ("/admin/static/..%2f..%2fconfig.py", 404, "There is no page"),
    ],
)
async def test_bad_input_is_a_4xx_page_never_a_500(
    ui: tuple[Harness, Client], path: str, status: int, says: str
) -> None:
    _, client = ui
    await client.sign_in()
    got, page = await client.get(path)
    assert got == status, page
    assert says in page
    assert "<html" in page  # a page, not JSON


async def test_bad_requeue_forms_are_400(ui: tuple[Harness, Client]) -> None:
    harness, client = ui
    ids = await _dead(harness, ["A"])
    await client.sign_in()
    for form, says in [
        ([], "select at least one dead letter"),
        ([("ids", "x")], "ids must be row ids"),
        ([("ids", str(ids[0])), ("error", "e")], "either ids or an error"),
        ([("error", "e")], "up_to must be a row id"),
        ([("error", "e"), ("up_to", "-3")], "up_to must be a row id"),
        ([("ids", str(n)) for n in range(501)], "at most 500"),
    ]:
        status, page, _ = await client.post("/admin/dead-requeue", [("csrf", client.csrf), *form])
        assert status == 400, (form[:2], page)
        assert says in page
    # past aiohttp's 1,000 form fields: a 413 page, still not a 500
    form = [("csrf", client.csrf), *[("ids", str(n)) for n in range(1001)]]
    status, page, _ = await client.post("/admin/dead-requeue", form)
    assert status == 413 and "select at most 500 rows" in page


async def test_a_title_of_script_shows_as_text(ui: tuple[Harness, Client]) -> None:
    harness, client = ui
    evil = "<script>alert(1)</script>"
    await _dead(harness, [evil], error="<img src=x onerror=alert(2)>")
    await client.sign_in()
    for path in ("/admin/dead", "/admin/search?q=%3Cscript", "/admin/track?isrc=USDED0000000"):
        _, page = await client.get(path)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path
        assert "<script>alert" not in page and "<img src=x" not in page


async def test_requeue_confirms_the_count_is_idempotent_and_logs_who(
    ui: tuple[Harness, Client],
) -> None:
    harness, client = ui
    ids = await _dead(harness, ["One", "Two", "Three"], error="400: Event is over the max size")
    await client.sign_in()

    # without the CSRF token: refused, nothing moves
    status, page, _ = await client.post("/admin/dead-requeue", [("ids", str(ids[0]))])
    assert status == 403 and "CSRF" in page
    status, page, _ = await client.post(
        "/admin/dead-requeue", [("csrf", "forged"), ("ids", str(ids[0])), ("confirm", "yes")]
    )
    assert status == 403
    assert (await harness.statuses()).get("dead") == 3

    # the confirmation names how many
    form = [("csrf", client.csrf), ("ids", str(ids[0])), ("ids", str(ids[1]))]
    status, page, _ = await client.post("/admin/dead-requeue", form)
    assert status == 200 and "Requeue <strong>2</strong> dead letters" in page
    with capture_logs() as logs:
        status, _, location = await client.post("/admin/dead-requeue", [*form, ("confirm", "yes")])
    assert status == 303 and location == "dead?requeued=2&asked=2"
    audit = [e for e in logs if e["event"] == "admin_requeue"]
    assert len(audit) == 1
    assert audit[0]["who"].startswith("session:") and audit[0]["requeued"] == 2
    assert audit[0]["selector"] == "ids" and audit[0]["ids"] == ids[:2]

    # again: idempotent, nothing more moves, and the page says so
    status, page, _ = await client.post("/admin/dead-requeue", form)
    assert "None of these is dead any more" in page
    status, _, location = await client.post("/admin/dead-requeue", [*form, ("confirm", "yes")])
    assert location == "dead?requeued=0&asked=2"
    _, page = await client.get("/admin/" + location)
    assert "Requeued 0 dead letters; 2 of the 2 selected were no longer dead" in page

    # all with one error: up to the newest id the operator saw
    _, page = await client.get("/admin/dead")
    up_to = re.search(r'name="up_to" value="(\d+)"', page)
    assert up_to and int(up_to[1]) == ids[2]
    error_form = [
        ("csrf", client.csrf),
        ("error", "400: Event is over the max size"),
        ("up_to", up_to[1]),
    ]
    _, page, _ = await client.post("/admin/dead-requeue", error_form)
    assert "Requeue <strong>1</strong> dead letter whose last error" in page
    _, _, location = await client.post("/admin/dead-requeue", [*error_form, ("confirm", "yes")])
    assert location == "dead?requeued=1&asked=1"
    assert "dead" not in await harness.statuses()
    # as `outbox-relay requeue`: the error is no longer current, and stays in the history
    conn = await harness.conn()
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM outbox.messages WHERE id = ANY($1) AND last_error IS NOT NULL",
            ids,
        )
        == 0
    )


async def test_sign_out_ends_the_session(ui: tuple[Harness, Client]) -> None:
    _, client = ui
    await client.sign_in()
    status, _, location = await client.post("/admin/signout", [("csrf", client.csrf)])
    assert status == 303 and location == "signin"
    status, _ = await client.get("/admin/")
    assert status == 303


async def test_a_catalog_id_finds_its_track_once_the_catalog_lookup_is_installed(
    ui: tuple[Harness, Client],
) -> None:
    harness, client = ui
    conn = await harness.conn()
    await conn.execute(
        "INSERT INTO outbox.catalog_tracks (tidal_id, country_code, isrc, title) VALUES "
        "('77001', 'US', 'USCAT2600001', 'Catalog Song'), ('77002', 'US', NULL, NULL)"
    )
    await conn.execute(
        "SELECT outbox.enqueue_track_by_tidal_id('77001', 'Catalog Song', 'Artist', 'Album', "
        "isrc => 'USCAT2600001')"
    )
    await client.sign_in()
    async with client.http.get(client.base + "/admin/search?q=77001", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "track?isrc=USCAT2600001"
    _, page = await client.get("/admin/track?isrc=USCAT2600001")
    assert "TIDAL id 77001" in page
    _, page = await client.get("/admin/search?q=77002")
    assert "The catalog did not know TIDAL track id 77002" in page
    _, page = await client.get("/admin/search?q=77003")
    assert "TIDAL track id 77003 has not been looked up yet" in page


async def test_a_track_enqueued_by_catalog_id_alone_shows_its_outbox_row(
    ui: tuple[Harness, Client],
) -> None:
    """Enqueued by TIDAL id without an ISRC, the row keeps isrc NULL: the relay publishes
    track-ingestion-<the catalog's ISRC>, and the track's page (by that ISRC, or reached from a
    search by the id) shows the row, as library.track_path does since migration 015."""
    harness, client = ui
    conn = await harness.conn()
    await conn.execute(
        "INSERT INTO outbox.catalog_tracks (tidal_id, country_code, isrc, title) VALUES "
        "('77101', 'US', 'USCAT2600011', 'Catalog Only'), "
        # the newest answer for 77102 is another ISRC: its row is that ISRC's, not this one's
        "('77102', 'US', 'USCAT2600011', 'Old Answer'), "
        "('77102', 'GB', 'USCAT2600012', 'New Answer')"
    )
    await conn.execute(
        "UPDATE outbox.catalog_tracks SET looked_up_at = now() + interval '1 minute' "
        "WHERE tidal_id = '77102' AND country_code = 'GB'"
    )
    # as the relay leaves them once published (the fixture's relay has no catalog credentials)
    async with conn.transaction():
        row_id = await conn.fetchval(
            "SELECT outbox.enqueue_track_by_tidal_id('77101', 'Catalog Only', 'Artist', 'Album')"
        )
        other_id = await conn.fetchval(
            "SELECT outbox.enqueue_track_by_tidal_id('77102', 'Other Song', 'Artist', 'Album')"
        )
        await conn.execute(
            "UPDATE outbox.messages SET status = 'published', attempts = 1, "
            "event_id = 'track-ingestion-USCAT2600011', processed_at = now() WHERE id = $1",
            row_id,
        )
    assert await conn.fetchval("SELECT isrc FROM outbox.messages WHERE id = $1", row_id) is None
    await client.sign_in()
    async with client.http.get(client.base + "/admin/search?q=77101", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "track?isrc=USCAT2600011"
    status, page = await client.get("/admin/track?isrc=USCAT2600011")
    assert status == 200, page
    assert f'id="outbox-{row_id}"' in page and "TIDAL id 77101" in page
    assert "published" in page and "track-ingestion-USCAT2600011" in page
    assert f'id="outbox-{other_id}"' not in page
    _, page = await client.get("/admin/track?isrc=USCAT2600012")
    assert f'id="outbox-{other_id}"' in page and f'id="outbox-{row_id}"' not in page


async def test_library_rows_of_tracks_added_by_catalog_id_alone_show_by_the_looked_up_isrc(
    ui: tuple[Harness, Client],
) -> None:
    """A single track added by TIDAL id (library isrc NULL, linked by its outbox row) and an album
    track with only "tidalTrackId" show in the page's library section and bring their album's
    staging item, as library.track_path lists them since migration 015."""
    harness, client = ui
    conn = await harness.conn()
    await conn.execute(
        "INSERT INTO outbox.catalog_tracks (tidal_id, country_code, isrc, title) VALUES "
        "('77201', 'US', 'USCAT2600021', 'Single'), ('77202', 'US', 'USCAT2600022', 'On Album')"
    )
    tracks = '[{"tidalTrackId": "77202", "title": "Album Catalog Track", "artist": "Band"}]'
    async with conn.transaction():
        row_id = await conn.fetchval(
            "SELECT outbox.enqueue_track_by_tidal_id('77201', 'Single', 'Band', 'Album')"
        )
        await conn.execute(
            "INSERT INTO library.tracks (isrc, title, artist, album, outbox_id) "
            "VALUES (NULL, 'Library Single', 'Band', 'Album', $1)",
            row_id,
        )
        album_row = await conn.fetchval(
            "SELECT outbox.enqueue_album('Catalog Album', 'Band', $1::jsonb)", tracks
        )
        await _staged_album(
            conn, album_row, "Catalog Album", "Band", tracks, "/staging/Band/Catalog Album"
        )
    await client.sign_in()
    status, page = await client.get("/admin/track?isrc=USCAT2600021")
    assert status == 200, page
    assert "Library Single" in page and f'id="outbox-{row_id}"' in page
    # found by the album's own track list (its "tidalTrackId"), fanned out or not yet
    status, page = await client.get("/admin/track?isrc=USCAT2600022")
    assert status == 200, page
    assert "Album Catalog Track" in page and "/staging/Band/Catalog Album" in page
    assert "Library Single" not in page


async def test_catalog_ids_say_the_catalog_lookup_is_not_installed(
    ui: tuple[Harness, Client],
) -> None:
    """A relay newer than its database (migration 010 not applied yet, as during a rolling
    upgrade): catalog ids are not searchable, and the page says why instead of failing."""
    harness, client = ui
    conn = await harness.conn()
    # the page reads what is installed from the migrations' record, as the migrator writes it
    await conn.execute("DELETE FROM outbox.schema_migrations WHERE version = 10")
    await client.sign_in()
    status, page = await client.get("/admin/search?q=123456")
    assert status == 200
    assert "Catalog ids are not searchable here" in page and "migration 010" in page


async def test_page_requests_are_counted_by_route_and_status(
    ui: tuple[Harness, Client],
) -> None:
    _, client = ui
    await client.sign_in()
    await client.get("/admin/dead")
    await client.get("/admin/dead?limit=0")
    _, metrics = await client.get("/metrics")
    assert 'outbox_relay_admin_page_requests_total{route="/admin/dead",status="200"} 1.0' in metrics
    assert 'outbox_relay_admin_page_requests_total{route="/admin/dead",status="400"} 1.0' in metrics
    assert "outbox_relay_admin_page_duration_seconds_bucket" in metrics


async def test_the_vendored_script_is_the_noted_release() -> None:
    static = Path(__file__).parents[2] / "outbox_relay" / "http" / "static"
    assert hashlib.sha256((static / "htmx.min.js").read_bytes()).hexdigest() == HTMX_SHA256
    assert "2.0.11" in (static / "README.md").read_text()
    assert HTMX_SHA256 in (static / "README.md").read_text()


async def test_no_page_without_a_token(harness: Harness) -> None:
    relay = await harness.start_relay()
    await relay.wait_idle()
    async with aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{relay.service.http_port}"
        for path in ("/admin/", "/admin/signin", "/admin/static/htmx.min.js"):
            async with http.get(base + path) as response:
                assert response.status == 404


def test_why_a_row_waits() -> None:
    row = {"due_in": 12.0, "leased": True, "due": False, "claimed_by": "r1", "attempts": 0}
    assert why_pending(row, True) == "leased by r1: its lease ends in 12 s"
    row |= {"leased": False, "attempts": 2}
    assert why_pending(row, True).startswith("backing off after 2 rejection(s)")
    row |= {"due": True, "due_in": -1.0, "attempts": 0}
    assert why_pending(row, False).startswith("paused: the Event API is unreachable")
    assert why_pending(row, True) == "due now: the next batch takes it"
    assert human_age(3725) == "1 h 2 min" and human_age(None) == "—"


async def test_a_staged_album_track_shows_its_whole_path(ui: tuple[Harness, Client]) -> None:
    harness, client = ui
    conn = await harness.conn()
    tracks = '[{"isrc": "usbn20100001", "title": "Moment\\u0027s Notice"}]'
    async with conn.transaction():
        outbox_id = await conn.fetchval(
            "SELECT outbox.enqueue_album('Blue Train', 'John Coltrane', $1::jsonb)", tracks
        )
        await _staged_album(
            conn,
            outbox_id,
            "Blue Train",
            "John Coltrane",
            tracks,
            "/staging/John Coltrane/1957 - Blue Train",
        )
    await client.sign_in()
    # found by the album's own track list (lower case there), before and after the fan-out
    status, page = await client.get("/admin/track?isrc=USBN20100001")
    assert status == 200, page
    assert "Moment&#39;s Notice" in page and "/staging/John Coltrane/1957 - Blue Train" in page
    await harness.wait_settled(expected=1)
    _, page = await client.get("/admin/track?isrc=usbn20100001")
    assert "published" in page and "of album row" in page


async def test_pending_rows_say_an_outage_pauses_them(harness: Harness) -> None:
    await harness.standin.inject(Refuse())
    relay = await harness.start_relay(admin_token=TOKEN, poll_interval=0.2)
    await harness.enqueue_track("USOUT0000001", "Waiting Out The Outage")
    await relay.wait_unavailable(timeout=20)
    base = f"http://127.0.0.1:{relay.service.http_port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        client = Client(http, base)
        await client.sign_in()
        # the relay pauses first, then records the row released (claimable, uncharged): until
        # that write lands the row still shows as leased
        deadline = time.monotonic() + 10
        while "paused: the Event API is unreachable" not in (
            page := (await client.get("/admin/pending"))[1]
        ):
            assert time.monotonic() < deadline, page
            await asyncio.sleep(0.05)
        _, page = await client.get("/admin/")
        assert "outage: rows wait, uncharged" in page


async def test_a_relay_role_without_library_access_degrades_page_by_page(
    harness: Harness,
) -> None:
    """The relay's own role (migration 004) reads only outbox.messages: the outbox pages work;
    search, a track's path and the scans read the library and answer 503 pointing at the
    grants; nothing is a 500."""
    conn = await harness.conn()
    await conn.execute("CREATE ROLE ui_relay LOGIN IN ROLE outbox_relay_role")
    try:
        dsn = harness.dsn.replace("postgres@", "ui_relay@", 1)
        assert dsn != harness.dsn
        relay = await harness.start_relay(admin_token=TOKEN, poll_interval=30, database_url=dsn)
        await relay.wait_idle()
        await harness.enqueue_track("USROL0000001", "Role Song")
        base = f"http://127.0.0.1:{relay.service.http_port}"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            client = Client(http, base)
            await client.sign_in()
            for path in ("/admin/", "/admin/dead", "/admin/pending"):
                status, page = await client.get(path)
                assert status == 200, (path, page)
            for path in (
                "/admin/track?isrc=USROL0000001",
                "/admin/scans",
                "/admin/search?q=role",
            ):
                status, page = await client.get(path)
                assert status == 503, (path, page)
                assert "may not read this" in page and "GRANT" not in page
                assert "docs/operations.md" in page
        await relay.stop()
    finally:
        await harness.close_conn()
        conn = await harness.conn()
        await conn.execute("DROP OWNED BY ui_relay")
        await conn.execute("DROP ROLE ui_relay")
