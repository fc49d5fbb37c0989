"""The stand-in as Inngest's executor, driving the REAL SDK over real HTTP.

Each test defines small functions with the official ``inngest`` client, serves them with the SDK's
FastAPI adapter under uvicorn on a loopback port (in this process, or in a child process for the
kill test), syncs them into the stand-in with ``PUT`` and sends events to the stand-in's Event API
with the SDK's own ``send``. Nothing of the SDK is copied or mocked: if the executor spoke the
protocol wrongly, the SDK would refuse its requests or the steps would not be memoised.

Retries use Inngest's backoff table scaled down (``retry_base_s``), so the schedule is the real
one in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import fastapi
import inngest
import inngest.fast_api
import orjson
import pytest
import uvicorn

from outbox_relay.testing.inngest import EventApiStandIn
from outbox_relay.testing.inngest.cel import ExpressionError, compile_expression
from outbox_relay.testing.inngest.executor import (
    BACKOFF_TABLE_S,
    FUNCTION_FAILED_EVENT,
    RunRecord,
    SyncError,
)

BASE_S = 0.05  # the first retry delay; Inngest's is 15 s
SCALE = BASE_S / BACKOFF_TABLE_S[0]
APP = "exec-test"
ROOT = Path(__file__).resolve().parents[2]
WORKER_SCRIPT = Path(__file__).with_name("executor_worker.py")


@pytest.fixture
async def standin() -> AsyncIterator[EventApiStandIn]:
    async with EventApiStandIn(retry_base_s=BASE_S) as api:
        yield api


def client_for(standin: EventApiStandIn, app_id: str = APP) -> inngest.Inngest:
    return inngest.Inngest(
        app_id=app_id,
        is_production=False,
        api_base_url=standin.base_url,
        event_api_base_url=standin.base_url,
    )


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serving(
    standin: EventApiStandIn | None,
    client: inngest.Inngest,
    functions: Sequence[inngest.Function[Any]],
    sock: socket.socket | None = None,
) -> AsyncIterator[str]:
    """Serve ``functions`` with the SDK's FastAPI adapter on a free port (or ``sock``); sync them
    into ``standin`` when one is given."""
    app = fastapi.FastAPI()
    inngest.fast_api.serve(app, client, list(functions))
    sock = sock or _free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started:  # poll with a deadline: uvicorn has no readiness callback
        assert not task.done(), "uvicorn stopped before it started"
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{port}/api/inngest"
    try:
        if standin is not None:
            await standin.sync(url)
        yield url
    finally:
        server.should_exit = True
        await task
        sock.close()


def fid(fn: str, app: str = APP) -> str:
    return f"{app}-{fn}"


async def test_sync_registers_the_apps_functions_as_the_dev_server_answers(
    standin: EventApiStandIn,
) -> None:
    client = client_for(standin)

    async def on_failure(ctx: inngest.Context) -> None:
        return None

    @client.create_function(
        fn_id="hello",
        trigger=inngest.TriggerEvent(event="test/hello"),
        retries=2,
        on_failure=on_failure,
    )
    async def hello(ctx: inngest.Context) -> str:
        return "hi"

    async with serving(standin, client, [hello]) as url:
        functions = standin.executor.functions
        assert set(functions) == {fid("hello"), fid("hello-failure")}
        assert functions[fid("hello")].max_attempts == 3
        assert functions[fid("hello-failure")].max_attempts == 1  # the SDK registers 0 retries
        assert functions[fid("hello")].url.startswith(url)
        # A second sync of the same app is accepted and changes nothing (dev server: modified
        # false when the checksum is the same).
        again = await standin.sync(url)
        assert again["modified"] is False
        assert again["function_ids"] == [fid("hello"), fid("hello-failure")]
        # The JSON view over the control surface lists them for other processes.
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{standin.base_url}/_standin/functions") as resp,
        ):
            listing = await resp.json()
        assert {f["id"] for f in listing["functions"]} == set(functions)


async def test_a_multi_step_function_runs_each_step_body_once(standin: EventApiStandIn) -> None:
    client = client_for(standin)
    calls: dict[str, int] = {"fetch": 0, "embed": 0, "store": 0, "outside": 0}

    @client.create_function(fn_id="steps", trigger=inngest.TriggerEvent(event="test/steps"))
    async def steps(ctx: inngest.Context) -> dict[str, Any]:
        calls["outside"] += 1  # code outside steps re-runs on every request, as in Inngest

        async def fetch() -> dict[str, Any]:
            calls["fetch"] += 1
            return {"isrc": ctx.event.data["isrc"]}

        async def embed() -> list[float]:
            calls["embed"] += 1
            return [0.5, 0.25]

        async def store() -> str:
            calls["store"] += 1
            return "stored"

        doc = await ctx.step.run("fetch", fetch)
        vector = await ctx.step.run("embed", embed)
        stored = await ctx.step.run("store", store)
        return {"doc": doc, "vector": vector, "stored": stored}

    async with serving(standin, client, [steps]):
        await client.send(inngest.Event(name="test/steps", data={"isrc": "USRC17607839"}))
        [run] = await standin.executor.wait_for_status(fid("steps"), "completed")
    assert calls == {"fetch": 1, "embed": 1, "store": 1, "outside": 4}
    assert run.output == {
        "doc": {"isrc": "USRC17607839"},
        "vector": [0.5, 0.25],
        "stored": "stored",
    }
    assert run.attempts == 1
    assert [r.status for r in run.requests] == [206, 206, 206, 200]
    assert [r.ops for r in run.requests[:3]] == [
        ["StepRun:fetch"],
        ["StepRun:embed"],
        ["StepRun:store"],
    ]
    assert run.step_output("embed") == {"data": [0.5, 0.25]}
    assert len(run.stack) == 3


async def test_a_step_failing_twice_is_retried_with_backoff_and_succeeds(
    standin: EventApiStandIn,
) -> None:
    client = client_for(standin)
    tries: list[float] = []

    @client.create_function(
        fn_id="flaky", trigger=inngest.TriggerEvent(event="test/flaky"), retries=3
    )
    async def flaky(ctx: inngest.Context) -> int:
        async def shaky() -> int:
            tries.append(time.monotonic())
            if len(tries) <= 2:
                raise RuntimeError(f"down (try {len(tries)})")
            return len(tries)

        return await ctx.step.run("shaky", shaky)

    async with serving(standin, client, [flaky]):
        await client.send(inngest.Event(name="test/flaky", data={}))
        [run] = await standin.executor.wait_for_status(fid("flaky"), "completed")
    assert run.output == 3
    assert run.attempts == 3
    assert [e["message"] for e in run.errors] == ["down (try 1)", "down (try 2)"]
    retried = [r for r in run.requests if r.retry_in_s is not None]
    assert [r.attempt for r in retried] == [0, 1]
    # Inngest's table (15 s, 30 s, ...) plus up to 30 s of jitter, scaled to BASE_S.
    for request, table_s in zip(retried, BACKOFF_TABLE_S, strict=False):
        assert request.retry_in_s is not None
        assert table_s * SCALE <= request.retry_in_s <= (table_s + 30) * SCALE
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    for gap, request in zip(gaps, retried, strict=True):
        assert request.retry_in_s is not None
        assert gap >= request.retry_in_s - 0.005


async def test_non_retriable_error_fails_after_one_attempt(standin: EventApiStandIn) -> None:
    client = client_for(standin)

    @client.create_function(
        fn_id="refuses", trigger=inngest.TriggerEvent(event="test/refuses"), retries=4
    )
    async def refuses(ctx: inngest.Context) -> None:
        async def check() -> None:
            raise inngest.NonRetriableError("malformed event")

        await ctx.step.run("check", check)

    async with serving(standin, client, [refuses]):
        await client.send(inngest.Event(name="test/refuses", data={}))
        [run] = await standin.executor.wait_for_status(fid("refuses"), "failed")
    assert run.attempts == 1
    assert len(run.requests) == 1
    assert run.error is not None and run.error["message"] == "malformed event"
    assert run.error["name"] == "NonRetriableError"


async def test_spent_retries_run_the_failure_handler_with_the_function_failed_event(
    standin: EventApiStandIn,
) -> None:
    client = client_for(standin)
    received: list[dict[str, Any]] = []

    async def record_failure(ctx: inngest.Context) -> str:
        received.append({"name": ctx.event.name, "data": dict(ctx.event.data)})
        return "recorded"

    @client.create_function(
        fn_id="doomed",
        trigger=inngest.TriggerEvent(event="test/doomed"),
        retries=1,
        on_failure=record_failure,
    )
    async def doomed(ctx: inngest.Context) -> None:
        async def embed() -> None:
            raise ConnectionError("embedder unreachable")

        await ctx.step.run("embed", embed)

    async with serving(standin, client, [doomed]):
        await client.send(inngest.Event(name="test/doomed", data={"isrc": "GBAYE0601498"}))
        [handler] = await standin.executor.wait_for_status(fid("doomed-failure"), "completed")
    [run] = standin.executor.runs_of(fid("doomed"))
    assert run.status == "failed"
    assert run.attempts == 2  # retries=1: two attempts of the step
    # The SDK reports StepError while attempts remain, StepFailed on the last; the executor
    # memoises that error and calls again, and the function's uncaught StepError is a 500 with
    # x-inngest-no-retry.
    assert [r.ops for r in run.requests] == [["StepError:embed"], ["StepFailed:embed"], []]
    assert [r.status for r in run.requests] == [206, 206, 500]
    assert "error" in run.step_output("embed")
    assert run.error is not None and "embedder unreachable" in run.error["message"]
    assert handler.output == "recorded"
    [failed] = received
    assert failed["name"] == FUNCTION_FAILED_EVENT
    assert failed["data"]["function_id"] == fid("doomed")
    assert failed["data"]["run_id"] == run.run_id
    assert failed["data"]["event"]["data"] == {"isrc": "GBAYE0601498"}
    assert failed["data"]["event"]["name"] == "test/doomed"
    assert "embedder unreachable" in failed["data"]["error"]["message"]
    assert set(failed["data"]["error"]) == {"name", "message", "stack"}
    assert [e["name"] for e in standin.executor.internal_events] == [FUNCTION_FAILED_EVENT]


async def test_idempotency_key_and_event_id_each_allow_one_run(standin: EventApiStandIn) -> None:
    client = client_for(standin)

    @client.create_function(
        fn_id="ingest",
        trigger=inngest.TriggerEvent(event="test/ingest"),
        idempotency="event.data.isrc",
    )
    async def ingest(ctx: inngest.Context) -> str:
        return str(ctx.event.data["isrc"])

    @client.create_function(fn_id="by-id", trigger=inngest.TriggerEvent(event="test/by-id"))
    async def by_id(ctx: inngest.Context) -> str:
        return ctx.event.id

    async with serving(standin, client, [ingest, by_id]):
        await client.send(
            [
                inngest.Event(name="test/ingest", id="a-1", data={"isrc": "USRC17607839"}),
                inngest.Event(name="test/ingest", id="a-2", data={"isrc": "USRC17607839"}),
                inngest.Event(name="test/ingest", id="a-3", data={"isrc": "GBAYE0601498"}),
                inngest.Event(name="test/by-id", id="same", data={}),
                inngest.Event(name="test/by-id", id="same", data={}),
            ]
        )
        await standin.executor.wait_for_status(fid("ingest"), "completed", 2)
        await standin.executor.wait_for_status(fid("by-id"), "completed", 1)
    [first] = standin.executor.runs_for_event("a-1")
    assert first.function_id == fid("ingest") and standin.executor.runs_for_event("a-2") == []
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{standin.base_url}/_standin/runs", params={"event_id": "a-3"}) as resp,
    ):
        assert [r["output"] for r in (await resp.json())["runs"]] == ["GBAYE0601498"]
    assert sorted(r.output for r in standin.executor.runs_of(fid("ingest"))) == [
        "GBAYE0601498",
        "USRC17607839",
    ]
    assert [r.output for r in standin.executor.runs_of(fid("by-id"))] == ["same"]
    reasons = sorted((s.function_id, s.reason, s.key) for s in standin.executor.skipped)
    assert reasons == [
        (fid("by-id"), "event_id", "same"),
        (fid("ingest"), "idempotency", "USRC17607839"),
    ]
    # The Event API itself accepted all five (Inngest de-duplicates runs, not events).
    assert standin.event_count == 5


async def test_a_concurrency_key_limit_of_one_never_overlaps_one_key(
    standin: EventApiStandIn,
) -> None:
    client = client_for(standin)
    spans: list[tuple[str, float, float]] = []
    running: dict[str, int] = {}
    overlap: list[str] = []
    widest: list[int] = []

    @client.create_function(
        fn_id="serial",
        trigger=inngest.TriggerEvent(event="test/serial"),
        concurrency=[
            inngest.Concurrency(limit=1, key="event.data.isrc"),
            inngest.Concurrency(limit=2),  # and two at a time for the whole function
        ],
    )
    async def serial(ctx: inngest.Context) -> None:
        isrc = str(ctx.event.data["isrc"])

        async def work() -> None:
            running[isrc] = running.get(isrc, 0) + 1
            if running[isrc] > 1:
                overlap.append(isrc)
            widest.append(sum(running.values()))
            start = time.monotonic()
            await asyncio.sleep(0.05)
            spans.append((isrc, start, time.monotonic()))
            running[isrc] -= 1

        await ctx.step.run("one", work)
        await ctx.step.run("two", work)

    async with serving(standin, client, [serial]):
        await client.send(
            [
                inngest.Event(name="test/serial", data={"isrc": isrc})
                for isrc in ["AAAAA0000001"] * 3 + ["BBBBB0000002"] * 3 + ["CCCCC0000003"]
            ]
        )
        await standin.executor.wait_for_status(fid("serial"), "completed", 7)
    assert overlap == []
    assert max(widest) == 2
    for isrc in ("AAAAA0000001", "BBBBB0000002"):
        mine = sorted((s, e) for i, s, e in spans if i == isrc)
        assert len(mine) == 6
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(mine))
    # The limit is per key: the two ISRCs did run side by side.
    a = [(s, e) for i, s, e in spans if i == "AAAAA0000001"]
    b = [(s, e) for i, s, e in spans if i == "BBBBB0000002"]
    assert any(sa < eb and sb < ea for sa, ea in a for sb, eb in b)


@pytest.mark.slow
async def test_throttle_queues_run_starts_instead_of_dropping_them(
    standin: EventApiStandIn,
) -> None:
    client = client_for(standin)
    starts: list[float] = []

    @client.create_function(
        fn_id="throttled",
        trigger=inngest.TriggerEvent(event="test/throttled"),
        throttle=inngest.Throttle(limit=1, period=datetime.timedelta(seconds=1), burst=1),
    )
    async def throttled(ctx: inngest.Context) -> None:
        starts.append(time.monotonic())

    async with serving(standin, client, [throttled]):
        await client.send([inngest.Event(name="test/throttled", data={"n": n}) for n in range(4)])
        await standin.executor.wait_for_status(fid("throttled"), "completed", 4, timeout=15)
    assert len(starts) == 4  # none dropped
    # GCRA as Inngest's constraint API computes it: limit + burst starts at once, then one a
    # period / limit. Measured where the executor starts the runs, not in the (loaded) worker.
    begun = sorted(r.started_at or 0.0 for r in standin.executor.runs_of(fid("throttled")))
    assert begun[1] - begun[0] < 0.5
    assert begun[2] - begun[0] >= 0.95
    assert begun[3] - begun[2] >= 0.95


async def test_send_event_from_a_step_triggers_a_second_function(standin: EventApiStandIn) -> None:
    client = client_for(standin)

    @client.create_function(fn_id="first", trigger=inngest.TriggerEvent(event="test/first"))
    async def first(ctx: inngest.Context) -> list[str]:
        return await ctx.step.send_event(
            "announce",
            [inngest.Event(name="test/second", data={"from": ctx.run_id})],
        )

    @client.create_function(
        fn_id="second",
        trigger=inngest.TriggerEvent(event="test/second", expression="event.data.from != ''"),
    )
    async def second(ctx: inngest.Context) -> str:
        return str(ctx.event.data["from"])

    async with serving(standin, client, [first, second]):
        await client.send(inngest.Event(name="test/first", data={}))
        [chained] = await standin.executor.wait_for_status(fid("second"), "completed")
    [origin] = standin.executor.runs_of(fid("first"), "completed")
    assert chained.output == origin.run_id
    assert [e.name for e in standin.events] == ["test/first", "test/second"]
    assert origin.output == [standin.events[1].ulid]


async def test_sync_refuses_an_expression_it_cannot_evaluate(standin: EventApiStandIn) -> None:
    client = client_for(standin)

    @client.create_function(
        fn_id="lowered",
        trigger=inngest.TriggerEvent(event="test/lowered"),
        concurrency=[inngest.Concurrency(limit=1, key="event.data.isrc.lowerAscii()")],
    )
    async def lowered(ctx: inngest.Context) -> None:
        return None

    with pytest.raises(SyncError, match=r"lowerAscii\(\) are not supported"):
        async with serving(standin, client, [lowered]):
            pass
    assert standin.executor.functions == {}


@pytest.mark.slow
async def test_a_worker_killed_mid_step_is_retried_and_completes(
    standin: EventApiStandIn, tmp_path: Path
) -> None:
    standin.executor.retry_base_s = 0.2
    state = tmp_path / "state"
    state.mkdir()
    sock = _free_socket()
    port = sock.getsockname()[1]
    sock.close()
    args = [sys.executable, str(WORKER_SCRIPT), "--port", str(port), "--standin", standin.base_url]
    args += ["--state", str(state)]
    url = f"http://127.0.0.1:{port}/api/inngest"

    async def start_worker() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(*args)
        deadline = time.monotonic() + 30
        while True:  # poll with a deadline until the worker answers
            assert proc.returncode is None, "the worker exited"
            assert time.monotonic() < deadline, "the worker did not start within 30 s"
            try:
                async with aiohttp.ClientSession() as http, http.get(url) as resp:
                    if resp.status == 200:
                        return proc
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)

    first = await start_worker()
    second = None
    try:
        await standin.sync(url)
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{standin.base_url}/e/key", json={"name": "test/slow"}) as posted,
        ):
            assert posted.status == 200
        deadline = time.monotonic() + 15
        while not (state / "entered-1").exists():
            assert time.monotonic() < deadline, "the step never started"
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        second = await start_worker()
        [run] = await standin.executor.wait_for_status(
            "executor-kill-test-slow-step", "completed", timeout=60
        )
    finally:
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.terminate()
                await proc.wait()
    assert run.output["slow"]["pid"] == second.pid
    assert run.output["before"]["pid"] == first.pid  # memoised before the kill, not re-run
    outcomes = [r.outcome for r in run.requests]
    assert "connection_error" in outcomes
    assert run.attempts >= 2
    assert sorted(p.name for p in state.glob("entered-*")) == ["entered-1", "entered-2"]


async def test_runs_are_readable_over_the_control_surface(standin: EventApiStandIn) -> None:
    client = client_for(standin)
    async with serving(standin, client, [echo_function(client)]):
        await client.send(inngest.Event(name="test/echo", data={"x": 1}))
        async with aiohttp.ClientSession() as http:
            query = {"function_id": fid("echo"), "status": "completed", "count": "1"}
            async with http.get(f"{standin.base_url}/_standin/runs/wait", params=query) as resp:
                assert resp.status == 200
                listing = await resp.json()
            async with http.get(f"{standin.base_url}/_standin/state") as resp:
                state = await resp.json()
    [run] = listing["runs"]
    assert run["status"] == "completed" and run["output"] == {"x": 1}
    assert run["attempts"] == 1
    assert state["executor"]["runs"] == {"completed": 1}


WORKER_IDEMPOTENCY = (
    "has(event.data.force) && event.data.force == true ? event.id : event.data.isrc"
)


@pytest.mark.parametrize(
    ("source", "event", "value"),
    [
        ("event.data.isrc", {"data": {"isrc": "X"}}, "X"),
        ("event.data['isrc']", {"data": {"isrc": "X"}}, "X"),
        ("event.data.missing", {"data": {}}, None),
        ("event.data.isrc + '-' + event.id", {"id": "i", "data": {"isrc": "X"}}, "X-i"),
        ("event.data.force == true ? event.id : event.data.isrc", {"id": "i", "data": {}}, None),
        (
            "has(event.data.force) && event.data.force ? event.id : event.data.isrc",
            {"id": "i", "data": {"isrc": "X", "force": True}},
            "i",
        ),
        ("event.data.function_id == 'app-fn'", {"data": {"function_id": "app-fn"}}, True),
        # the ingestion worker's idempotency key and priority, as it registers them
        (WORKER_IDEMPOTENCY, {"id": "i", "data": {"isrc": "X"}}, "X"),
        (WORKER_IDEMPOTENCY, {"id": "i", "data": {"isrc": "X", "force": False}}, "X"),
        (WORKER_IDEMPOTENCY, {"id": "i", "data": {"isrc": "X", "force": True}}, "i"),
        ("has(event.data.priority) ? event.data.priority : 0", {"data": {}}, 0),
        ("has(event.data.priority) ? event.data.priority : 0", {"data": {"priority": -5}}, -5),
        ("!(event.data.n >= 2) || event.data.n < -1", {"data": {"n": 3}}, False),
    ],
)
def test_expressions_the_worker_uses(source: str, event: dict[str, Any], value: Any) -> None:
    assert compile_expression(source).evaluate({"event": event}) == value


@pytest.mark.parametrize(
    "source",
    ["size(event.data)", "event.data.x in ['a']", "user.id", "event.data.n * 2", "", "a ? b"],
)
def test_expressions_it_cannot_evaluate_are_refused_at_compile_time(source: str) -> None:
    with pytest.raises(ExpressionError, match="cannot evaluate expression"):
        compile_expression(source)


def test_a_run_record_reads_as_json() -> None:
    run = RunRecord("01H", "app-fn", {"name": "x", "data": {}}, 0.0)
    assert run.to_json()["status"] == "queued"
    assert os.environ.get("INNGEST_DEV") in (None, "1", "0", "true", "false")


async def test_parallel_steps_are_planned_then_run_one_request_each(
    standin: EventApiStandIn,
) -> None:
    client = client_for(standin)
    calls: list[str] = []

    @client.create_function(fn_id="fan", trigger=inngest.TriggerEvent(event="test/fan"))
    async def fan(ctx: inngest.Context) -> list[str]:
        async def part(name: str) -> str:
            calls.append(name)
            return name.upper()

        both = await ctx.group.parallel(
            (
                lambda: ctx.step.run("left", part, "left"),
                lambda: ctx.step.run("right", part, "right"),
            )
        )
        return list(both)

    async with serving(standin, client, [fan]):
        await client.send(inngest.Event(name="test/fan", data={}))
        [run] = await standin.executor.wait_for_status(fid("fan"), "completed")
    assert run.output == ["LEFT", "RIGHT"]
    assert sorted(calls) == ["left", "right"]
    assert run.requests[0].ops == ["StepPlanned:left", "StepPlanned:right"]
    targeted = {r.step_id for r in run.requests[1:3]}
    assert targeted == set(run.stack)  # one request per planned step, by its hashed id
    assert run.requests[-1].status == 200


@pytest.mark.slow
async def test_sleep_and_retry_after_set_when_the_next_request_comes(
    standin: EventApiStandIn,
) -> None:
    client = client_for(standin)
    tries: list[float] = []

    @client.create_function(
        fn_id="patient", trigger=inngest.TriggerEvent(event="test/patient"), retries=2
    )
    async def patient(ctx: inngest.Context) -> str:
        before = await ctx.step.run("before", lambda: time.time())
        await ctx.step.sleep("nap", datetime.timedelta(milliseconds=300))

        async def busy() -> float:
            tries.append(time.monotonic())
            if len(tries) == 1:
                raise inngest.RetryAfterError("busy", retry_after=datetime.timedelta(seconds=1))
            return time.time()

        after = await ctx.step.run("after", busy)
        return f"{after - before:.3f}"

    async with serving(standin, client, [patient]):
        await client.send(inngest.Event(name="test/patient", data={}))
        [run] = await standin.executor.wait_for_status(fid("patient"), "completed")
    assert float(run.output) >= 0.3 + 0.9  # the nap, then the retry-after
    assert "Sleep:nap" in [op for r in run.requests for op in r.ops]
    [retried] = [r for r in run.requests if r.retry_in_s is not None]
    # retry-after (1 s from the raise) replaced the table's first delay (0.05 s + ≤ 0.1 s here).
    assert retried.retry_in_s is not None and 0.3 <= retried.retry_in_s <= 1.0
    assert tries[1] - tries[0] >= 0.95
    assert run.step_output("nap") == {"data": None}


def echo_function(client: inngest.Inngest) -> inngest.Function[Any]:
    @client.create_function(fn_id="echo", trigger=inngest.TriggerEvent(event="test/echo"))
    async def echo(ctx: inngest.Context) -> dict[str, Any]:
        return dict(ctx.event.data)

    return echo


async def test_sync_waits_for_an_app_that_is_still_starting(standin: EventApiStandIn) -> None:
    client = client_for(standin)
    sock = _free_socket()  # bound, not listening: connections are refused until uvicorn starts
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/api/inngest"
    with pytest.raises(SyncError, match="failed"):
        await standin.sync(url)  # no waiting: the refusal is reported
    syncing = asyncio.create_task(standin.sync(url, wait_for_app_s=30))
    async with serving(None, client, [echo_function(client)], sock):
        registration = await syncing
    assert registration["function_ids"] == [fid("echo")]


@pytest.mark.slow
async def test_the_command_line_syncs_an_app_and_serves_its_runs_to_other_processes() -> None:
    sock = _free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/api/inngest"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "outbox_relay.testing.inngest",
        "--port=0",
        f"--sync-url={url}",
        "--retry-base-delay=0.05",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        ready = orjson.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        base = ready["base_url"]
        client = inngest.Inngest(
            app_id=APP, is_production=False, api_base_url=base, event_api_base_url=base
        )
        async with (
            serving(None, client, [echo_function(client)], sock),
            aiohttp.ClientSession() as http,
        ):
            # Events sent before the app is synced start nothing (as in Inngest): poll, with a
            # deadline, until --sync-url has registered it.
            deadline = time.monotonic() + 30
            while True:
                async with http.get(f"{base}/_standin/functions") as resp:
                    if (await resp.json())["functions"]:
                        break
                assert time.monotonic() < deadline, "--sync-url did not sync the app"
                await asyncio.sleep(0.05)
            await client.send(inngest.Event(name="test/echo", data={"x": 2}))
            query = {"function_id": fid("echo"), "status": "completed", "timeout": "30"}
            async with http.get(f"{base}/_standin/runs/wait", params=query) as resp:
                assert resp.status == 200, await resp.text()
                listing = await resp.json()
        [run] = listing["runs"]
        assert run["output"] == {"x": 2}
        assert listing["summary"]["retry_base_s"] == 0.05
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_a_cancelled_run_makes_no_more_requests(standin: EventApiStandIn) -> None:
    client = client_for(standin)

    @client.create_function(fn_id="napper", trigger=inngest.TriggerEvent(event="test/napper"))
    async def napper(ctx: inngest.Context) -> str:
        await ctx.step.sleep("long-nap", datetime.timedelta(minutes=10))
        return "woke"

    async with serving(standin, client, [napper]):
        await client.send(inngest.Event(name="test/napper", data={}))
        [run] = await standin.executor.wait_for_runs(
            lambda runs: any("Sleep:long-nap" in r.ops for run in runs for r in run.requests),
            what="the run to reach its sleep",
        )
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{standin.base_url}/_standin/runs/{run.run_id}/cancel") as resp,
        ):
            assert (await resp.json())["cancelled"] is True
    assert run.status == "cancelled"
    assert len(run.requests) == 1
    assert standin.executor.summary()["queued_requests"] == 0
    assert standin.executor.cancel(run.run_id) is False  # already finished


async def test_a_synchronous_function_runs_through_the_sdks_thread_pool(
    standin: EventApiStandIn,
) -> None:
    client = client_for(standin)

    @client.create_function(fn_id="plain", trigger=inngest.TriggerEvent(event="test/plain"))
    def plain(ctx: inngest.ContextSync) -> list[int]:
        one = ctx.step.run("one", lambda: 1)
        two = ctx.step.run("two", lambda: one + 1)
        return [one, two]

    async with serving(standin, client, [plain]):
        await client.send(inngest.Event(name="test/plain", data={}))
        [run] = await standin.executor.wait_for_status(fid("plain"), "completed")
    assert run.output == [1, 2]
    assert [r.status for r in run.requests] == [206, 206, 200]
