"""JSON answers for aiohttp's own errors (404, 405, 413, ...), for every HTTP surface.

aiohttp answers an unknown path, a wrong method or an oversized body with a plain-text page.
A client of a JSON API then has to special-case those; with this middleware every error of
every surface is ``{"error": "<snake_case>", "detail": "<what to do>"}`` with the same status
and headers (``Allow`` on a 405 stays).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Headers of aiohttp's error response that describe the plain-text body it replaced.
_BODY_HEADERS: Final = frozenset({"content-type", "content-length", "content-encoding"})


def error_code(status: int, reason: str) -> str:
    """``404, "Not Found"`` → ``not_found``; 413's old reason gets its current name."""
    if status == 413:
        return "payload_too_large"
    return "_".join(reason.lower().replace("-", " ").split()) or f"http_{status}"


def _detail(request: web.Request, exc: web.HTTPException, max_body_bytes: int | None) -> str:
    if isinstance(exc, web.HTTPNotFound):
        return f"no route for {request.method} {request.path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = max_body_bytes if max_body_bytes is not None else "the limit of"
        return f"the body must be at most {limit} bytes"
    return exc.text or exc.reason


def json_errors(
    *, max_body_bytes: int | None = None
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A middleware answering aiohttp's HTTP errors (status >= 400) as JSON.

    Handlers that already answer JSON are left alone; so are redirects and successes.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            headers = {k: v for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS}
            return web.json_response(
                {
                    "error": error_code(exc.status, exc.reason),
                    "detail": _detail(request, exc, max_body_bytes),
                },
                status=exc.status,
                headers=headers,
            )

    return middleware
