"""Embedders for the ingestion worker: a text-embeddings-inference client and a built-in one.

- :class:`TeiEmbedder`: ``POST {EMBEDDING_URL}/embed {"inputs": [...]}`` → ``[[float, ...], ...]``,
  the API of Hugging Face's text-embeddings-inference server, as the seed system uses it (with
  ``mixedbread-ai/mxbai-embed-large-v1``, 1024 dimensions).
- :class:`LexicalEmbedder`: the offline default when ``EMBEDDING_URL`` is unset. It is
  **lexical, not semantic**: texts that share words and spellings get close vectors, texts that
  mean the same in other words do not. Signed feature hashing of character trigrams (of each word
  padded with spaces) and of whole words into ``EMBEDDING_DIMENSIONS`` buckets, L2-normalised.
  Deterministic across processes and machines (BLAKE2b, not Python's salted ``hash``), and never
  a zero vector (which has no direction under Cosine). Good enough for the pipeline, for
  exact-ish title search and for tests; use a real model for search that understands meaning.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Sequence
from typing import Any, Final

import aiohttp
import orjson

from outbox_relay.errors import EmbeddingError

_WORD: Final = re.compile(r"\w+")
# Whole words weigh more than any one of their trigrams: a shared word is strong evidence.
_WORD_WEIGHT: Final = 2.0
_EMPTY_FEATURE: Final = "\x00empty"


class LexicalEmbedder:
    """Hashed character trigrams and words, L2-normalised (see the module docstring)."""

    name: Final = "builtin-lexical"

    def __init__(self, dimensions: int) -> None:
        if dimensions < 2:
            raise ValueError("EMBEDDING_DIMENSIONS must be at least 2")
        self._dimensions = dimensions

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def _bucket(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        # The lowest bit is the sign, the rest the bucket: collisions cancel out on average
        # instead of piling up (signed feature hashing).
        return (value >> 1) % self._dimensions, (1.0 if value & 1 else -1.0)

    def embed_one(self, text: str) -> list[float]:
        vector = [0.0] * self._dimensions
        normalised = unicodedata.normalize("NFKC", text).casefold()
        for word in _WORD.findall(normalised):
            index, sign = self._bucket("w:" + word)
            vector[index] += sign * _WORD_WEIGHT
            padded = f" {word} "
            for start in range(len(padded) - 2):
                index, sign = self._bucket("c:" + padded[start : start + 3])
                vector[index] += sign
        norm = math.sqrt(sum(x * x for x in vector))
        if norm == 0.0:
            # No words at all (or features that cancelled out): one fixed direction.
            index, sign = self._bucket(_EMPTY_FEATURE)
            vector = [0.0] * self._dimensions
            vector[index] = sign
            return vector
        return [x / norm for x in vector]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_one(text) for text in texts]

    async def close(self) -> None:
        return None


class TeiEmbedder:
    """A text-embeddings-inference server over HTTP (one keep-alive session)."""

    name: Final = "tei"

    def __init__(self, url: str, dimensions: int, timeout: float) -> None:
        self._url = url.rstrip("/") + "/embed"
        self._dimensions = dimensions
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        body = orjson.dumps({"inputs": list(texts)})
        try:
            async with self._client().post(
                self._url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            raise EmbeddingError(f"{self._url}: no answer within the timeout") from None
        except aiohttp.ClientError as exc:
            raise EmbeddingError(f"{self._url}: {type(exc).__name__}: {exc}") from None
        if status != 200:
            snippet = raw[:200].decode("utf-8", "replace")
            raise EmbeddingError(f"{self._url} answered {status}: {snippet}")
        try:
            vectors: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise EmbeddingError(f"{self._url}: the answer is not JSON") from None
        if (
            not isinstance(vectors, list)
            or len(vectors) != len(texts)
            or not all(isinstance(v, list) for v in vectors)
        ):
            raise EmbeddingError(
                f"{self._url}: expected a list of {len(texts)} vectors, got {str(vectors)[:120]}"
            )
        for vector in vectors:
            if len(vector) != self._dimensions:
                raise EmbeddingError(
                    f"{self._url}: the model returns {len(vector)} dimensions but "
                    f"EMBEDDING_DIMENSIONS is {self._dimensions}; set it to the model's size"
                )
            if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in vector):
                raise EmbeddingError(f"{self._url}: a vector holds something other than numbers")
        return [[float(x) for x in vector] for vector in vectors]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
