"""The admin page in a real browser: Debian's Chromium, headless, driven by Playwright.

A relay with an admin token behind a reverse proxy that serves it under ``/ops/relay/`` (the
prefix stripped, as nginx's ``proxy_pass http://relay:9108/;`` does), the Event API stand-in
rejecting one event so that it becomes a dead letter. The operator signs in (a wrong token is
refused), sees the dead letter, requeues it after a confirmation and watches it turn
published; searches the track and sees its whole path; a form with a forged CSRF token is
refused. Each page is screenshotted into the test's tmp folder, so a run leaves the git tree
as it found it; ``OUTBOX_UPDATE_SCREENSHOTS=1`` writes them into docs/admin/ instead (committed;
docs/operations.md shows them), to refresh them after the page changed:

    OUTBOX_UPDATE_SCREENSHOTS=1 scripts/test tests/browser

Chromium: ``/usr/bin/chromium`` (``.ci/run`` installs Debian's package); Playwright's own
browser download is never used. Skipped, saying why, where Chromium is missing.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from outbox_relay.testing.inngest import Reject

from relay.harness import Harness

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",  # the suite runs as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "browser-admin-token-5e1d"
PREFIX = "/ops/relay"
DOCS_SHOTS = Path(__file__).parents[2] / "docs" / "admin"
UPDATE_SCREENSHOTS = "OUTBOX_UPDATE_SCREENSHOTS"
ISRC = "USREJ2600001"
TITLE = "<script>alert('pwned')</script> Night Drive"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's Chromium at /usr/bin/chromium (.ci/run installs it)",
    ),
]


async def _proxy(upstream: str) -> tuple[web.AppRunner, str]:
    """A reverse proxy serving ``upstream`` under PREFIX, prefix stripped, nothing rewritten."""
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with session.request(
            request.method,
            f"{upstream}/{tail}",
            params=request.query,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            response = web.Response(status=answer.status, body=body)
            for name, value in answer.headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "date", "server"):
                    response.headers.add(name, value)
            return response

    async def close(_: web.Application) -> None:
        await session.close()

    app = web.Application()
    app.router.add_route("*", PREFIX + "/{tail:.*}", forward)
    app.on_cleanup.append(close)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}{PREFIX}"


@pytest.fixture
async def site(harness: Harness) -> AsyncIterator[tuple[Harness, str]]:
    relay = await harness.start_relay(
        admin_token=TOKEN,
        max_attempts=1,
        replica_id="relay-a",
        grafana_url="http://grafana.example:3000/d/outbox-relay",
    )
    await relay.wait_idle()
    runner, base = await _proxy(f"http://127.0.0.1:{relay.service.http_port}")
    try:
        yield harness, base + "/admin/"
    finally:
        await runner.cleanup()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where the screenshots go: docs/admin/ when asked, else the test's own tmp folder."""
    folder = DOCS_SHOTS if os.environ.get(UPDATE_SCREENSHOTS) == "1" else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def _eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def _shot(page: Page, folder: Path, name: str) -> None:
    await page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


async def _seed_history(harness: Harness) -> None:
    """Something to look at: a published hour, a backlog waiting for reasons, scan runs."""
    conn = await harness.conn()
    await conn.execute(
        """
        INSERT INTO outbox.messages (kind, isrc, title, artist, album, status, processed_at,
                                     claimed_by, event_id)
        SELECT 'track', 'USHIS' || lpad(i::text, 7, '0'), 'Song ' || i, 'Artist', 'Album',
               'published', now() - (i % 3600) * interval '1 second' - interval '2 minutes',
               CASE WHEN i % 3 = 0 THEN 'relay-b' ELSE 'relay-a' END,
               'track-ingestion-USHIS' || lpad(i::text, 7, '0')
        FROM generate_series(1, 6000) AS i
        """
    )
    # waiting for different reasons: backing off after a rejection, leased by a relay
    await conn.execute(
        """
        INSERT INTO outbox.messages (kind, isrc, title, artist, album, attempts, last_error,
                                     next_attempt_at, claim_token, claimed_by)
        VALUES ('track', 'USWAI0000001', 'Backing Off', 'Artist', 'Album', 2,
                '400: Event is over the max size', now() + interval '5 minutes', NULL, NULL),
               ('track', 'USWAI0000002', 'Being Sent', 'Artist', 'Album', 0, NULL,
                now() + interval '25 seconds', gen_random_uuid(), 'relay-b')
        """
    )
    await conn.execute(
        """
        INSERT INTO library.scan_runs (trigger, dry_run, host, status, started_at, finished_at,
                                       files_total, albums_total, albums_success, albums_failed,
                                       duration_ms, error)
        VALUES ('schedule', false, 'scan-1', 'success', now() - interval '2 hours',
                now() - interval '2 hours' + interval '41 seconds', 212, 18, 18, 0, 41000, NULL),
               ('schedule', false, 'scan-1', 'partial', now() - interval '1 hour',
                now() - interval '1 hour' + interval '12 seconds', 40, 4, 3, 1, 12000,
                '1 album failed: tags unreadable'),
               ('once', true, 'laptop', 'success', now() - interval '5 minutes',
                now() - interval '5 minutes' + interval '2 seconds', 9, 1, 1, 0, 2000, NULL)
        """
    )
    # the overview's estimates of finished rows come from the planner's statistics
    await conn.execute("ANALYZE outbox.messages")


async def test_an_operator_finds_and_fixes_a_dead_letter(
    site: tuple[Harness, str], browser: Browser, shots: Path
) -> None:
    harness, admin = site
    await _seed_history(harness)
    await harness.standin.inject(
        Reject(data_field="isrc", data_values=frozenset({ISRC}), message="Event data invalid"),
        times=1,
    )
    conn = await harness.conn()
    # the application's write: the library row and its outbox row in one transaction
    await conn.execute(
        "INSERT INTO library.tracks (isrc, title, artist, album, outbox_id) "
        "VALUES ($1, $2, 'The Operators', 'Pager Duty', "
        "        outbox.enqueue_track($1, $2, 'The Operators', 'Pager Duty'))",
        ISRC,
        TITLE,
    )
    await _eventually(
        lambda: _status_is(harness, "dead"), "the rejected event did not become a dead letter"
    )

    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
    # htmx must live within the page's Content-Security-Policy (no eval, no inline style)
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if "Content Security Policy" in message.text or "Refused to" in message.text
            else None
        ),
    )

    # signed out: every page leads to the sign-in form, under the proxy's prefix
    await page.goto(admin + "dead")
    assert page.url == admin + "signin"
    await _shot(page, shots, "signin")

    # a wrong token is refused
    await page.fill("#token", "not-the-token")
    await page.click("form.card button")
    assert "That token is not the admin token." in await page.inner_text("main")
    assert page.url == admin + "signin"

    await page.fill("#token", TOKEN)
    await page.click("form.card button")
    await page.wait_for_url(admin)
    cookies = await context.cookies()
    session = next(c for c in cookies if c["name"] == "outbox_admin_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert session["path"] == PREFIX + "/admin"  # scoped by the browser to the prefix
    assert await page.inner_text("#dead-count") == "1"
    await _shot(page, shots, "overview")

    # the dead letter, its error and payload; the title is text, never markup
    await page.click("nav >> text=Dead letters")
    row = page.locator("tr[id^=dead-]", has_text="Event data invalid").first
    assert TITLE in await row.inner_text()
    await row.locator("summary").click()
    await _shot(page, shots, "dead-letters")

    # a forged CSRF token is refused and moves nothing
    await page.locator("form[action=dead-requeue] input[name=csrf]").evaluate_all(
        "inputs => inputs.forEach(input => { input.value = 'forged' })"
    )
    await row.locator("button[name=one]").click()
    assert "CSRF token is missing or wrong" in await page.inner_text("main")
    assert await _status_is(harness, "dead")

    # requeue it: the confirmation names how many
    await page.goto(admin + "dead")
    await (
        page.locator("tr[id^=dead-]", has_text="Event data invalid")
        .first.locator("button[name=one]")
        .click()
    )
    assert "Requeue 1 dead letter?" in await page.inner_text("#confirm-question")
    await _shot(page, shots, "requeue-confirm")
    await page.click("form.card button[type=submit]")
    assert "Requeued 1 dead letter" in await page.inner_text("#requeued")

    # search the track by ISRC (lower case, spaces): its whole path, turning published live
    await page.fill("form.search input", f"  {ISRC.lower()} ")
    await page.click("form.search button")
    await page.wait_for_url(admin + f"track?isrc={ISRC}")
    await page.wait_for_selector("td.status.published", timeout=15_000)
    assert await page.evaluate("typeof htmx.version") == "string"  # loaded despite the CSP
    # the worker's record of the run (what `outbox-relay worker` writes), shown as it lands:
    # only the live section's refresh (htmx) can bring it, the page is not reloaded
    await conn.execute(
        "INSERT INTO library.track_ingestion (isrc, status, attempts, run_id, event_id, "
        "started_at, indexed_at) VALUES ($1, 'indexed', 1, '01JRUN0000000000000000000A', "
        "'track-ingestion-' || $1, now() - interval '2 seconds', now())",
        ISRC,
    )
    await page.wait_for_selector("dd.status.indexed", timeout=15_000)
    path = await page.inner_text("main")
    assert TITLE in path and "Pager Duty" in path and "track-ingestion-" + ISRC in path
    # in its error history (a closed <details>: text_content reads it)
    assert "Event data invalid" in (await page.text_content("#live") or "")
    await _shot(page, shots, "track")

    # by title: a prefix, case-insensitive
    await page.fill("form.search input", "<SCRIPT>alert")
    await page.click("form.search button")
    assert ISRC in await page.inner_text("table")
    await _shot(page, shots, "search")

    await page.click("nav >> text=Pending")
    assert "backing off after 2 rejection(s)" in await page.inner_text("main")
    assert "leased by relay-b" in await page.inner_text("main")
    await _shot(page, shots, "pending")

    await page.click("nav >> text=Scans")
    assert "1 album failed: tags unreadable" in await page.inner_text("main")
    await _shot(page, shots, "scans")

    grafana = page.locator("nav >> text=Grafana")
    assert await grafana.get_attribute("href") == "http://grafana.example:3000/d/outbox-relay"

    await page.click("nav >> text=Overview")
    await page.wait_for_selector("svg rect")
    assert await page.inner_text("#dead-count") == "0"
    await _shot(page, shots, "overview")

    # readable on a phone
    phone = await browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
    )
    await phone.add_cookies([{**session}])
    mobile = await phone.new_page()
    await mobile.goto(admin)
    width = await mobile.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "the overview must not scroll sideways on a phone"
    await _shot(mobile, shots, "overview-phone")
    await phone.close()

    # signing out ends the session
    await page.click("form.signout button")
    await page.wait_for_url(admin + "signin")
    await page.goto(admin)
    assert page.url == admin + "signin"
    assert errors == [], errors  # no script error, no alert ever ran
    await context.close()


async def _status_is(harness: Harness, status: str) -> bool:
    conn = await harness.conn()
    found = await conn.fetchval(
        "SELECT status FROM outbox.messages WHERE isrc = $1 ORDER BY id DESC LIMIT 1", ISRC
    )
    return bool(found == status)
