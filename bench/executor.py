"""What the Inngest stand-in's executor costs, so the worker's benchmark can say where time goes.

``python -m bench.executor [--runs 1000] [--steps 3] [--concurrency 10]`` runs the stand-in (Event
API and executor) in this process and an SDK app in a child process (the official SDK's FastAPI
adapter under uvicorn, as the worker serves), sends ``--runs`` events with the SDK's ``send`` and
waits until every run of a ``--steps``-step function completed. The steps do nothing, so the
figures are the machinery's: runs and requests a second, a run's latency from its event to its
end, a request's round trip as the executor sees it, and the CPU time each side spent per request
(this process: the stand-in and the SDK client sending the events; the child: uvicorn and the
SDK, from ``/proc``, so its start-up is left out). ``--serve`` is the child's mode. Linux only.

On a shared machine the absolute numbers drift; the CPU per request is the steadier figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import sys
import time
from typing import Any

APP_ID = "bench-executor"
FUNCTION_ID = f"{APP_ID}-steps"


def serve_app(port: int, standin: str, steps: int, concurrency: int) -> None:
    """The child: serve a function of ``steps`` empty steps at ``/api/inngest``."""
    import fastapi
    import inngest
    import inngest.fast_api
    import uvicorn

    client = inngest.Inngest(
        app_id=APP_ID, is_production=False, api_base_url=standin, event_api_base_url=standin
    )

    @client.create_function(
        fn_id="steps",
        trigger=inngest.TriggerEvent(event="bench/steps"),
        concurrency=[inngest.Concurrency(limit=concurrency)] if concurrency else None,
    )
    async def run_steps(ctx: inngest.Context) -> int:
        for n in range(steps):
            await ctx.step.run(f"step-{n}", lambda n=n: n)  # type: ignore[misc]
        return steps

    app = fastapi.FastAPI()
    inngest.fast_api.serve(app, client, [run_steps])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_s(pid: int) -> float:
    """A running process's CPU time from /proc (user + system), so its start-up is left out."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(runs: int, steps: int, concurrency: int | None) -> dict[str, Any]:
    """Run the benchmark; returns its figures."""
    import inngest

    from outbox_relay.testing.inngest import EventApiStandIn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    async with EventApiStandIn() as standin:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.executor",
            "--serve",
            f"--port={port}",
            f"--standin={standin.base_url}",
            f"--steps={steps}",
            f"--concurrency={concurrency or 0}",
        )
        try:
            await standin.sync(f"http://127.0.0.1:{port}/api/inngest", wait_for_app_s=60)
            client = inngest.Inngest(
                app_id="bench-sender",
                is_production=False,
                event_api_base_url=standin.base_url,
                api_base_url=standin.base_url,
            )
            cpu0, app0, t0 = _cpu_s(), _process_cpu_s(child.pid), time.perf_counter()
            for start in range(0, runs, 500):
                batch = range(start, min(runs, start + 500))
                await client.send([inngest.Event(name="bench/steps", data={"n": n}) for n in batch])
            await standin.executor.wait_for_status(FUNCTION_ID, "completed", runs, timeout=600)
            elapsed = time.perf_counter() - t0
            cpu_standin = _cpu_s() - cpu0
            cpu_app = _process_cpu_s(child.pid) - app0
        finally:
            child.send_signal(signal.SIGTERM)
            await child.wait()
        done = standin.executor.runs_of(FUNCTION_ID, "completed")
        latencies = [(r.ended_at or 0.0) - r.created_at for r in done]
        trips = [q.duration_ms for r in done for q in r.requests]
    requests = len(trips)
    return {
        "runs": runs,
        "steps": steps,
        "concurrency": concurrency or 0,
        "requests": requests,
        "seconds": round(elapsed, 3),
        "runs_per_s": round(runs / elapsed, 1),
        "requests_per_s": round(requests / elapsed, 1),
        "run_latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "run_latency_p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
        "request_p50_ms": round(statistics.median(trips), 2),
        "request_p99_ms": round(_percentile(trips, 0.99), 2),
        "standin_cpu_ms_per_request": round(cpu_standin * 1000 / requests, 3),
        "app_cpu_ms_per_request": round(cpu_app * 1000 / requests, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.executor", description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=10, help="0: no limit")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--standin", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_app(args.port, args.standin, args.steps, args.concurrency)
        return 0
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    figures = asyncio.run(measure(args.runs, args.steps, args.concurrency or None))
    figures["cores"] = os.cpu_count() or 1
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
