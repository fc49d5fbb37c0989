"""Which tracks the Qdrant index already holds: one ``retrieve`` for a whole batch.

Embedded local mode (a folder) by default, a server when ``QDRANT_URL`` is set. A missing
collection means nothing is indexed yet; any other error or a timeout raises
:class:`IndexCheckError` and the relay publishes anyway (fail open).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from qdrant_client import AsyncQdrantClient

from outbox_relay.errors import IndexCheckError


class QdrantIndexChecker:
    """The real :class:`~outbox_relay.ports.IndexChecker`."""

    def __init__(self, client: AsyncQdrantClient, collection: str, timeout: float) -> None:
        self._client = client
        self._collection = collection
        self._timeout = timeout

    @classmethod
    def connect(
        cls,
        *,
        url: str | None,
        path: str,
        collection: str,
        timeout: float,
        api_key: str | None = None,
    ) -> QdrantIndexChecker:
        if url:
            # The client's compatibility check stays on: a thread asks the server its version
            # and warns at start-up when major versions differ or minors are more than one apart
            # (docker-compose.yml pins the server to the client's minor version).
            client = AsyncQdrantClient(url=url, api_key=api_key, timeout=max(1, int(timeout)))
        else:
            Path(path).mkdir(parents=True, exist_ok=True)
            client = AsyncQdrantClient(path=path)
        return cls(client, collection, timeout)

    async def indexed(self, point_ids: Sequence[str]) -> set[str]:
        if not point_ids:
            return set()
        try:
            # One deadline for the lookup and, if it fails, the question whether the
            # collection exists at all: the check never takes longer than its timeout.
            async with asyncio.timeout(self._timeout):
                try:
                    records = await self._client.retrieve(
                        self._collection,
                        ids=list(point_ids),
                        with_payload=False,
                        with_vectors=False,
                    )
                except Exception as exc:  # any client failure is an index outage
                    if await self._collection_missing():
                        return set()
                    raise IndexCheckError(f"{type(exc).__name__}: {exc}") from exc
        except TimeoutError:
            raise IndexCheckError(f"no answer within {self._timeout} s") from None
        return {str(record.id) for record in records}

    async def _collection_missing(self) -> bool:
        try:
            return not await self._client.collection_exists(self._collection)
        except Exception:  # cannot tell: report the original error
            return False

    async def close(self) -> None:
        await self._client.close()
