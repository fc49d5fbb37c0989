"""The relay's HTTP surface: ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` says the process is alive; ``/readyz`` says it can do its job (database reachable,
LISTEN connection up), so an orchestrator can tell a stuck relay from a busy one.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from outbox_relay.http.errors import json_errors


def create_app(
    *,
    registry: CollectorRegistry,
    ready: Callable[[], dict[str, bool]],
    problems: Callable[[], dict[str, str]] | None = None,
) -> web.Application:
    """``ready`` returns named checks; the relay is ready when all are true.

    ``problems`` says why each failing check fails; ``/readyz`` answers it as ``reasons``.
    """

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks = ready()
        ok = all(checks.values())
        body: dict[str, object] = {"status": "ready" if ok else "not_ready", "checks": checks}
        if not ok:
            known = problems() if problems is not None else {}
            body["reasons"] = {
                name: known.get(name, "failing") for name, passed in checks.items() if not passed
            }
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    # Errors of routing (404, 405) answer JSON like the endpoints, admin ones included.
    app = web.Application(middlewares=[json_errors()])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Starts serving ``app``; returns the runner and the bound port (``port=0`` picks one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, int(runner.addresses[0][1])
