"""The embedders: the built-in lexical one's properties, and the text-embeddings-inference client
against a real HTTP server on loopback that answers as TEI's ``POST /embed`` does."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from outbox_relay.adapters.embeddings import LexicalEmbedder, TeiEmbedder
from outbox_relay.errors import EmbeddingError


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_lexical_vectors_are_unit_length_deterministic_and_never_zero() -> None:
    embedder = LexicalEmbedder(1024)
    texts = ["title: Bohemian Rhapsody\nartist: Queen", "", "   ", "!!!", "日本語のタイトル"]
    first = await embedder.embed(texts)
    again = await LexicalEmbedder(1024).embed(texts)
    assert first == again  # a new instance (or process) gives the same vectors
    for vector in first:
        assert len(vector) == 1024
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-9)
        assert any(vector)


async def test_lexical_similarity_follows_shared_words_and_spellings() -> None:
    embedder = LexicalEmbedder(1024)
    query, near, far = await embedder.embed(
        [
            "title: Bohemian Rhapsody\nartist: Queen\nalbum: A Night at the Opera",
            "title: Bohemian Rhapsody (Live)\nartist: Queen\nalbum: Live Killers",
            "title: Smells Like Teen Spirit\nartist: Nirvana\nalbum: Nevermind",
        ]
    )
    assert cosine(query, near) > cosine(query, far) + 0.2
    # Lexical, not semantic: a synonym shares no letters and gets nothing.
    sad, unhappy = await embedder.embed(["sad", "unhappy"])
    assert abs(cosine(sad, unhappy)) < 0.3


Handler = Callable[[web.Request], Any]


@pytest.fixture
async def tei() -> AsyncIterator[tuple[str, list[Handler]]]:
    """A loopback server whose ``/embed`` answers with ``handlers[0]``."""
    handlers: list[Handler] = []

    async def embed(request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse = await handlers[0](request)
        return response

    app = web.Application()
    app.router.add_post("/embed", embed)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", handlers
    await runner.cleanup()


async def test_tei_posts_inputs_and_returns_the_vectors(
    tei: tuple[str, list[Handler]],
) -> None:
    url, handlers = tei
    seen: list[Any] = []

    async def answer(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        return web.json_response([[0.5, 0.5, 0.5, 0.5] for _ in body["inputs"]])

    handlers.append(answer)
    embedder = TeiEmbedder(url, dimensions=4, timeout=5)
    try:
        assert await embedder.embed(["a", "b"]) == [[0.5] * 4, [0.5] * 4]
    finally:
        await embedder.close()
    assert seen == [{"inputs": ["a", "b"]}]


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (503, b"model is loading", "answered 503"),
        (200, b"<html>", "not JSON"),
        (200, b"[[1.0, 2.0]]", "returns 2 dimensions but EMBEDDING_DIMENSIONS is 4"),
        (200, b'{"error": "x"}', "expected a list of 1 vectors"),
        (200, b'[["a", "b", "c", "d"]]', "other than numbers"),
    ],
)
async def test_tei_errors_are_embedding_errors(
    tei: tuple[str, list[Handler]], status: int, body: bytes, message: str
) -> None:
    url, handlers = tei

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, content_type="application/json")

    handlers.append(answer)
    embedder = TeiEmbedder(url, dimensions=4, timeout=5)
    try:
        with pytest.raises(EmbeddingError, match=re.escape(message)):
            await embedder.embed(["a"])
    finally:
        await embedder.close()


async def test_tei_down_is_an_embedding_error() -> None:
    embedder = TeiEmbedder("http://127.0.0.1:9", dimensions=4, timeout=2)
    try:
        with pytest.raises(EmbeddingError, match=re.escape("127.0.0.1:9")):
            await embedder.embed(["a"])
    finally:
        await embedder.close()
