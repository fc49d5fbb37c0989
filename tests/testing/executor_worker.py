"""A worker process for the executor's kill test: one function served by the real SDK and uvicorn.

``python tests/testing/executor_worker.py --port P --standin URL --state DIR`` serves
``executor-kill-test-slow-step`` at ``http://127.0.0.1:P/api/inngest`` with its SDK client pointed
at the stand-in. Its ``slow`` step writes ``DIR/entered-<n>`` on entry; the first time it then
waits forever — so the test can kill the process in the middle of the step. Later attempts
finish the step at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import fastapi
import inngest
import inngest.fast_api
import uvicorn


def _enter(state: Path) -> int:
    """Record an entry into the slow step; returns its number (1 for the first)."""
    number = len(list(state.glob("entered-*"))) + 1
    (state / f"entered-{number}").write_text(str(os.getpid()))
    return number


def build(standin: str, state: Path) -> fastapi.FastAPI:
    client = inngest.Inngest(
        app_id="executor-kill-test",
        is_production=False,
        api_base_url=standin,
        event_api_base_url=standin,
    )

    @client.create_function(
        fn_id="slow-step",
        trigger=inngest.TriggerEvent(event="test/slow"),
        retries=8,
    )
    async def slow_step(ctx: inngest.Context) -> dict[str, object]:
        before = await ctx.step.run("before", lambda: {"pid": os.getpid()})

        async def slow() -> dict[str, object]:
            if _enter(state) == 1:
                await asyncio.Event().wait()  # never set: the test kills this process here
            return {"pid": os.getpid(), "attempt": ctx.attempt}

        done = await ctx.step.run("slow", slow)
        return {"before": before, "slow": done}

    app = fastapi.FastAPI()
    inngest.fast_api.serve(app, client, [slow_step])
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--standin", required=True)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args()
    uvicorn.run(
        build(args.standin, args.state), host="127.0.0.1", port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
