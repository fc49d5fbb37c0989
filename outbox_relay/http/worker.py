"""The ingestion worker's HTTP surface: the Inngest serve endpoint, ``/healthz``, ``/metrics``.

The functions are served by the official SDK's FastAPI adapter (``inngest.fast_api.serve``) at
``/api/inngest``: ``PUT`` syncs the functions to Inngest, ``POST`` runs a step of a function,
``GET`` describes the app. The SDK has no aiohttp adapter; of the ones it has, FastAPI's is the
one whose handler awaits async functions on the server's own event loop (Tornado's calls the
functions synchronously, Flask's runs each async request on a fresh event loop), so the worker's
asyncpg pool and Qdrant client are shared by all requests, and in ``--with-relay`` mode by the
relay too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import fastapi
import inngest
import inngest.fast_api
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

SERVE_PATH = "/api/inngest"


def create_worker_app(
    client: inngest.Inngest,
    functions: list[inngest.Function[Any]],
    *,
    registry: CollectorRegistry,
    ready: Callable[[], Awaitable[dict[str, bool]]],
) -> fastapi.FastAPI:
    """The ASGI app; ``ready`` returns named checks for ``/readyz``."""
    app = fastapi.FastAPI(
        title="outbox-relay worker", docs_url=None, redoc_url=None, openapi_url=None
    )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = await ready()
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": checks},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics")
    async def metrics() -> fastapi.Response:
        return fastapi.Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    inngest.fast_api.serve(app, client, functions, serve_path=SERVE_PATH)
    return app
