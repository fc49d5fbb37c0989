"""Qdrant: the relay's existence check and the ingestion worker's point writer.

Embedded local mode (a folder) by default, a server when ``QDRANT_URL`` is set. Embedded Qdrant
locks its folder to one process, so a relay and a worker that must see the same points either
share a server or share one client in one process (``outbox-relay worker --with-relay``); both
classes take a client they may or may not own for that reason.

- :class:`QdrantIndexChecker`: which tracks the index holds, one ``retrieve`` for a whole batch.
  A missing collection means nothing is indexed yet; any other error or a timeout raises
  :class:`IndexCheckError` and the relay publishes anyway (fail open).
- :class:`QdrantPointWriter`: upserts a track's point and creates a missing collection with the
  seed system's schema; any failure raises :class:`PointWriteError` (the step is retried).
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from qdrant_client import AsyncQdrantClient, models

from outbox_relay.domain.ingestion import ISRC_PAYLOAD_KEY, VECTOR_NAME, TrackPoint
from outbox_relay.errors import IndexCheckError, PointWriteError

# The seed system's search service also declares this sparse vector (BM25-style, IDF); the worker
# never writes it, but a collection created here has it so that service can use the collection.
SPARSE_VECTOR_NAME = "text_sparse"


def open_client(
    *,
    url: str | None,
    path: str,
    timeout: float,
    api_key: str | None = None,
    own_thread: bool = False,
) -> AsyncQdrantClient:
    """A client for ``QDRANT_URL``, or an embedded one on the folder ``path`` (created).

    ``own_thread`` (embedded mode only) runs the embedded engine on a thread of its own, see
    :class:`EmbeddedQdrantThread`.
    """
    if url:
        # The client's compatibility check stays on: a thread asks the server its version and
        # warns at start-up when major versions differ or minors are more than one apart
        # (docker-compose.yml pins the server to the client's minor version).
        return AsyncQdrantClient(url=url, api_key=api_key, timeout=max(1, int(timeout)))
    Path(path).mkdir(parents=True, exist_ok=True)
    if own_thread:
        # Same methods as the client it wraps; typed as one so the check and writer take either.
        return cast(AsyncQdrantClient, EmbeddedQdrantThread(path))
    return AsyncQdrantClient(path=path)


class EmbeddedQdrantThread:
    """An embedded (local-mode) ``AsyncQdrantClient`` living on a thread and event loop of its own.

    In local mode the client runs the engine's synchronous code on the caller's event loop, and a
    write with ``wait=True`` flushes its SQLite file there: measured, 21 ms of wall time for
    1.4 ms of CPU, during which nothing else in the process runs (docs/performance.md). Here every
    call is sent to the client's own loop and awaited from the caller's, so the caller's loop
    keeps serving while the disk flushes. The engine's SQLite objects never leave that thread
    (SQLite refuses to be used from another), and calls run one after another, as the engine
    expects. Calls are the client's own coroutine methods (``retrieve``, ``upsert``, ...).
    """

    def __init__(self, path: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="qdrant-embedded", daemon=True
        )
        self._thread.start()
        self._closed = False

        async def open_on_thread() -> AsyncQdrantClient:
            return AsyncQdrantClient(path=path)

        try:
            self._client = asyncio.run_coroutine_threadsafe(open_on_thread(), self._loop).result()
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # our own attributes, before __init__ set them
            raise AttributeError(name)
        method = getattr(self._client, name)
        if not asyncio.iscoroutinefunction(method):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            future = asyncio.run_coroutine_threadsafe(method(*args, **kwargs), self._loop)
            return await asyncio.wrap_future(future)

        return call

    async def close(self) -> None:
        """Closes the client on its thread, then ends the thread (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self._client.close(), self._loop)
            )
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join, 10)
            self._loop.close()


class QdrantIndexChecker:
    """The real :class:`~outbox_relay.ports.IndexChecker`."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        collection: str,
        timeout: float,
        *,
        owns_client: bool = True,
    ) -> None:
        self._client = client
        self._collection = collection
        self._timeout = timeout
        self._owns_client = owns_client

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
        client = open_client(url=url, path=path, timeout=timeout, api_key=api_key)
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
        if self._owns_client:
            await self._client.close()


class QdrantPointWriter:
    """The real :class:`~outbox_relay.ports.PointWriter`.

    The collection is checked (or created) on the first write and again whenever a write fails
    because it has gone. A collection whose ``interpretation_embedding`` vector is missing or of
    another size is refused with a message that says so: writing there would break search.
    """

    def __init__(
        self,
        client: AsyncQdrantClient,
        collection: str,
        dimensions: int,
        timeout: float,
        *,
        owns_client: bool = True,
    ) -> None:
        self._client = client
        self._collection = collection
        self._dimensions = dimensions
        self._timeout = timeout
        self._owns_client = owns_client
        self._ready = False

    async def upsert(self, point: TrackPoint) -> None:
        if len(point.vector) != self._dimensions:
            raise PointWriteError(
                f"the vector has {len(point.vector)} dimensions, the collection "
                f"{self._collection!r} takes {self._dimensions} (EMBEDDING_DIMENSIONS)"
            )
        struct = models.PointStruct(
            id=point.id, vector={VECTOR_NAME: point.vector}, payload=point.payload
        )
        try:
            async with asyncio.timeout(self._timeout):
                if not self._ready:
                    await self._ensure_collection()
                try:
                    await self._client.upsert(self._collection, points=[struct], wait=True)
                except Exception:
                    if await self._client.collection_exists(self._collection):
                        raise
                    # Deleted since we last looked: create it again and write once more.
                    self._ready = False
                    await self._ensure_collection()
                    await self._client.upsert(self._collection, points=[struct], wait=True)
        except PointWriteError:
            raise
        except TimeoutError:
            raise PointWriteError(
                f"Qdrant did not take the point within {self._timeout} s "
                "(OUTBOX_QDRANT_WRITE_TIMEOUT)"
            ) from None
        except Exception as exc:  # any client failure is an index outage for this step
            raise PointWriteError(f"{type(exc).__name__}: {exc}") from exc

    async def _ensure_collection(self) -> None:
        if not await self._client.collection_exists(self._collection):
            try:
                await self._client.create_collection(
                    self._collection,
                    vectors_config={
                        VECTOR_NAME: models.VectorParams(
                            size=self._dimensions,
                            distance=models.Distance.COSINE,
                            datatype=models.Datatype.FLOAT16,
                        )
                    },
                    sparse_vectors_config={
                        SPARSE_VECTOR_NAME: models.SparseVectorParams(modifier=models.Modifier.IDF)
                    },
                )
            except Exception:
                # Another worker may have created it in between; if so, use theirs.
                if not await self._client.collection_exists(self._collection):
                    raise
            with warnings.catch_warnings():
                # Embedded Qdrant warns that payload indexes do nothing locally; a server uses it.
                warnings.simplefilter("ignore", UserWarning)
                await self._client.create_payload_index(
                    self._collection, ISRC_PAYLOAD_KEY, models.PayloadSchemaType.KEYWORD
                )
        await self._check_schema()
        self._ready = True

    async def _check_schema(self) -> None:
        info = await self._client.get_collection(self._collection)
        vectors = info.config.params.vectors
        params = vectors.get(VECTOR_NAME) if isinstance(vectors, dict) else None
        if params is None:
            raise PointWriteError(
                f"the collection {self._collection!r} has no named vector {VECTOR_NAME!r}: it was "
                "created by something else; point QDRANT_COLLECTION at another collection"
            )
        if params.size != self._dimensions:
            raise PointWriteError(
                f"the collection {self._collection!r} holds {params.size}-dimensional "
                f"{VECTOR_NAME!r} vectors but EMBEDDING_DIMENSIONS is {self._dimensions}"
            )

    async def close(self) -> None:
        if self._owns_client:
            await self._client.close()
