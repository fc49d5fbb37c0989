"""The library write API (``outbox-relay api``): the transactional outbox end to end.

Each write adds a library row and its outbox row in one transaction, through the same SQL
functions every application uses, so the relay can never miss a committed write nor send one
that rolled back.

Routes:

- ``POST /v1/library/tracks`` → ``201 {"trackId", "outboxId"}``
- ``POST /v1/library/albums`` → ``201 {"albumId", "outboxId"}``
- any invalid input → ``422 {"error": "validation_error", "fields": [{"field", "rule"}, ...]}``;
  a body that is not ``application/json`` → ``415``; a body over ``MAX_BODY_BYTES`` → ``413``
- every other error is JSON too (``404``, ``405``: ``{"error", "detail"}``, see http/errors.py)
- database unreachable → ``503 {"error": "database_unavailable"}`` with ``Retry-After: 1``
- ``GET /healthz`` (the process answers), ``GET /readyz`` (the database answers within 1 s),
  ``GET /openapi.json`` (OpenAPI 3.1, generated from the models that validate)

The connection pool connects lazily: the API starts while the database is down, answers 503
until it is reachable, then works without a restart.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import asyncpg
import orjson
import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from outbox_relay import __version__
from outbox_relay.db.connection import UNAVAILABLE_ERRORS
from outbox_relay.db.preflight import MIGRATE_HINT, check_schema
from outbox_relay.db.queries import QUERIES
from outbox_relay.errors import ConfigurationError, SchemaNotReady
from outbox_relay.http.errors import json_errors
from outbox_relay.metrics import API_ROUTES, ApiMetrics
from outbox_relay.write.asyncpg import enqueue_album, enqueue_track
from outbox_relay.write.models import (
    AlbumCreated,
    AlbumIn,
    ErrorBody,
    FieldError,
    Readiness,
    TrackCreated,
    TrackIn,
    ValidationErrorBody,
    field_errors,
)

__all__ = ["MAX_BODY_BYTES", "create_app", "openapi_document"]

log = structlog.get_logger("outbox_relay.http.write_api")

MAX_BODY_BYTES: Final = 4 * 1024 * 1024
# A connection attempt to a host that drops packets would otherwise hang for a minute while
# the client waits; a refused one fails at once either way.
CONNECT_TIMEOUT: Final = 5.0
ACQUIRE_TIMEOUT: Final = 5.0
COMMAND_TIMEOUT: Final = 10.0
READY_TIMEOUT: Final = 1.0
RETRY_AFTER: Final = {"Retry-After": "1"}
# Field errors repeated in one log line at most; the response always carries all of them.
_LOGGED_FIELDS: Final = 20


# "enqueue_album: tracks[3].title must be a non-empty string" → field and rule.
_SQL_MESSAGE: Final = re.compile(
    r"^enqueue_(?:track|album): (?P<field>[a-z_]+(?:\[\d+\])?(?:\.[A-Za-z_]+)?) (?P<rule>.+)$",
    re.DOTALL,
)
# SQL argument names that the JSON body spells differently.
_SQL_TO_JSON_FIELD: Final = {"artwork_url": "artworkUrl", "tidal_track_id": "tidalTrackId"}

# A relation, function or schema of the migrations is missing: the database is not migrated.
_NOT_MIGRATED: Final[tuple[type[asyncpg.PostgresError], ...]] = (
    asyncpg.exceptions.UndefinedTableError,
    asyncpg.exceptions.UndefinedFunctionError,
    asyncpg.exceptions.InvalidSchemaNameError,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass(slots=True)
class _Database:
    """The pool, created at startup unless the caller supplied one (then it is the caller's)."""

    # Kept out of repr: tracebacks rendered with their locals must not carry the password.
    dsn: str | None = field(repr=False)
    pool: Any  # asyncpg.Pool; asyncpg ships no type information
    owned: bool
    max_size: int


_DATABASE: Final = web.AppKey("outbox_relay.write.database", _Database)
_OPENAPI: Final = web.AppKey("outbox_relay.write.openapi", bytes)
API_METRICS: Final = web.AppKey("outbox_relay.write.metrics", ApiMetrics)


# -- responses ----------------------------------------------------------------------------------


def _json(status: int, body: BaseModel, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=body.model_dump_json(exclude_none=True).encode(),
        content_type="application/json",
        headers=headers,
    )


def _unavailable(request: web.Request, exc: BaseException) -> web.Response:
    # The exception's text, never the DSN: connection errors name host and port at most.
    log.error(
        "database_unavailable",
        path=request.path,
        error=f"{type(exc).__name__}: {exc}",
    )
    return _json(
        503,
        ErrorBody(
            error="database_unavailable",
            detail="the database cannot be reached now; nothing was written, retry",
        ),
        RETRY_AFTER,
    )


def _not_migrated(request: web.Request, exc: asyncpg.PostgresError) -> web.Response:
    log.error("database_not_migrated", path=request.path, error=str(exc))
    return _json(
        503,
        ErrorBody(
            error="database_not_migrated",
            detail=f"the database is not migrated ({exc}): {MIGRATE_HINT}; nothing was written",
        ),
        RETRY_AFTER,
    )


def _invalid(request: web.Request, fields: list[FieldError], *, source: str) -> web.Response:
    log.info(
        "validation_error",
        path=request.path,
        source=source,
        field_count=len(fields),
        fields=[f"{f.field}: {f.rule}" for f in fields[:_LOGGED_FIELDS]],
    )
    return _json(422, ValidationErrorBody(error="validation_error", fields=fields))


def _sql_field_error(exc: asyncpg.PostgresError) -> FieldError:
    """A SQL function's validation message as a field error; other messages blame the body."""
    message = str(getattr(exc, "message", None) or exc)
    match = _SQL_MESSAGE.match(message)
    if match is None:
        return FieldError(field="body", rule=message)
    head, dot, name = match["field"].rpartition(".")
    path = head + dot + _SQL_TO_JSON_FIELD.get(name, name)
    return FieldError(field=path, rule=match["rule"])


# -- request handling ---------------------------------------------------------------------------


async def _parse(request: web.Request, model: type[M]) -> M | web.Response:
    """The validated body, or the 415/422 answer that explains what is wrong with it."""
    charset = (request.charset or "utf-8").lower()
    if not _is_json(request.content_type) or charset not in {"utf-8", "utf8"}:
        return _json(
            415,
            ErrorBody(
                error="unsupported_media_type",
                detail="send the body as application/json (UTF-8)",
            ),
        )
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        log.info("request_too_large", path=request.path, limit_bytes=MAX_BODY_BYTES)
        return _json(
            413,
            ErrorBody(
                error="payload_too_large",
                detail=f"the body must be at most {MAX_BODY_BYTES} bytes",
            ),
        )
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        return _invalid(request, field_errors(exc), source="request")


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def _in_transaction(
    request: web.Request, work: Callable[[Any], Awaitable[T]]
) -> T | web.Response:
    """Runs ``work(conn)`` in one transaction; database trouble becomes a 503 or a 422."""
    pool = request.app[_DATABASE].pool
    try:
        conn = await pool.acquire(timeout=ACQUIRE_TIMEOUT)
    except Exception as exc:
        # Whatever stops us from getting a connection (refused, timed out, authentication,
        # the database missing) is the database being unavailable to this API, not the
        # client's fault: 503, and the client retries.
        return _unavailable(request, exc)
    try:
        async with conn.transaction():
            return await work(conn)
    except _NOT_MIGRATED as exc:
        # A table or function of the migrations is missing: the operator's fix, not the
        # client's; nothing was written.
        return _not_migrated(request, exc)
    except asyncpg.exceptions.DataError as exc:
        # A SQL function refused a value that slipped past the models (SQLSTATE class 22).
        # The transaction is rolled back: nothing was written.
        return _invalid(request, [_sql_field_error(exc)], source="database")
    except UNAVAILABLE_ERRORS as exc:
        if isinstance(exc, ValueError):
            # asyncpg's client-side DataError (a Python value it cannot encode) is an
            # InterfaceError too, but a bug of ours, not an outage.
            raise
        # Rolled back by the server, or the connection died before COMMIT answered. In the
        # latter case the commit may have happened; the library and outbox rows then exist
        # together, never one without the other.
        return _unavailable(request, exc)
    finally:
        try:
            await pool.release(conn)
        except Exception as exc:
            # Resetting a connection that just died fails; asyncpg has already terminated it
            # and returned its slot to the pool. The request's outcome is decided above.
            log.warning("connection_release_failed", error=f"{type(exc).__name__}: {exc}")


async def _add(
    request: web.Request,
    model: type[M],
    write: Callable[[Any, M], Awaitable[tuple[int, int]]],
    added: Callable[[M, int, int, float], BaseModel],
) -> web.Response:
    """One write request: validate, write in one transaction, answer 201 (or why not).

    ``write(conn, body)`` returns the library row's id and the outbox row's id; ``added`` logs
    the write and builds the 201 body from them and the duration in milliseconds.
    """
    started = time.perf_counter()
    body = await _parse(request, model)
    if isinstance(body, web.Response):
        return body
    result = await _in_transaction(request, lambda conn: write(conn, body))
    if isinstance(result, web.Response):
        return result
    row_id, outbox_id = result
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return _json(201, added(body, row_id, outbox_id, duration_ms))


async def _write_track(conn: Any, track: TrackIn) -> tuple[int, int]:
    # The outbox row first: its id goes into the library row, linking the two.
    outbox_id = await enqueue_track(
        conn,
        isrc=track.isrc,
        title=track.title,
        artist=track.artist,
        album=track.album,
        priority=track.priority,
        force=track.force,
        artwork_url=track.artwork_url,
        tidal_track_id=track.tidal_track_id,
    )
    track_id = await conn.fetchval(
        QUERIES["insert_library_track"],
        track.isrc,
        track.title,
        track.artist,
        track.album,
        track.artwork_url,
        outbox_id,
    )
    return int(track_id), outbox_id


def _track_added(track: TrackIn, track_id: int, outbox_id: int, duration_ms: float) -> BaseModel:
    log.info(
        "library_track_added",
        track_id=track_id,
        outbox_id=outbox_id,
        isrc=track.isrc,
        tidal_track_id=track.tidal_track_id,
        trackTitle=track.title,
        duration_ms=duration_ms,
    )
    return TrackCreated(track_id=track_id, outbox_id=outbox_id)


async def _write_album(conn: Any, album: AlbumIn) -> tuple[int, int]:
    tracks = album.tracks_json()
    outbox_id = await enqueue_album(
        conn, title=album.title, artist=album.artist, tracks=tracks, artwork_url=album.artwork_url
    )
    album_id = await conn.fetchval(
        QUERIES["insert_library_album"],
        album.title,
        album.artist,
        album.artwork_url,
        orjson.dumps(tracks).decode(),
        outbox_id,
    )
    return int(album_id), outbox_id


def _album_added(album: AlbumIn, album_id: int, outbox_id: int, duration_ms: float) -> BaseModel:
    log.info(
        "library_album_added",
        album_id=album_id,
        outbox_id=outbox_id,
        albumTitle=album.title,
        total_tracks=len(album.tracks),
        duration_ms=duration_ms,
    )
    return AlbumCreated(album_id=album_id, outbox_id=outbox_id)


async def _add_track(request: web.Request) -> web.Response:
    return await _add(request, TrackIn, _write_track, _track_added)


async def _add_album(request: web.Request) -> web.Response:
    return await _add(request, AlbumIn, _write_album, _album_added)


async def _healthz(_request: web.Request) -> web.Response:
    return _json(200, Readiness(status="ok"))


async def _readyz(request: web.Request) -> web.Response:
    pool = request.app[_DATABASE].pool
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            async with pool.acquire() as conn:
                await check_schema(conn)
    except SchemaNotReady as exc:
        return _json(503, Readiness(status="unavailable", reason=str(exc)), RETRY_AFTER)
    except Exception as exc:
        # Probes run every few seconds: debug, so an outage does not drown the log.
        log.debug("readiness_failed", error=f"{type(exc).__name__}: {exc}")
        reason = (
            f"the database did not answer within {READY_TIMEOUT:g} s"
            if isinstance(exc, TimeoutError)
            else f"the database cannot be reached: {type(exc).__name__}: {exc}"
        )
        return _json(503, Readiness(status="unavailable", reason=reason), RETRY_AFTER)
    return _json(200, Readiness(status="ready"))


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_OPENAPI], content_type="application/json")


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[API_METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _measured(metrics: ApiMetrics) -> Middleware:
    """Counts and times every request by route (bounded: unknown paths are ``unmatched``)."""
    known = frozenset(API_ROUTES)

    @web.middleware
    async def measure(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        route = route if route in known else "unmatched"
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            metrics.requests.labels(route, f"{min(status // 100, 5)}xx").inc()
            metrics.request_duration.labels(route).observe(time.perf_counter() - started)

    return measure


@web.middleware
async def _internal_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A bug answers a JSON 500 and is logged with its traceback; HTTP errors pass through."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("request_failed", path=request.path, method=request.method)
        return _json(500, ErrorBody(error="internal_error"))


# -- application --------------------------------------------------------------------------------


async def _pool_context(app: web.Application) -> AsyncIterator[None]:
    database = app[_DATABASE]
    if database.pool is None:
        # min_size=0: creating the pool opens no connection, so the API starts while the
        # database is down; each request connects as needed and the first one after the
        # database comes back simply succeeds.
        database.pool = await asyncpg.create_pool(
            database.dsn,
            min_size=0,
            max_size=database.max_size,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            # Idle connections die with a database restart; recycling them bounds how many
            # requests can meet a dead one afterwards.
            max_inactive_connection_lifetime=60.0,
            server_settings={"application_name": "outbox-relay-api"},
        )
    try:
        yield
    finally:
        if database.owned:
            try:
                await asyncio.wait_for(database.pool.close(), timeout=10.0)
            except TimeoutError:
                database.pool.terminate()
            database.pool = None


def create_app(
    dsn: str | None = None,
    *,
    pool: asyncpg.Pool | None = None,
    pool_max_size: int = 10,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """The library write API as an aiohttp application.

    Give a ``dsn`` (the pool is created at startup and closed at cleanup) or an open ``pool``
    (used as is and left open). The DSN is never logged. Its metrics go to ``registry`` (a
    registry of its own by default, served at ``/metrics``).
    """
    if pool is None and not dsn:
        raise ConfigurationError(
            "the write API needs DATABASE_URL (a PostgreSQL DSN) or an asyncpg pool"
        )
    metrics = ApiMetrics(registry if registry is not None else CollectorRegistry())
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        # Outermost first: the metrics see the status every other layer settled on.
        middlewares=[
            _measured(metrics),
            json_errors(max_body_bytes=MAX_BODY_BYTES),
            _internal_errors,
        ],
    )
    app[API_METRICS] = metrics
    app[_DATABASE] = _Database(dsn=dsn, pool=pool, owned=pool is None, max_size=pool_max_size)
    app[_OPENAPI] = orjson.dumps(openapi_document())
    app.cleanup_ctx.append(_pool_context)
    app.router.add_post("/v1/library/tracks", _add_track)
    app.router.add_post("/v1/library/albums", _add_album)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_get("/metrics", _metrics)
    return app


# -- OpenAPI ------------------------------------------------------------------------------------


def _content(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


def _write_operation(
    operation_id: str, summary: str, request_schema: str, created_schema: str
) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "requestBody": {
            "required": True,
            "description": f"At most {MAX_BODY_BYTES} bytes (a larger body is answered 413).",
            "content": _content(request_schema),
            "x-max-body-bytes": MAX_BODY_BYTES,
        },
        "responses": {
            "201": {
                "description": "Written: the library row and its outbox row, in one transaction.",
                "content": _content(created_schema),
            },
            "405": {
                "description": "Only POST is allowed here (the Allow header says so).",
                "content": _content("ErrorBody"),
            },
            "413": {
                "description": f"The body is over {MAX_BODY_BYTES} bytes. Nothing written.",
                "content": _content("ErrorBody"),
            },
            "415": {
                "description": "The body is not application/json (UTF-8).",
                "content": _content("ErrorBody"),
            },
            "422": {
                "description": "Invalid input: every bad field and its rule. Nothing written.",
                "content": _content("ValidationErrorBody"),
            },
            "503": {
                "description": "The database is unavailable. Nothing written; retry.",
                "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
                "content": _content("ErrorBody"),
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description; the schemas are generated from the validating models."""
    _, definitions = models_json_schema(
        [
            (TrackIn, "validation"),
            (AlbumIn, "validation"),
            (TrackCreated, "serialization"),
            (AlbumCreated, "serialization"),
            (ValidationErrorBody, "serialization"),
            (ErrorBody, "serialization"),
            (Readiness, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "outbox-relay library write API",
            "version": __version__,
            "description": (
                "Adds tracks and albums to the library; each write and its ingestion request "
                "(an outbox row the relay publishes to Inngest) commit together."
            ),
        },
        "paths": {
            "/v1/library/tracks": {
                "post": _write_operation("addTrack", "Add a track", "TrackIn", "TrackCreated")
            },
            "/v1/library/albums": {
                "post": _write_operation("addAlbum", "Add an album", "AlbumIn", "AlbumCreated")
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "The process answers",
                    "responses": {
                        "200": {"description": "Alive", "content": _content("Readiness")}
                    },
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "ready",
                    "summary": "The database answers SELECT 1 within 1 s",
                    "responses": {
                        "200": {"description": "Ready", "content": _content("Readiness")},
                        "503": {
                            "description": "The database is unavailable",
                            "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
                            "content": _content("Readiness"),
                        },
                    },
                }
            },
        },
        "components": {
            "schemas": definitions.get("$defs", {}),
            "headers": {
                "RetryAfter": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer", "minimum": 0},
                }
            },
        },
    }
