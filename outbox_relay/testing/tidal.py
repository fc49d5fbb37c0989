"""The TIDAL catalog stand-in: the token endpoint and ``GET /v2/tracks`` (test equipment).

No catalog can be reached from here; tests, benchmarks and the demo point the relay at this.
It follows the catalog's public shapes (research §1, from TIDAL's OpenAPI spec and SDK):

- ``POST /v1/oauth2/token`` (form: ``grant_type=client_credentials``, ``client_id``,
  ``client_secret``) answers ``{"access_token", "token_type": "Bearer", "expires_in", "scope"}``;
  wrong credentials get 401 ``{"error": "invalid_client", "error_description", "status",
  "sub_status"}``.
- ``GET /v2/tracks`` with ``filter[id]`` (comma-joined, repeated keys, or both), optional
  ``countryCode`` (ISO alpha-2) and ``include`` (``albums``, ``artists``), a bearer token and
  ``Accept: application/vnd.api+json``: a ``Tracks_Multi_Resource_Data_Document`` (``data[]``
  of ``{"id", "type": "tracks", "attributes": {...}}``, ``included[]``, ``links.self``). Ids past
  the 20th are dropped silently, as the real one does; ids it does not know are simply absent.
- Errors are JSON:API error documents ``{"errors": [{"id", "status", "code", "detail",
  "source"}]}``: 400 (an undocumented filter, a bad country code, an unknown include), 401 (no
  or an unknown/expired token), 406 (an Accept it cannot serve), 429 with **no headers** (as
  documented; ``Retry-After`` only when a test asks for it), 5xx on demand.

Fault switches (attributes and methods, or ``POST /_standin/faults`` with the same names):
``latency`` (seconds a request takes), ``rate_429`` (share of ``/tracks`` requests answered
429, drawn from a seeded RNG), ``retry_after`` (send it with 429s), ``status`` (answer every
request with this 5xx), ``refuse_credentials``, :meth:`expire_tokens`. Records:
:attr:`requests` (each ``/tracks`` request: its ids, status, when), :attr:`token_requests`,
:attr:`max_in_flight`; ``GET /_standin/state`` shows them.
``python -m outbox_relay.testing.tidal`` runs it as a process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web

__all__ = [
    "CatalogStandIn",
    "StandInTrack",
    "TracksRequest",
    "album_tracks",
    "main",
]

MAX_IDS: Final = 20
JSON_API: Final = "application/vnd.api+json"
_COUNTRY: Final = re.compile(r"^[A-Z]{2}$")
_INCLUDES: Final = frozenset({"albums", "artists"})
_KNOWN_PARAMS: Final = frozenset({"filter[id]", "countryCode", "include"})
# Filters the spec documents but this stand-in does not implement: still not a 400.
_DOCUMENTED_FILTERS: Final = frozenset({"filter[isrc]", "filter[owners.id]"})


@dataclass(frozen=True, slots=True)
class StandInTrack:
    """One track of the stand-in's catalog."""

    id: str
    isrc: str
    title: str
    artist: str = "Stand-in Artist"
    album: str = "Stand-in Album"
    # countries where it is available (None: everywhere)
    countries: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class TracksRequest:
    """One ``GET /tracks`` as received: the ids asked (after splitting), the status answered."""

    ids: tuple[str, ...]
    status: int
    at: float


def album_tracks(
    count: int, *, first_id: int = 100_000_000, isrc_prefix: str = "QZSA2", album: str = "Album"
) -> list[StandInTrack]:
    """``count`` tracks with consecutive ids and ISRCs ``<prefix>`` + 7 digits (12 chars)."""
    width = 12 - len(isrc_prefix)
    return [
        StandInTrack(
            id=str(first_id + n),
            isrc=f"{isrc_prefix}{(first_id + n) % 10**width:0{width}d}",
            title=f"{album} track {n + 1}",
            album=album,
        )
        for n in range(count)
    ]


def _error(status: int, code: str, detail: str, **source: str) -> web.Response:
    error: dict[str, Any] = {
        "id": secrets.token_hex(8),
        "status": str(status),
        "code": code,
        "detail": detail,
    }
    if source:
        error["source"] = source
    return web.Response(
        status=status, body=orjson.dumps({"errors": [error]}), content_type=JSON_API
    )


class CatalogStandIn:
    """The catalog on a loopback port. ``async with CatalogStandIn(tracks) as catalog:``, then
    point the relay at ``catalog.api_base_url`` and ``catalog.auth_url`` with
    ``catalog.client_id`` / ``catalog.client_secret``."""

    def __init__(
        self,
        tracks: Iterable[StandInTrack] = (),
        *,
        client_id: str = "standin-client",
        client_secret: str = "standin-secret",
        token_ttl: float = 86400.0,
        latency: float = 0.0,
        rate_429: float = 0.0,
        seed: int = 13,
    ) -> None:
        self.tracks: dict[str, StandInTrack] = {track.id: track for track in tracks}
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        # fault switches
        self.latency = latency
        self.rate_429 = rate_429
        self.retry_after: float | None = None
        self.status: int | None = None
        self.refuse_credentials = False
        self._rng = random.Random(seed)
        # records
        self.requests: list[TracksRequest] = []
        self.token_requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_post("/v1/oauth2/token", self._token)
        app.router.add_get("/v2/tracks", self._tracks)
        app.router.add_get("/_standin/state", self._state)
        app.router.add_post("/_standin/faults", self._faults)
        app.router.add_post("/_standin/tracks", self._add_tracks)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> CatalogStandIn:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("the catalog stand-in is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base_url(self) -> str:
        """``TIDAL_API_BASE_URL`` for this stand-in."""
        return self.base_url + "/v2"

    @property
    def auth_url(self) -> str:
        """``TIDAL_AUTH_URL`` for this stand-in."""
        return self.base_url + "/v1/oauth2/token"

    def environment(self) -> dict[str, str]:
        """The ``TIDAL_*`` variables that point a relay here."""
        return {
            "TIDAL_CLIENT_ID": self.client_id,
            "TIDAL_CLIENT_SECRET": self.client_secret,
            "TIDAL_API_BASE_URL": self.api_base_url,
            "TIDAL_AUTH_URL": self.auth_url,
        }

    # -- switches and records ----------------------------------------------------------------------

    def add(self, tracks: Iterable[StandInTrack]) -> None:
        for track in tracks:
            self.tracks[track.id] = track

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (``/tracks`` answers 401 to it)."""
        self._tokens.clear()

    def ids_asked(self) -> list[str]:
        """Every id of every answered ``/tracks`` request, in order (repeats included)."""
        return [i for r in self.requests if r.status == 200 for i in r.ids[:MAX_IDS]]

    def answered(self, status: int = 200) -> list[TracksRequest]:
        return [r for r in self.requests if r.status == status]

    # -- handlers ----------------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        await self._delay()
        if self.status is not None:
            return web.json_response(
                {"error": "server_error", "status": self.status, "sub_status": 0},
                status=self.status,
            )
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "grant_type must be client_credentials",
                    "status": 400,
                    "sub_status": 1002,
                },
                status=400,
            )
        if (
            self.refuse_credentials
            or form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "Client not found or wrong secret",
                    "status": 401,
                    "sub_status": 1002,
                },
                status=401,
            )
        token = secrets.token_urlsafe(24)
        self._tokens[token] = time.monotonic() + self.token_ttl
        return web.json_response(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": int(self.token_ttl) if self.token_ttl >= 1 else self.token_ttl,
                "scope": "",
            }
        )

    async def _tracks(self, request: web.Request) -> web.Response:
        ids = tuple(
            part.strip()
            for value in request.query.getall("filter[id]", [])
            for part in value.split(",")
            if part.strip()
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._delay()
            response = self._answer(request, ids)
        finally:
            self.in_flight -= 1
        self.requests.append(TracksRequest(ids, response.status, time.monotonic()))
        return response

    def _answer(self, request: web.Request, ids: tuple[str, ...]) -> web.Response:
        if self.status is not None:
            return _error(self.status, "SERVICE_UNAVAILABLE", "the catalog is unavailable")
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        expiry = self._tokens.get(token)
        if expiry is None or expiry <= time.monotonic():
            return _error(401, "UNAUTHORIZED", "missing, unknown or expired access token")
        accept = request.headers.get("Accept", "*/*")
        if not any(kind in accept for kind in (JSON_API, "*/*", "application/*")):
            return _error(406, "NOT_ACCEPTABLE", f"cannot produce {accept}")
        if self.rate_429 and self._rng.random() < self.rate_429:
            response = _error(429, "RATE_LIMITED", "Rate limit exceeded")
            if self.retry_after is not None:
                response.headers["Retry-After"] = f"{self.retry_after:g}"
            return response
        for name in request.query:
            if (
                name not in _KNOWN_PARAMS
                and name not in _DOCUMENTED_FILTERS
                and not (name.startswith("page[") or name == "sort")
            ):
                return _error(
                    400, "INVALID_QUERY_PARAMETER", f"unknown parameter {name}", parameter=name
                )
        country = request.query.get("countryCode")
        if country is not None and not _COUNTRY.match(country):
            return _error(
                400,
                "INVALID_QUERY_PARAMETER",
                "countryCode must be ISO 3166-1 alpha-2",
                parameter="countryCode",
            )
        includes = [i for i in request.query.get("include", "").split(",") if i]
        unknown = [i for i in includes if i not in _INCLUDES]
        if unknown:
            return _error(
                400, "INVALID_QUERY_PARAMETER", f"cannot include {unknown[0]}", parameter="include"
            )
        if not ids:
            return _error(
                400,
                "INVALID_QUERY_PARAMETER",
                "filter[id] is required here",
                parameter="filter[id]",
            )
        data: list[dict[str, Any]] = []
        included: dict[tuple[str, str], dict[str, Any]] = {}
        for track_id in dict.fromkeys(ids[:MAX_IDS]):  # the rest are dropped silently
            track = self.tracks.get(track_id)
            if track is None or (
                country is not None
                and track.countries is not None
                and country not in track.countries
            ):
                continue
            resource: dict[str, Any] = {
                "id": track.id,
                "type": "tracks",
                "attributes": {
                    "title": track.title,
                    "version": None,
                    "isrc": track.isrc,
                    "duration": "PT3M30S",
                    "explicit": False,
                    "popularity": 0.5,
                    "accessType": "PUBLIC",
                    "key": "UNKNOWN",
                    "keyScale": "UNKNOWN",
                    "mediaTags": ["LOSSLESS"],
                    "externalLinks": [
                        {
                            "href": f"https://tidal.com/browse/track/{track.id}",
                            "meta": {"type": "TIDAL_SHARING"},
                        }
                    ],
                },
            }
            relationships: dict[str, Any] = {}
            if "artists" in includes:
                artist_id = str(abs(hash(track.artist)) % 10**8)
                relationships["artists"] = {"data": [{"id": artist_id, "type": "artists"}]}
                included[("artists", artist_id)] = {
                    "id": artist_id,
                    "type": "artists",
                    "attributes": {"name": track.artist},
                }
            if "albums" in includes:
                album_id = str(abs(hash(track.album)) % 10**8)
                relationships["albums"] = {"data": [{"id": album_id, "type": "albums"}]}
                included[("albums", album_id)] = {
                    "id": album_id,
                    "type": "albums",
                    "attributes": {"title": track.album},
                }
            if relationships:
                resource["relationships"] = relationships
            data.append(resource)
        document = {
            "data": data,
            "included": list(included.values()),
            "links": {"self": request.rel_url.raw_path_qs},
        }
        return web.Response(body=orjson.dumps(document), content_type=JSON_API)

    async def _delay(self) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)

    # -- control surface ---------------------------------------------------------------------------

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "tracks": len(self.tracks),
                "token_requests": self.token_requests,
                "requests": [
                    {"ids": list(r.ids), "status": r.status} for r in self.requests[-1000:]
                ],
                "request_count": len(self.requests),
                "max_in_flight": self.max_in_flight,
                "faults": {
                    "latency": self.latency,
                    "rate_429": self.rate_429,
                    "retry_after": self.retry_after,
                    "status": self.status,
                    "refuse_credentials": self.refuse_credentials,
                },
            }
        )

    async def _faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be an object"}, status=400)
        for name in ("latency", "rate_429", "retry_after", "status", "refuse_credentials"):
            if name in body:
                setattr(self, name, body[name])
        if body.get("expire_tokens"):
            self.expire_tokens()
        return await self._state(request)

    async def _add_tracks(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            self.add(
                StandInTrack(
                    id=str(t["id"]),
                    isrc=t["isrc"],
                    title=t["title"],
                    artist=t.get("artist", "Stand-in Artist"),
                    album=t.get("album", "Album"),
                )
                for t in body
            )
        except (KeyError, TypeError) as exc:
            return web.json_response(
                {"error": f"each track needs id, isrc, title: {exc}"}, status=400
            )
        return await self._state(request)


def main(argv: list[str] | None = None) -> None:
    """``python -m outbox_relay.testing.tidal --port 8765 --tracks 100``."""
    parser = argparse.ArgumentParser(prog="python -m outbox_relay.testing.tidal")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tracks", type=int, default=100, help="tracks from id 100000000")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args(argv)

    async def serve() -> None:
        catalog = CatalogStandIn(album_tracks(args.tracks), latency=args.latency)
        await catalog.start(port=args.port)
        print(orjson.dumps(catalog.environment()).decode(), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await catalog.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
