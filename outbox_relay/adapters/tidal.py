"""The TIDAL catalog (``openapi.tidal.com/v2``): ISRCs of tracks known by catalog id.

The real :class:`~outbox_relay.ports.Catalog`. What it follows (research §1, from TIDAL's
OpenAPI spec and SDK):

- ``GET {base}/tracks?countryCode=..&filter[id]=1,2,..`` with ``Accept:
  application/vnd.api+json`` and a bearer token; at most 20 ids a request (the catalog drops
  the rest silently); an id missing from ``data`` is not found or not available in the country.
- The token: ``POST {auth_url}`` form ``grant_type=client_credentials`` with the client id and
  secret; cached until shortly before ``expires_in`` runs out. A ``/tracks`` 401 (a token the
  catalog stopped taking) fetches a new one once and asks again.
- 429 comes with no headers as documented (``Retry-After`` is honoured when present); 429, 5xx,
  connection errors and timeouts are outages (:class:`CatalogUnavailable`): the caller keeps
  nothing of the call and asks again later. A token endpoint that refuses the credentials is
  :class:`CatalogAuthError`, a configuration error.
- A client-side pace (``requests_per_second``, default 4: the catalog was measured clean at 4/s
  and has 429'd at 1/s for others) with a small burst (default 5, one 100-track album) and at
  most ``concurrency`` requests in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Final

import aiohttp
import orjson
import structlog

from outbox_relay import __version__
from outbox_relay.adapters.http_headers import retry_after_seconds
from outbox_relay.errors import CatalogAuthError, CatalogUnavailable
from outbox_relay.metrics import RelayMetrics
from outbox_relay.ports import CatalogTrack

log = structlog.get_logger(__name__)

MAX_IDS_PER_REQUEST: Final = 20
JSON_API: Final = "application/vnd.api+json"
# The token is renewed this share of its lifetime before it runs out (at most 60 s before).
_RENEW_SHARE: Final = 0.1
_RENEW_MAX: Final = 60.0


class Pace:
    """``per_second`` request starts a second on average, with a burst of ``burst`` after a
    quiet spell (GCRA): an album's few requests go out at once, a backlog is paced.

    The catalog's limit is a token bucket (its observed ``x-ratelimit-burst-capacity`` is 10);
    a burst below that and a rate below the 4/s measured clean keep the relay out of its 429s.
    """

    def __init__(self, per_second: float, burst: int = 1) -> None:
        self._interval = 1.0 / per_second
        self._tolerance = (max(1, burst) - 1) * self._interval
        self._tat = 0.0  # the theoretical arrival time of the next request
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            tat = max(self._tat, now)
            start = max(now, tat - self._tolerance)
            self._tat = tat + self._interval
        if start > now:
            await asyncio.sleep(start - now)


class TidalCatalog:
    """The catalog over one keep-alive aiohttp session."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        country_code: str = "US",
        api_base_url: str = "https://openapi.tidal.com/v2",
        auth_url: str = "https://auth.tidal.com/v1/oauth2/token",
        timeout: float = 5.0,
        requests_per_second: float = 4.0,
        burst: int = 5,
        concurrency: int = 2,
        metrics: RelayMetrics | None = None,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._country_code = country_code
        self._tracks_url = api_base_url.rstrip("/") + "/tracks"
        self._auth_url = auth_url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._pace = Pace(requests_per_second, burst)
        self._slots = asyncio.Semaphore(concurrency)
        self._metrics = metrics
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._token_renew_at = 0.0
        self._token_lock = asyncio.Lock()
        self.token_fetches = 0

    @property
    def country_code(self) -> str:
        return self._country_code

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=16, keepalive_timeout=30),
                headers={"User-Agent": f"outbox-relay/{__version__}"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- lookups ------------------------------------------------------------------------------

    async def tracks(self, tidal_ids: Sequence[str]) -> dict[str, CatalogTrack]:
        ids = list(dict.fromkeys(tidal_ids))
        chunks = [ids[i : i + MAX_IDS_PER_REQUEST] for i in range(0, len(ids), MAX_IDS_PER_REQUEST)]
        results = await asyncio.gather(
            *(self._chunk(chunk) for chunk in chunks), return_exceptions=True
        )
        found: dict[str, CatalogTrack] = {}
        failure: BaseException | None = None
        for result in results:
            if isinstance(result, BaseException):
                # Refused credentials outrank an outage: the operator must act.
                if failure is None or isinstance(result, CatalogAuthError):
                    failure = result
                continue
            found.update(result)
        if failure is not None:
            raise failure
        return found

    async def _chunk(self, ids: list[str]) -> dict[str, CatalogTrack]:
        async with self._slots:
            token = await self._bearer()
            status, body, headers = await self._get_tracks(ids, token)
            if status == 401:
                # The catalog stopped taking this token (expired early, revoked): renew it once.
                self._forget_token(token)
                token = await self._bearer()
                status, body, headers = await self._get_tracks(ids, token)
                if status == 401:
                    raise CatalogAuthError(
                        "the catalog refused a freshly issued token (401 on /tracks): check "
                        "TIDAL_CLIENT_ID / TIDAL_CLIENT_SECRET and the app's access"
                    )
        if status == 200:
            return self._parse(ids, body)
        detail = _error_detail(body)
        if status == 429:
            raise CatalogUnavailable(
                "429", detail or "rate limited", retry_after_seconds(headers.get("Retry-After"))
            )
        cause = "5xx" if status >= 500 else "4xx"
        retry_after = retry_after_seconds(headers.get("Retry-After"))
        raise CatalogUnavailable(cause, f"{status} from /tracks: {detail}", retry_after)

    async def _get_tracks(self, ids: list[str], token: str) -> tuple[int, bytes, dict[str, str]]:
        await self._pace.wait()
        params = {"countryCode": self._country_code, "filter[id]": ",".join(ids)}
        started = time.perf_counter()
        try:
            async with self._client().get(
                self._tracks_url,
                params=params,
                headers={"Accept": JSON_API, "Authorization": f"Bearer {token}"},
                timeout=self._timeout,
            ) as response:
                body = await response.read()
                status = response.status
                headers = dict(response.headers)
        except TimeoutError as exc:
            self._count("tracks", "timeout", started)
            raise CatalogUnavailable(
                "timeout", f"/tracks took over {self._timeout.total} s"
            ) from exc
        except aiohttp.ClientError as exc:
            self._count("tracks", "connection", started)
            raise CatalogUnavailable("connection", f"{type(exc).__name__}: {exc}") from exc
        self._count("tracks", _result_of(status), started)
        if self._metrics is not None:
            self._metrics.catalog_ids_per_request.observe(len(ids))
        return status, body, headers

    def _parse(self, ids: list[str], body: bytes) -> dict[str, CatalogTrack]:
        try:
            document = orjson.loads(body)
            data = document["data"]
            if not isinstance(data, list):
                raise TypeError("data is not an array")
            asked = set(ids)
            found: dict[str, CatalogTrack] = {}
            for resource in data:
                if resource.get("type") != "tracks":
                    continue
                track_id = str(resource["id"])
                attributes = resource.get("attributes") or {}
                isrc = attributes.get("isrc")
                if track_id in asked and isinstance(isrc, str) and isrc:
                    title = attributes.get("title")
                    found[track_id] = CatalogTrack(isrc, title if isinstance(title, str) else None)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            if self._metrics is not None:
                self._metrics.catalog_requests.labels(
                    endpoint="tracks", result="bad_response"
                ).inc()
            raise CatalogUnavailable(
                "bad_response", f"/tracks answered 200 with an unreadable document: {exc}"
            ) from exc
        return found

    # -- the token ------------------------------------------------------------------------------

    def _forget_token(self, token: str) -> None:
        if self._token == token:
            self._token = None

    async def _bearer(self) -> str:
        async with self._token_lock:
            if self._token is not None and time.monotonic() < self._token_renew_at:
                return self._token
            self._token = None
            token, expires_in = await self._fetch_token()
            self._token = token
            self._token_renew_at = (
                time.monotonic() + expires_in - min(_RENEW_MAX, _RENEW_SHARE * expires_in)
            )
            return token

    async def _fetch_token(self) -> tuple[str, float]:
        self.token_fetches += 1
        started = time.perf_counter()
        try:
            async with self._client().post(
                self._auth_url,
                data={
                    "grant_type": "client_credentials",
                    "client_id": self._client_id,
                    "client_secret": self._client_secret,
                },
                timeout=self._timeout,
            ) as response:
                body = await response.read()
                status = response.status
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        except TimeoutError as exc:
            self._count("token", "timeout", started)
            raise CatalogUnavailable("timeout", "the token endpoint did not answer") from exc
        except aiohttp.ClientError as exc:
            self._count("token", "connection", started)
            raise CatalogUnavailable(
                "connection", f"token endpoint: {type(exc).__name__}: {exc}"
            ) from exc
        self._count("token", _result_of(status), started)
        detail = _error_detail(body)
        if status in (400, 401) and ("invalid_client" in detail or status == 401):
            log.error(
                "catalog_auth_error",
                result="error",
                status=status,
                error=detail,
                hint="TIDAL_CLIENT_ID / TIDAL_CLIENT_SECRET are refused by TIDAL_AUTH_URL",
            )
            raise CatalogAuthError(
                f"the catalog's token endpoint refused the client credentials ({status}: "
                f"{detail}): check TIDAL_CLIENT_ID and TIDAL_CLIENT_SECRET"
            )
        if status != 200:
            cause = "429" if status == 429 else "5xx" if status >= 500 else "4xx"
            raise CatalogUnavailable(cause, f"token endpoint: {status}: {detail}", retry_after)
        try:
            document: dict[str, Any] = orjson.loads(body)
            token = document["access_token"]
            expires_in = float(document.get("expires_in") or 3600)
            if not isinstance(token, str) or not token:
                raise TypeError("access_token is not a string")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CatalogUnavailable(
                "bad_response", f"token endpoint answered 200 without a token: {exc}"
            ) from exc
        return token, expires_in

    def _count(self, endpoint: str, result: str, started: float) -> None:
        if self._metrics is None:
            return
        self._metrics.catalog_requests.labels(endpoint=endpoint, result=result).inc()
        self._metrics.catalog_request_duration.observe(time.perf_counter() - started)


def _result_of(status: int) -> str:
    if status < 300:
        return "ok"
    if status == 429:
        return "429"
    if status == 401:
        return "401"
    return "5xx" if status >= 500 else "4xx"


def _error_detail(body: bytes) -> str:
    """The readable part of an error body: JSON:API ``errors[].detail`` or OAuth's
    ``error``/``error_description``, else the body's start."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(document, dict):
        errors = document.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            return str(first.get("detail") or first.get("code") or first.get("status") or "")
        if "error" in document:
            described = document.get("error_description")
            return f"{document['error']}: {described}" if described else str(document["error"])
    return body[:200].decode("utf-8", "replace")
