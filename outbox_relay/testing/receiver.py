"""A minimal Event API receiver: counts events and acknowledges them, nothing else.

The stand-in (:mod:`outbox_relay.testing.inngest`) is faithful to the Event API and records
every event, and that work costs CPU on the same cores as the relay: measured against it, a
relay and a raw loop both wait on it, and the relay's own cost hides. This receiver does the
least an Event API does: it parses the JSON array, answers ``{"ids": [...], "status": 200}``
with one id per event (as Inngest does) and adds their number to a counter. On uvloop when it is
installed (the ``test`` extra installs it).

``python -m outbox_relay.testing.receiver [--port 0]`` prints one JSON line
``{"base_url": ...}`` once it listens, and serves until SIGTERM. Besides ``POST /e/{key}``:

- ``GET /_receiver/wait?events=N&timeout=S``: answers once N events were counted since the last
  reset (200, ``{"events": n, "at": time.time()}``), or 408 after S seconds;
- ``POST /_receiver/reset[?times=1]``: sets the counter to zero; with ``times=1`` the receiver
  also notes each event's id and the time its request arrived, until the next reset (B2's
  latencies: one dictionary entry an event, off by default so B1 pays nothing for it);
- ``GET /_receiver/received``: those times, ``{"events": {id: time.time()}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

import orjson
from aiohttp import web


class Counter:
    """Events received since the last reset, and who is waiting for a count."""

    def __init__(self) -> None:
        self.events = 0
        self.reached_at = 0.0
        # event id -> when its request arrived, while a round asked for times (reset(times=True))
        self.times: dict[str, float] | None = None
        self._waiters: list[tuple[int, asyncio.Future[float]]] = []

    def add(self, count: int) -> None:
        self.events += count
        if not self._waiters:
            return
        now = time.time()
        still: list[tuple[int, asyncio.Future[float]]] = []
        for target, future in self._waiters:
            if self.events >= target:
                if not future.done():
                    future.set_result(now)
            else:
                still.append((target, future))
        self._waiters = still

    def reset(self, *, times: bool = False) -> None:
        self.events = 0
        self.times = {} if times else None

    async def wait(self, target: int, timeout: float) -> float | None:
        """The time (time.time) when the counter reached ``target``; None after ``timeout``."""
        if self.events >= target:
            return time.time()
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None


def make_app(counter: Counter) -> web.Application:
    async def events(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        sent = body if isinstance(body, list) else [body]
        count = len(sent)
        if counter.times is not None:
            now = time.time()
            for event in sent:
                counter.times[str(event.get("id"))] = now
        counter.add(count)
        # One id per event, as the Event API answers (ULIDs there; their content is not used).
        return web.Response(
            body=orjson.dumps({"ids": ["01"] * count, "status": 200}),
            content_type="application/json",
        )

    async def wait(request: web.Request) -> web.Response:
        target = int(request.query.get("events", "0"))
        timeout = float(request.query.get("timeout", "60"))
        at = await counter.wait(target, timeout)
        if at is None:
            return web.json_response({"events": counter.events, "error": "timeout"}, status=408)
        return web.json_response({"events": counter.events, "at": at})

    async def reset(request: web.Request) -> web.Response:
        counter.reset(times=request.query.get("times") == "1")
        return web.json_response({"events": 0})

    async def received(_request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps({"events": counter.times or {}}), content_type="application/json"
        )

    app = web.Application()
    app.router.add_post("/e/{key}", events)
    app.router.add_get("/_receiver/wait", wait)
    app.router.add_post("/_receiver/reset", reset)
    app.router.add_get("/_receiver/received", received)
    return app


async def serve(host: str, port: int) -> None:
    counter = Counter()
    runner = web.AppRunner(make_app(counter), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    print(json.dumps({"base_url": f"http://{host}:{bound}"}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m outbox_relay.testing.receiver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import uvloop  # optional: the test extra installs it
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
