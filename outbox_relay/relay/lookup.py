"""ISRCs for tracks known only by their TIDAL catalog id: the cache first, then the catalog.

The relay loop asks :class:`IsrcLookup` once per batch, before its Qdrant check, for the
distinct catalog ids of the claimed rows that have no ISRC. The answer sorts each id into one
of three:

- **found**: the cache (``outbox.catalog_tracks``) or the catalog returned its ISRC;
- **unknown**: the catalog answered without it (not found, or not available in the country):
  the row ends as ``missing_isrc``; the answer is cached so it is not asked again for a while;
- **deferred**: the catalog could not answer (outage, 429, refused credentials) or lookups are
  paused after one: the row goes back to the outbox uncharged, claimable again when the pause
  ends. Rows that need no lookup are not held up by any of this.

A pause grows with capped, jittered backoff (at least ``Retry-After`` when the catalog sends
one); the first batch after it ends is the probe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from outbox_relay.backoff import Backoff
from outbox_relay.db.connection import CONNECTION_ERRORS
from outbox_relay.errors import CatalogAuthError, CatalogUnavailable
from outbox_relay.metrics import RelayMetrics
from outbox_relay.ports import Catalog, CatalogCache

log = structlog.get_logger("outbox_relay.relay")

NOT_CONFIGURED = (
    "no catalog configured: set TIDAL_CLIENT_ID and TIDAL_CLIENT_SECRET; rows added by "
    "TIDAL id wait until then"
)


@dataclass(slots=True)
class Lookup:
    """One batch's answer, by catalog id."""

    isrcs: dict[str, str] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)
    deferred: set[str] = field(default_factory=set)
    # when deferred rows may be claimed again, in seconds from now
    retry_in: float = 0.0
    # ids sent to the catalog in this lookup (0 when the cache answered everything)
    asked: int = 0


class IsrcLookup:
    """The cache in front of the catalog, with the pause after an outage."""

    def __init__(
        self,
        *,
        catalog: Catalog | None,
        cache: CatalogCache | None,
        metrics: RelayMetrics,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._catalog = catalog
        self._cache = cache
        self._metrics = metrics
        self._backoff = Backoff(backoff_base, backoff_cap, floor=backoff_base)
        self._cap = backoff_cap
        self._clock = clock
        self._paused_until = 0.0
        self._paused_since: float | None = None
        # Why lookups cannot work until an operator acts (refused credentials), for /readyz.
        self.problem: str | None = None

    @property
    def configured(self) -> bool:
        return self._catalog is not None

    @property
    def paused(self) -> bool:
        return self._paused_since is not None

    async def resolve(self, tidal_ids: Sequence[str], deadline: float | None = None) -> Lookup:
        """``deadline`` (on ``clock``): the catalog's answer must come by then, or the rows are
        deferred as in an outage; the batch's lease must hold the lookup and the publish."""
        ids = list(dict.fromkeys(tidal_ids))
        answer = Lookup()
        misses = await self._from_cache(ids, answer)
        if misses:
            await self._from_catalog(misses, answer, deadline)
        return answer

    async def _from_cache(self, ids: list[str], answer: Lookup) -> list[str]:
        if self._cache is None:
            return ids
        try:
            cached = await self._cache.cached(ids)
        except CONNECTION_ERRORS as exc:
            log.warning(
                "catalog_cache_error",
                error=f"{type(exc).__name__}: {exc}",
                action="asking the catalog for every id",
            )
            return ids
        misses: list[str] = []
        for tidal_id in ids:
            if tidal_id not in cached:
                misses.append(tidal_id)
                continue
            track = cached[tidal_id]
            if track is None:
                answer.unknown.add(tidal_id)
                self._metrics.catalog_cache_hits.labels(kind="unknown").inc()
            else:
                answer.isrcs[tidal_id] = track.isrc
                self._metrics.catalog_cache_hits.labels(kind="found").inc()
        self._metrics.catalog_lookups.labels(result="cached").inc(len(ids) - len(misses))
        return misses

    async def _from_catalog(
        self, misses: list[str], answer: Lookup, deadline: float | None
    ) -> None:
        now = self._clock()
        if self._catalog is None:
            self._defer(misses, answer, self._cap)
            log.error(
                "catalog_not_configured", result="error", ids=len(misses), error=NOT_CONFIGURED
            )
            return
        if now < self._paused_until:
            self._defer(misses, answer, self._paused_until - now)
            return
        answer.asked = len(misses)
        budget = None if deadline is None else max(0.0, deadline - now)
        try:
            async with asyncio.timeout(budget):
                found = await self._catalog.tracks(misses)
        except TimeoutError:
            detail = f"no answer for {len(misses)} ids within the batch's {budget:.1f} s"
            self._pause(misses, answer, "timeout", detail, None)
            return
        except CatalogAuthError as exc:
            self.problem = str(exc)
            self._pause(misses, answer, "auth", str(exc), None)
            return
        except CatalogUnavailable as exc:
            self._pause(misses, answer, exc.cause, exc.detail, exc.retry_after)
            return
        self._resume()
        unknown = [tidal_id for tidal_id in misses if tidal_id not in found]
        for tidal_id, track in found.items():
            answer.isrcs[tidal_id] = track.isrc
        answer.unknown.update(unknown)
        self._metrics.catalog_lookups.labels(result="found").inc(len(found))
        self._metrics.catalog_lookups.labels(result="unknown").inc(len(unknown))
        if self._cache is not None:
            try:
                await self._cache.remember(dict(found), unknown)
            except CONNECTION_ERRORS as exc:
                log.warning(
                    "catalog_cache_error",
                    error=f"{type(exc).__name__}: {exc}",
                    action="answer used but not cached; the next add of these ids asks again",
                )

    def _defer(self, ids: list[str], answer: Lookup, retry_in: float) -> None:
        answer.deferred.update(ids)
        answer.retry_in = max(answer.retry_in, retry_in)
        self._metrics.catalog_lookups.labels(result="deferred").inc(len(ids))

    def _pause(
        self,
        ids: list[str],
        answer: Lookup,
        cause: str,
        detail: str,
        retry_after: float | None,
    ) -> None:
        delay = max(retry_after or 0.0, self._backoff.next_delay())
        now = self._clock()
        self._paused_until = now + delay
        if self._paused_since is None:
            self._paused_since = now
        self._metrics.catalog_paused.set(1)
        self._defer(ids, answer, delay)
        paused_for = now - self._paused_since
        level = log.error if cause == "auth" or self._backoff.failures >= 5 else log.warning
        level(
            "catalog_error",
            result="error",
            reason=cause,
            error=detail,
            ids=len(ids),
            retry_in_s=round(delay, 3),
            paused_s=round(paused_for, 1),
            action="rows handed back uncharged; lookups paused",
        )

    def _resume(self) -> None:
        if self._paused_since is not None:
            log.info(
                "catalog_recovered",
                paused_s=round(self._clock() - self._paused_since, 1),
                failures=self._backoff.failures,
            )
        self._paused_since = None
        self._paused_until = 0.0
        self._backoff.reset()
        self.problem = None
        self._metrics.catalog_paused.set(0)
