"""The operator's web page on the relay's port, under ``/admin/``: what is stuck, why, and a fix.

Served only when ``OUTBOX_ADMIN_TOKEN`` is set (unset: these routes do not exist, as the JSON
admin endpoints). Server-rendered with Jinja2 (autoescaped), no build step; htmx (vendored in
``static/``) only refreshes the live parts of a page, so every page also works without script.

- Sign-in exchanges the admin token for an HttpOnly, SameSite=Strict session cookie
  (:mod:`outbox_relay.http.ui_session`); every POST carries a CSRF token.
- Behind a reverse proxy with a path prefix, nothing is to configure: every link, form action
  and redirect is *relative* to the page (all pages live directly under ``/admin/``), and the
  cookie has no ``Path``, so the browser scopes it to the prefix it sees. No header such as
  ``X-Forwarded-Prefix`` is read (a client could forge it) and no base path has to match.
- Each page runs one or two statements of ``db/ui.sql`` on a small pool of its own, each an
  index walk (``tests/db/test_ui_plans.py``); pagination is by keyset.
- Bad input answers a 400 page naming the field and the rule; unknown ids a 404 page.
- Metrics: ``outbox_relay_admin_page_requests_total{route,status}`` and a duration histogram;
  every write logs ``admin_requeue`` with who, what and how many.
"""

from __future__ import annotations

import asyncio
import math
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final

import asyncpg
import jinja2
import structlog
from aiohttp import web
from multidict import MultiDictProxy
from prometheus_client import CollectorRegistry, Counter, Histogram

from outbox_relay.db import ui as db
from outbox_relay.db.admin import requeue_dead
from outbox_relay.domain.isrc import normalise_isrc
from outbox_relay.http.ui_session import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    SIGNIN_COOKIE,
    Session,
    Sessions,
    SigninLimiter,
)

log = structlog.get_logger("outbox_relay.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PREFIX: Final = "/admin/"
# The JSON endpoints of outbox_relay.http.admin (bearer token), not pages.
JSON_PATHS: Final = frozenset({"/admin/status", "/admin/requeue"})
# Reachable without a session.
_OPEN_PATHS: Final = frozenset({"/admin/signin"})
_STATIC: Final = {"htmx.min.js": "text/javascript", "admin.css": "text/css"}
PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 200
# aiohttp refuses a form of more than 1,000 fields (413); a page shows at most 200 rows
MAX_SELECTED: Final = 500
_MAX_TEXT: Final = 2000
# aiohttp refuses a request line over 8190 bytes (a 400 of its own) before any handler runs
_MAX_ERROR_FILTER: Final = 6000
# Script only from this origin (htmx), no inline script or style, nothing framed.
_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_INSTALLED_TTL: Final = 60.0

# A typed key (a plain str key makes aiohttp warn NotAppKeyWarning, an error in the tests)
_session_key: Final = web.RequestKey("outbox_relay.admin_session", Session)


@dataclass(frozen=True, slots=True)
class RelayState:
    """What this relay process knows that the database does not."""

    replica_id: str
    checks: Mapping[str, bool]
    event_api_available: bool


class BadInput(Exception):
    """A parameter broke a rule: a 400 page names both."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class NotFound(Exception):
    """An id the database does not know: a 404 page says which."""


class PageMetrics:
    """Page requests by route and status, and how long they took."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "outbox_relay_admin_page_requests_total",
            "Requests to the admin web page, by route and HTTP status.",
            ["route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "outbox_relay_admin_page_duration_seconds",
            "Time to answer an admin page, by route.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.signin_failures = Counter(
            "outbox_relay_admin_signin_failures_total",
            "Sign-ins to the admin page refused for a wrong token.",
            registry=registry,
        )
        self.signin_limited = Counter(
            "outbox_relay_admin_signin_limited_total",
            "Sign-ins refused with 429 because their address gave too many wrong tokens.",
            registry=registry,
        )


@dataclass
class _Pool:
    """A small pool of the page's own, opened on first use (the relay may start before the
    database answers) and closed with the HTTP surface."""

    dsn: str
    pool: asyncpg.Pool | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    installed: frozenset[int] = frozenset()
    installed_at: float = -math.inf

    async def get(self) -> asyncpg.Pool:
        async with self.lock:
            if self.pool is None:
                self.pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=0,
                    max_size=2,
                    timeout=5,
                    server_settings={
                        "application_name": "outbox-relay-admin",
                        # a page is bounded; a statement that is not must not hold a connection
                        "statement_timeout": "5000",
                    },
                )
            return self.pool

    async def migrations(self, conn: asyncpg.Connection) -> frozenset[int]:
        """The applied migrations, re-read at most once a minute."""
        if time.monotonic() - self.installed_at > _INSTALLED_TTL:
            self.installed = await db.installed(conn)
            self.installed_at = time.monotonic()
        return self.installed

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("outbox_relay.http", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["age"] = human_age
    env.filters["num"] = lambda n: f"{n:,}"
    env.filters["when"] = _when
    env.filters["qs"] = lambda params: urllib.parse.urlencode(
        {k: v for k, v in params.items() if v is not None}
    )
    return env


def human_age(seconds: float | None) -> str:
    """``93.4`` → ``1 min 33 s``; None → ``—``."""
    if seconds is None:
        return "—"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def _when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


# -- input ----------------------------------------------------------------------------------


def _int(
    params: Mapping[str, str], name: str, default: int | None, low: int, high: int
) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise BadInput(name, "must be a whole number")
    value = int(raw)
    if not low <= value <= high:
        raise BadInput(name, f"must be from {low} to {high}")
    return value


def _text(
    params: Mapping[str, str], name: str, *, required: bool = False, longest: int = _MAX_TEXT
) -> str | None:
    raw = params.get(name)
    if raw is None or not raw.strip():
        if required:
            raise BadInput(name, "must not be empty")
        return None
    if len(raw) > longest:
        raise BadInput(name, f"must be at most {longest} characters")
    if "\x00" in raw:
        raise BadInput(name, "must not contain NUL characters")
    return raw


def _limit(params: Mapping[str, str]) -> int:
    value = _int(params, "limit", PAGE_SIZE, 1, MAX_PAGE_SIZE)
    assert value is not None
    return value


def _pending_cursor(raw: str | None) -> tuple[datetime, int] | None:
    if not raw:
        return None
    at, _, row_id = raw.rpartition(",")
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise BadInput("after", "must be <ISO 8601 time>,<row id> from a Next link") from None
    if when.tzinfo is None or not row_id.isascii() or not row_id.isdigit() or len(row_id) > 19:
        raise BadInput("after", "must be <ISO 8601 time>,<row id> from a Next link")
    return when, int(row_id)


# -- why a pending row waits ----------------------------------------------------------------


def why_pending(row: Mapping[str, Any], event_api_available: bool) -> str:
    """One sentence: leased, backing off, paused by an outage, or simply next in line."""
    due_in = human_age(row["due_in"])
    if row["leased"] and not row["due"]:
        return f"leased by {row['claimed_by'] or 'a relay'}: its lease ends in {due_in}"
    if row["leased"]:
        return f"lease of {row['claimed_by'] or 'a relay'} expired: the next claim takes it over"
    if not row["due"]:
        if row["attempts"]:
            return f"backing off after {row['attempts']} rejection(s); next attempt in {due_in}"
        return f"scheduled: due in {due_in}"
    if not event_api_available:
        return "paused: the Event API is unreachable (an outage charges no attempt)"
    return "due now: the next batch takes it"


def chart(per_minute: list[int], width: int = 600, height: int = 80) -> dict[str, Any]:
    """Bars of an SVG chart (events a second, averaged over each minute, last hour)."""
    rates = [n / 60 for n in per_minute]
    top = max(rates, default=0.0) or 1.0
    step = width / max(len(rates), 1)
    bars = []
    for i, rate in enumerate(rates):
        h = 0.0 if rate == 0 else max(1.0, rate / top * (height - 2))
        bars.append(
            {
                "x": round(i * step, 2),
                "y": round(height - h, 2),
                "w": round(max(step - 1, 1), 2),
                "h": round(h, 2),
                "title": f"{59 - i} min ago: {rate:.2f}/s ({per_minute[i]} events)",
            }
        )
    return {
        "bars": bars,
        "width": width,
        "height": height,
        "peak": max(rates, default=0.0),
        "now": rates[-1] if rates else 0.0,
        "total": sum(per_minute),
    }


# -- the routes -----------------------------------------------------------------------------


def add_ui_routes(
    app: web.Application,
    *,
    dsn: str,
    token: str,
    registry: CollectorRegistry,
    relay_state: Callable[[], RelayState],
    grafana_url: str | None = None,
    sessions: Sessions | None = None,
    signin_limiter: SigninLimiter | None = None,
) -> None:
    """Mounts the pages under ``/admin/`` (the caller checks that a token is configured)."""
    sessions = sessions or Sessions(token)
    limiter = signin_limiter or SigninLimiter()
    templates = _templates()
    metrics = PageMetrics(registry)
    pool = _Pool(dsn)
    static = resources.files("outbox_relay.http") / "static"

    async def close_pool(_: web.Application) -> None:
        await pool.close()

    app.on_cleanup.append(close_pool)

    def render(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
        session = request.get(_session_key)
        body = templates.get_template(name).render(
            csrf=sessions.csrf_for(session) if session else "",
            signed_in=session is not None,
            grafana_url=grafana_url,
            nav=name.removesuffix(".html"),
            **context,
        )
        return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")

    def see_other(location: str) -> web.Response:
        # Relative: resolved against the URL the browser sees, prefix included.
        return web.Response(status=303, headers={"Location": location})

    @web.middleware
    async def pages(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in JSON_PATHS or not (path == "/admin" or path.startswith(PREFIX)):
            return await handler(request)
        began = time.perf_counter()
        route = request.match_info.route.resource
        route_name = route.canonical if route is not None else "unmatched"
        try:
            response = await _answer(request, handler)
        except BaseException:
            # a bug, or the server stopping mid-request: still counted (as aiohttp answers it)
            metrics.requests.labels(route=route_name, status="500").inc()
            raise
        finally:
            metrics.duration.labels(route=route_name).observe(time.perf_counter() - began)
        metrics.requests.labels(route=route_name, status=str(response.status)).inc()
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not path.startswith(PREFIX + "static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/admin":
            return web.Response(status=308, headers={"Location": "admin/"})
        try:
            return await _guarded(request, handler)
        except BadInput as exc:
            return render(
                request, "error.html", 400, title="Bad request", message=f"{exc.field} {exc.rule}."
            )
        except NotFound as exc:
            return render(request, "error.html", 404, title="Not found", message=str(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = (
                f"There is no page {request.path}."
                if exc.status == 404
                else f"{request.method} is not allowed here."
                if exc.status == 405
                else f"The form is too large: select at most {MAX_SELECTED} rows."
                if exc.status == 413
                else exc.reason
            )
            return render(request, "error.html", exc.status, title=exc.reason, message=message)
        except asyncpg.InsufficientPrivilegeError as exc:
            log.warning("admin_page_privileges", path=request.path, error=str(exc))
            return render(
                request,
                "error.html",
                503,
                title="Not allowed by the database",
                message=(
                    f"The relay's database role may not read this ({exc}). The "
                    "outbox pages need only outbox.messages; search, the track and scan "
                    'pages also read library.* (docs/operations.md, "The admin '
                    'page", lists the grants).'
                ),
            )
        except (
            OSError,
            asyncpg.PostgresConnectionError,
            asyncpg.CannotConnectNowError,
            asyncpg.QueryCanceledError,
            TimeoutError,
        ) as exc:
            log.warning("admin_page_database_error", path=request.path, error=str(exc))
            return render(
                request,
                "error.html",
                503,
                title="Database unavailable",
                message=f"The database did not answer: {type(exc).__name__}. Retry in a moment.",
            )

    async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        """A session for every page but sign-in and the static files; a CSRF token on POSTs."""
        path = request.path
        if path in _OPEN_PATHS or path.startswith(PREFIX + "static/"):
            return await handler(request)
        session = sessions.check(request.cookies.get(SESSION_COOKIE))
        if session is None:
            if request.headers.get("HX-Request") == "true":
                # a live section refreshing after the session ended: htmx follows this header
                # with a whole-page navigation (a 303 would swap the sign-in form into it)
                return web.Response(status=200, headers={"HX-Redirect": "signin"})
            if request.method == "GET":
                return see_other("signin")
            return render(
                request,
                "error.html",
                401,
                title="Signed out",
                message="Your session has ended; sign in again.",
            )
        request[_session_key] = session
        if request.method == "POST":
            given = (await request.post()).get("csrf")
            if not sessions.csrf_ok(session, given if isinstance(given, str) else None):
                log.warning("admin_csrf_refused", path=path, who=session.label)
                return render(
                    request,
                    "error.html",
                    403,
                    title="Refused",
                    message="This form's CSRF token is missing or wrong: reload the page and "
                    "try again.",
                )
        return await handler(request)

    # -- sign in and out --

    async def signin_form(
        request: web.Request, *, error: str | None = None, status: int = 200
    ) -> web.Response:
        nonce = sessions.new_signin_nonce()
        response = render(
            request, "signin.html", status, signin_csrf=sessions.signin_csrf(nonce), error=error
        )
        _set_cookie(response, SIGNIN_COOKIE, nonce, max_age=3600, secure=_https(request))
        return response

    async def signin_get(request: web.Request) -> web.StreamResponse:
        if sessions.check(request.cookies.get(SESSION_COOKIE)) is not None:
            return see_other("./")
        return await signin_form(request)

    async def signin_post(request: web.Request) -> web.StreamResponse:
        # Before the token is even read: a limited address learns nothing from trying.
        address = request.remote or "unknown"
        wait = limiter.retry_after(address)
        if wait is not None:
            retry_after = max(1, math.ceil(wait))
            metrics.signin_limited.inc()
            log.warning(
                "admin_signin_limited",
                remote=address,
                retry_after_s=retry_after,
                limit=limiter.limit,
                window_s=limiter.window,
            )
            response = await signin_form(
                request,
                error=f"Too many wrong tokens from your address: try again in {retry_after} s.",
                status=429,
            )
            response.headers["Retry-After"] = str(retry_after)
            return response
        form = await request.post()
        given_csrf = form.get("csrf")
        if not sessions.signin_csrf_ok(
            request.cookies.get(SIGNIN_COOKIE), given_csrf if isinstance(given_csrf, str) else None
        ):
            log.warning("admin_csrf_refused", path=request.path, who="signed-out")
            return await signin_form(
                request, error="The form expired or came from elsewhere: try again.", status=403
            )
        given = form.get("token")
        if not isinstance(given, str) or not sessions.token_matches(given, token):
            failures = limiter.failed(address)
            metrics.signin_failures.inc()
            log.warning(
                "admin_signin_refused",
                remote=request.remote,
                failures=failures,
                limit=limiter.limit,
                window_s=limiter.window,
            )
            return await signin_form(
                request, error="That token is not the admin token.", status=401
            )
        limiter.succeeded(address)
        cookie = sessions.issue()
        session = sessions.check(cookie)
        assert session is not None
        log.info("admin_signed_in", who=session.label, remote=request.remote)
        response = see_other("./")
        _set_cookie(
            response, SESSION_COOKIE, cookie, max_age=SESSION_SECONDS, secure=_https(request)
        )
        _set_cookie(response, SIGNIN_COOKIE, "", max_age=0, secure=_https(request))
        return response

    async def signout(request: web.Request) -> web.StreamResponse:
        log.info("admin_signed_out", who=request[_session_key].label)
        response = see_other("signin")
        _set_cookie(response, SESSION_COOKIE, "", max_age=0, secure=_https(request))
        return response

    # -- pages --

    async def overview(request: web.Request) -> web.StreamResponse:
        async with (await pool.get()).acquire() as conn:
            numbers = await db.overview(conn)
        return render(
            request,
            "overview.html",
            o=numbers,
            state=relay_state(),
            chart=chart(numbers.per_minute),
        )

    async def dead(request: web.Request) -> web.StreamResponse:
        q = request.query
        before = _int(q, "before", db.FIRST_ID, 1, db.FIRST_ID)
        assert before is not None
        # an error's own text, from a link of the "by error" table: as long as a URL allows
        error = _text(q, "error", longest=_MAX_ERROR_FILTER)
        limit = _limit(q)
        done = _int(q, "requeued", None, 0, 10**9)
        asked = _int(q, "asked", None, 0, 10**9)
        async with (await pool.get()).acquire() as conn:
            rows = await db.dead_page(conn, before=before, limit=limit + 1, error=error)
            errors = await db.dead_errors(conn)
        more = len(rows) > limit
        rows = rows[:limit]
        return render(
            request,
            "dead.html",
            rows=rows,
            errors=errors,
            error=error,
            next_before=rows[-1]["id"] if more else None,
            limit=limit,
            first_page=before == db.FIRST_ID,
            requeued=done,
            asked=asked,
        )

    async def dead_requeue(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        session: Session = request[_session_key]
        ids, error, up_to = _requeue_selector(form)
        confirmed = form.get("confirm") == "yes"
        async with (await pool.get()).acquire() as conn:
            if not confirmed:
                count = (
                    await db.count_dead_ids(conn, ids)
                    if ids is not None
                    else await db.count_dead_error(conn, error or "", up_to or 0)
                )
                return render(
                    request,
                    "confirm.html",
                    count=count,
                    ids=ids,
                    error=error,
                    up_to=up_to,
                    asked=len(ids) if ids is not None else count,
                )
            async with conn.transaction():
                if ids is not None:
                    requeued = await requeue_dead(conn, ids=ids)
                    selector = "ids"
                else:
                    requeued = await db.requeue_error(conn, error or "", up_to or 0)
                    selector = "error"
        log.info(
            "admin_requeue",
            who=session.label,
            remote=request.remote,
            selector=selector,
            ids=ids[:20] if ids is not None else None,
            error=error,
            up_to=up_to,
            asked=len(ids) if ids is not None else None,
            requeued=len(requeued),
        )
        asked = len(ids) if ids is not None else len(requeued)
        return see_other(
            "dead?" + urllib.parse.urlencode({"requeued": len(requeued), "asked": asked})
        )

    async def pending(request: web.Request) -> web.StreamResponse:
        q = request.query
        after = _pending_cursor(_text(q, "after"))
        limit = _limit(q)
        async with (await pool.get()).acquire() as conn:
            rows = await db.pending_page(conn, after=after, limit=limit + 1)
            total, due = await db.pending_counts(conn)
        more = len(rows) > limit
        rows = rows[:limit]
        state = relay_state()
        for row in rows:
            row["why"] = why_pending(row, state.event_api_available)
        next_after = f"{rows[-1]['next_attempt_at'].isoformat()},{rows[-1]['id']}" if more else None
        return render(
            request,
            "pending.html",
            rows=rows,
            total=total,
            due=due,
            state=state,
            next_after=next_after,
            limit=limit,
            first_page=after is None,
        )

    async def search(request: web.Request) -> web.StreamResponse:
        q = request.query
        raw = _text(q, "q")
        if raw is None:
            return render(request, "search.html", q="", results=None, notes=[])
        text = raw.strip()
        if len(text) > 200:
            raise BadInput("q", "must be at most 200 characters")
        notes: list[str] = []
        async with (await pool.get()).acquire() as conn:
            isrc = normalise_isrc(text)
            if isrc not in ("missing_isrc", "invalid_isrc"):
                path = await db.track_path(conn, isrc)
                if path.known:
                    return see_other("track?" + urllib.parse.urlencode({"isrc": isrc}))
                notes.append(f"Nothing is known about ISRC {isrc}; titles starting with “{text}”:")
            if text.isascii() and text.isdigit() and len(text) <= 20:
                if db.CATALOG_MIGRATION not in await pool.migrations(conn):
                    notes.append(
                        "Catalog ids are not searchable here: the catalog lookup (migration "
                        "010) is not installed in this database. Titles starting with "
                        f"“{text}”:"
                    )
                else:
                    answers = await db.catalog_lookup(conn, text)
                    known = next((a["isrc"] for a in answers if a["isrc"]), None)
                    if known is not None:
                        return see_other("track?" + urllib.parse.urlencode({"isrc": known}))
                    notes.append(
                        f"The catalog did not know TIDAL track id {text} (asked "
                        f"{_when(answers[0]['looked_up_at'])}, country "
                        f"{answers[0]['country_code']}). Titles starting with “{text}”:"
                        if answers
                        else f"TIDAL track id {text} has not been looked up yet (the relay asks "
                        f"the catalog when it publishes the row). Titles starting with “{text}”:"
                    )
            results = await db.search_title(conn, text.lower(), PAGE_SIZE)
        return render(request, "search.html", q=text, results=results, notes=notes)

    async def track(request: web.Request) -> web.StreamResponse:
        raw = _text(request.query, "isrc", required=True)
        isrc = normalise_isrc(raw)
        if isrc in ("missing_isrc", "invalid_isrc"):
            raise BadInput("isrc", "must be 12 letters or digits (an ISRC)")
        async with (await pool.get()).acquire() as conn:
            path = await db.track_path(conn, isrc)
        if not path.known:
            raise NotFound(
                f"Nothing is known about ISRC {isrc}: no library row, no outbox row, no ingestion."
            )
        return render(
            request,
            "track.html",
            t=path,
            self_url="track?" + urllib.parse.urlencode({"isrc": isrc}),
        )

    async def scans(request: web.Request) -> web.StreamResponse:
        q = request.query
        before = _int(q, "before", db.FIRST_ID, 1, db.FIRST_ID)
        assert before is not None
        limit = _limit(q)
        async with (await pool.get()).acquire() as conn:
            rows = await db.scan_page(conn, before=before, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return render(
            request,
            "scans.html",
            rows=rows,
            limit=limit,
            next_before=rows[-1]["id"] if more else None,
            first_page=before == db.FIRST_ID,
        )

    async def static_file(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return web.Response(
            body=(static / name).read_bytes(),
            content_type=_STATIC[name],
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.middlewares.append(pages)
    app.router.add_get("/admin/", overview)
    app.router.add_get("/admin/signin", signin_get)
    app.router.add_post("/admin/signin", signin_post)
    app.router.add_post("/admin/signout", signout)
    app.router.add_get("/admin/dead", dead)
    app.router.add_post("/admin/dead-requeue", dead_requeue)
    app.router.add_get("/admin/pending", pending)
    app.router.add_get("/admin/search", search)
    app.router.add_get("/admin/track", track)
    app.router.add_get("/admin/scans", scans)
    app.router.add_get("/admin/static/{name}", static_file)


def _set_cookie(
    response: web.StreamResponse, name: str, value: str, *, max_age: int, secure: bool
) -> None:
    """A cookie without ``Path``: the browser scopes it to the directory of the URL it sees
    (``/<prefix>/admin``), so it follows a reverse proxy's prefix and nothing else.
    (aiohttp's ``set_cookie`` always writes ``Path=/``.) Values are hex and dots only."""
    attributes = f"{name}={value}; Max-Age={max_age}; HttpOnly; SameSite=Strict"
    response.headers.add("Set-Cookie", attributes + ("; Secure" if secure else ""))


def _https(request: web.Request) -> bool:
    # Behind a TLS-terminating proxy the cookie must still be Secure.
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _requeue_selector(
    form: MultiDictProxy[str | bytes | Any],
) -> tuple[list[int] | None, str | None, int | None]:
    """(ids, None, None) or (None, error, up_to): exactly one selector, or a BadInput."""
    one = form.get("one")
    raw_ids = [one] if one is not None else form.getall("ids", [])
    error = form.get("error")
    if raw_ids and error is not None:
        raise BadInput("ids", "give either ids or an error, not both")
    if raw_ids:
        if len(raw_ids) > MAX_SELECTED:
            raise BadInput("ids", f"at most {MAX_SELECTED} at once")
        ids = []
        for raw in raw_ids:
            if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or len(raw) > 18:
                raise BadInput("ids", "must be row ids (whole numbers)")
            ids.append(int(raw))
        return sorted(set(ids)), None, None
    if error is None:
        raise BadInput("ids", "select at least one dead letter")
    if not isinstance(error, str) or not error or len(error) > 100_000:
        raise BadInput("error", "must be the text of a dead letter's error")
    up_to = form.get("up_to")
    if not isinstance(up_to, str) or not up_to.isascii() or not up_to.isdigit() or len(up_to) > 18:
        raise BadInput("up_to", "must be a row id (a whole number)")
    return None, error, int(up_to)
