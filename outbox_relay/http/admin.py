"""Admin endpoints on the relay's port, behind ``OUTBOX_ADMIN_TOKEN``.

Without a configured token the endpoints do not exist (404): an unset secret must never mean
"open". The token is compared in constant time. The JSON endpoints (``/admin/status``,
``/admin/requeue``) take it as a bearer token; the web page beside them (every other path
under ``/admin/``, :mod:`outbox_relay.http.ui`) exchanges it for a session cookie.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from outbox_relay.db.admin import not_requeued, outbox_status, requeue_dead
from outbox_relay.http.ui import JSON_PATHS, RelayState, add_ui_routes

log = structlog.get_logger("outbox_relay.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequeueIn(BaseModel):
    """Exactly one selector: ``ids``, ``error_contains`` or ``all``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ids: list[int] | None = Field(None, max_length=100_000)
    error_contains: str | None = Field(None, min_length=1, max_length=1000)
    all: bool = False

    @model_validator(mode="after")
    def _one_selector(self) -> RequeueIn:
        if sum((self.ids is not None, self.error_contains is not None, self.all)) != 1:
            raise ValueError("give exactly one of: ids, error_contains, all")
        return self


def add_admin_routes(
    app: web.Application,
    *,
    dsn: str,
    token: str | None,
    registry: CollectorRegistry | None = None,
    relay_state: Callable[[], RelayState] | None = None,
    grafana_url: str | None = None,
) -> None:
    """Mounts ``/admin/*`` when a token is configured: the JSON endpoints, and the web page
    when ``registry`` and ``relay_state`` are given (the relay gives them)."""
    if not token:
        return
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in JSON_PATHS:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                log.warning("admin_unauthorized", path=request.path, remote=request.remote)
                return web.json_response(
                    {"error": "unauthorized"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="outbox-relay"'},
                )
        return await handler(request)

    async def status(request: web.Request) -> web.Response:
        raw = request.query.get("dead_letters", "10")
        if not raw.isdigit():
            return web.json_response(
                {
                    "error": "validation_error",
                    "fields": [{"field": "dead_letters", "rule": "must be a whole number"}],
                },
                status=422,
            )
        limit = min(int(raw), 1000)
        conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=10)
        try:
            return web.json_response(await outbox_status(conn, dead_letters=limit))
        finally:
            await conn.close()

    async def requeue(request: web.Request) -> web.Response:
        try:
            body = RequeueIn.model_validate_json(await request.read())
        except ValidationError as exc:
            problems = [
                {"field": ".".join(str(p) for p in e["loc"]) or "body", "rule": e["msg"]}
                for e in exc.errors()
            ]
            return web.json_response({"error": "validation_error", "fields": problems}, status=422)
        conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=10)
        try:
            ids = await requeue_dead(
                conn, ids=body.ids, error_contains=body.error_contains, everything=body.all
            )
            refused = await not_requeued(conn, body.ids, ids) if body.ids else {}
        finally:
            await conn.close()
        answer: dict[str, object] = {"requeued": len(ids), "ids": ids}
        if body.ids is not None:
            # Ids asked for by name and left alone, with the reason (missing, or not dead).
            answer["not_requeued"] = [
                {"id": row_id, "reason": reason} for row_id, reason in refused.items()
            ]
        return web.json_response(answer)

    app.middlewares.append(require_token)
    app.router.add_get("/admin/status", status)
    app.router.add_post("/admin/requeue", requeue)
    if registry is not None and relay_state is not None:
        add_ui_routes(
            app,
            dsn=dsn,
            token=token,
            registry=registry,
            relay_state=relay_state,
            grafana_url=grafana_url,
        )
