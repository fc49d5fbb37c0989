"""Tests of the Event API stand-in, over real HTTP on loopback with an aiohttp client.

The expected messages, status codes and body shapes are Inngest's own (``pkg/api/api.go``,
``pkg/eventstream``, ``pkg/event``); a test that fails here means the stand-in drifted from the
server the relay will meet in production.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from ulid import ULID

from outbox_relay.testing.inngest import (
    CLOUD_RATE_LIMIT_REQUESTS,
    CLOUD_RATE_LIMIT_WINDOW_S,
    SEED_HEADER,
    Drop,
    EventApiStandIn,
    Hang,
    Latency,
    RateLimit,
    Refuse,
    Reject,
    Status5xx,
    Status429,
    derive_event_ids,
    fault_from_json,
    parse_event_id_seed,
)

ROOT = Path(__file__).resolve().parents[2]
EVENT = "track/ingestion.requested"
DISCONNECTED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


def track(isrc: str, **extra: Any) -> dict[str, Any]:
    """An event as the relay sends it."""
    data = {"isrc": isrc, "title": "Title", "artist": "Artist", "album": "Album"}
    return {"name": EVENT, "id": f"track-ingestion-{isrc}", "data": data, **extra}


@dataclass
class Reply:
    status: int
    raw: bytes
    headers: Any

    @property
    def json(self) -> Any:
        return orjson.loads(self.raw)


@pytest.fixture
async def standin() -> AsyncIterator[EventApiStandIn]:
    async with EventApiStandIn() as api:
        yield api


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # force_close: every request on a fresh connection, so that one test's fault cannot leave a
    # half-dead pooled connection for the next request.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        yield s


Post = Callable[..., Coroutine[Any, Any, Reply]]


@pytest.fixture
def post(standin: EventApiStandIn, session: aiohttp.ClientSession) -> Post:
    async def _post(
        body: Any,
        *,
        key: str = "test-key",
        headers: dict[str, str] | None = None,
        api: EventApiStandIn | None = None,
    ) -> Reply:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        url = f"{(api or standin).base_url}/e/{key}"
        async with session.post(url, data=data, headers=headers or {}) as resp:
            return Reply(resp.status, await resp.read(), resp.headers)

    return _post


async def eventually(condition: Callable[[], bool], within: float = 2.0) -> None:
    """Poll a condition nothing notifies about (a peer's socket state), with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.002)


def is_ulid(value: str) -> bool:
    try:
        return str(ULID.from_str(value)) == value
    except ValueError:
        return False


# --- the happy path ----------------------------------------------------------------------------


async def test_single_event_gets_one_ulid_and_is_recorded(
    standin: EventApiStandIn, post: Post
) -> None:
    reply = await post(track("USRC17607839"))

    assert reply.status == 200
    assert reply.raw.endswith(b"\n")  # Go's json.Encoder
    body = reply.json
    assert body["status"] == 200 and set(body) == {"ids", "status"}
    [ulid] = body["ids"]
    assert is_ulid(ulid) and ulid != "track-ingestion-USRC17607839"
    # The dev server sets no Content-Type, so Go sniffs text/plain: a publisher must not insist.
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert reply.headers["X-Inngest-Server-Kind"] == "dev"

    [event] = standin.events
    assert event.ulid == ulid
    assert event.name == EVENT and event.id == "track-ingestion-USRC17607839"
    assert event.data["isrc"] == "USRC17607839"
    assert event.event_key == "test-key" and event.request_no == 1
    assert abs(event.ts - event.received_at * 1000) < 5  # no ts: the receive time
    assert standin.request_count == 1 and standin.status_counts == {200: 1}


async def test_array_gets_ids_in_order(standin: EventApiStandIn, post: Post) -> None:
    events = [track(f"USRC1760783{i}") for i in range(3)]
    reply = await post(events)

    assert reply.status == 200
    ids = reply.json["ids"]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert [e.ulid for e in standin.events] == ids
    assert [e.id for e in standin.events] == [e["id"] for e in events]


@pytest.mark.parametrize("body", [b"[]", b"", b"  \n", b"[ ]"])
async def test_empty_array_or_body_answers_one_empty_id(
    standin: EventApiStandIn, post: Post, body: bytes
) -> None:
    reply = await post(body)
    assert (reply.status, reply.json) == (200, {"ids": [""], "status": 200})
    assert standin.event_count == 0


async def test_health(standin: EventApiStandIn, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{standin.base_url}/health") as resp:
        assert resp.status == 200
        assert await resp.read() == b'{"status":200,"message":"OK"}\n'


async def test_inngest_data_key_is_removed_and_ts_kept(
    standin: EventApiStandIn, post: Post
) -> None:
    reply = await post({"name": "a", "data": {"x": 1, "_inngest": {"fn": 1}}, "ts": 1700000000000})
    assert reply.status == 200
    [event] = standin.events
    assert event.data == {"x": 1} and event.ts == 1700000000000 and event.id is None


# --- limits and validation, with Inngest's exact messages -------------------------------------


async def test_5000_events_per_request(standin: EventApiStandIn, post: Post) -> None:
    ok = await post([{"name": "a"}] * 5000)
    assert ok.status == 200 and len(ok.json["ids"]) == 5000

    over = await post([{"name": "b"}] * 5001)
    assert over.status == 400
    assert over.json["error"] == "Cannot have more than 5000 events in a batch"
    # The parser streams: the first 5,000 were already taken when it met the 5,001st.
    assert len(over.json["ids"]) == 5000
    assert sum(1 for e in standin.events if e.name == "b") == 5000


async def test_event_over_the_max_size_single_object(standin: EventApiStandIn, post: Post) -> None:
    body = orjson.dumps({"name": "a", "data": {"blob": "x" * 3_145_728}})
    reply = await post(body)
    assert reply.status == 400
    assert reply.json == {
        "ids": [""],
        "status": 400,
        "error": f"Event is over the max size: Max 3145728 bytes / Size {len(body)} bytes",
    }
    assert standin.event_count == 0


async def test_event_size_limit_in_an_array_is_per_element_with_partial_acceptance(
    post: Post,
) -> None:
    async with EventApiStandIn(max_event_size=200) as api:
        small = {"name": "a", "data": {"s": "x"}}
        big = {"name": "b", "data": {"s": "x" * 300}}
        exactly = {
            "name": "c",
            "data": {"s": "x" * (200 - len(orjson.dumps({"name": "c", "data": {"s": ""}})))},
        }
        assert len(orjson.dumps(exactly)) == 200

        reply = await post([small, exactly, big, small], api=api)

        assert reply.status == 400
        size = len(orjson.dumps(big))
        assert (
            reply.json["error"] == f"Event is over the max size: Max 200 bytes / Size {size} bytes"
        )
        assert reply.json["ids"] == [e.ulid for e in api.events]
        assert [e.name for e in api.events] == ["a", "c"]


def go_type_error(kind: str, field: str, go_type: str) -> str:
    """encoding/json's UnmarshalTypeError text for a field of Inngest's event struct."""
    return f"json: cannot unmarshal {kind} into Go struct field raw.{field} of type {go_type}"


GO_MAP = "map[string]interface {}"
INVALID_BODY = "Request body must contain an event object or an array of event objects"
RESERVED = "event name is reserved for internal use: "
IN_NUMBER = " in numeric literal"


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ({"name": ""}, "event name is empty"),
        ({"data": {"a": 1}}, "event name is empty"),
        ({"name": None}, "event name is empty"),
        ({"name": "inngest/function.failed"}, RESERVED + "inngest/function.failed"),
        ({"name": "Inngest/Anything"}, RESERVED + "Inngest/Anything"),
        ({"name": "a", "ts": 315532799999}, "timestamp is before Jan 1, 1980"),
        ({"name": "a", "ts": -1}, "timestamp is before Jan 1, 1980"),
        ({"name": "a", "ts": 4102444800001}, "timestamp is after Jan 1, 2100"),
        ({"name": "a", "data": [1, 2]}, go_type_error("array", "data", GO_MAP)),
        ({"name": "a", "data": "x"}, go_type_error("string", "data", GO_MAP)),
        ({"name": 7}, go_type_error("number", "name", "string")),
        ({"name": "a", "id": True}, go_type_error("bool", "id", "string")),
        ({"name": "a", "ts": "1700000000000"}, go_type_error("string", "ts", "int64")),
        ({"name": "a", "ts": 1.5}, go_type_error("number 1.5", "ts", "int64")),
    ],
)
async def test_event_rules_with_exact_messages(
    standin: EventApiStandIn, post: Post, event: dict[str, Any], error: str
) -> None:
    reply = await post(event)
    assert reply.status == 400
    assert reply.json == {"ids": [""], "status": 400, "error": error}
    assert standin.event_count == 0 and standin.status_counts == {400: 1}


@pytest.mark.parametrize("ts", [0, 315532800000, 4102444800000, 1700000000000])
async def test_timestamps_inside_the_range_or_zero_are_accepted(post: Post, ts: int) -> None:
    assert (await post({"name": "a", "ts": ts})).status == 200


async def test_field_names_match_case_insensitively_like_go(
    standin: EventApiStandIn, post: Post
) -> None:
    assert (await post({"Name": "a", "ID": "x"})).status == 200
    assert (standin.events[0].name, standin.events[0].id) == ("a", "x")


@pytest.mark.parametrize(
    ("body", "error", "accepted"),
    [
        (b'"just a string"', INVALID_BODY, 0),
        (b"garbage", INVALID_BODY, 0),
        (b'{"name": ', "unexpected end of JSON input", 0),
        (b'{"name": "a"} x', "invalid character 'x' after top-level value", 0),
        (b'{"name": "a",}', "invalid character '}' looking for beginning of object key string", 0),
        (b'{"name" "a"}', "invalid character '\"' after object key", 0),
        (b'{"name": "a" "b"}', "invalid character '\"' after object key:value pair", 0),
        (b'{"name": tru}', "invalid character '}' in literal true (expecting 'e')", 0),
        (b'{"name": NaN}', "invalid character 'N' looking for beginning of value", 0),
        (b'{"name": "a\x01"}', "invalid character '\\x01' in string literal", 0),
        (b'[{"name": "a"}, {"name": ', "unexpected EOF", 1),
        (b'[{"name": "a"}, ', "EOF", 1),
        (b'[{"name": "a"} {"name": "b"}]', "expected comma after array element", 1),
        (b'[{"name": "a"}, ]', "invalid character ']' looking for beginning of value", 1),
        (b'[{"name": "a"}, {"x": 1.}]', "invalid character '}' after decimal point" + IN_NUMBER, 1),
        (b"[1]", "json: cannot unmarshal number into Go value of type event.raw", 0),
        (b'["a"]', "json: cannot unmarshal string into Go value of type event.raw", 0),
        (b"[null]", "event name is empty", 0),
    ],
)  # fmt: skip
async def test_body_errors_read_like_go(
    standin: EventApiStandIn, post: Post, body: bytes, error: str, accepted: int
) -> None:
    reply = await post(body)
    assert reply.status == 400
    assert reply.json["error"] == error
    assert len(standin.events) == accepted
    assert reply.json["ids"] == ([e.ulid for e in standin.events] or [""])


@pytest.mark.parametrize(
    "body",
    [
        b'[{"name": "a"}',  # cut short between elements: More() sees EOF, nothing is wrong
        b'[{"name": "a"}] trailing bytes are never read',
        b'[{"name": "a", "data": {"s": "caf\xe9"}}]',  # invalid UTF-8: Go substitutes U+FFFD
        b'{"name": "a", "data": {"big": 123456789012345678901234567890}}',
    ],
)
async def test_bodies_go_accepts_but_strict_parsers_do_not(
    standin: EventApiStandIn, post: Post, body: bytes
) -> None:
    reply = await post(body)
    assert reply.status == 200, reply.raw
    assert len(reply.json["ids"]) == 1 and standin.event_count == 1


async def test_errors_are_html_escaped_like_go(post: Post) -> None:
    reply = await post(b'{"name": <}')
    assert b"\\u003c" in reply.raw  # Go's encoder escapes <, > and &
    assert reply.json["error"] == "invalid character '<' looking for beginning of value"


async def test_partial_acceptance_on_400(standin: EventApiStandIn, post: Post) -> None:
    events = [track("USRC17600001"), track("USRC17600002"), {"name": ""}, track("USRC17600004")]
    reply = await post(events)

    assert reply.status == 400
    assert reply.json["error"] == "event name is empty"
    accepted = reply.json["ids"]
    assert len(accepted) == 2
    # The two before the bad one were accepted (they will run); the one after was never looked at.
    assert [e.ulid for e in standin.events] == accepted
    assert [e.id for e in standin.events] == [
        "track-ingestion-USRC17600001",
        "track-ingestion-USRC17600002",
    ]
    assert standin.run_count() == 2


# --- event keys -----------------------------------------------------------------------------


async def test_dev_mode_accepts_any_key(post: Post) -> None:
    for key in ("test", "anything-at-all", "KEY"):
        assert (await post({"name": "a"}, key=key)).status == 200


async def test_unknown_key_gets_the_real_401(
    standin: EventApiStandIn, session: aiohttp.ClientSession, post: Post
) -> None:
    standin.set_keys(["good-key"])

    reply = await post({"name": "a"}, key="bad-key")
    assert reply.status == 401
    assert reply.raw == b'{"status":401,"message":"","error":"Event key not found"}\n'
    assert reply.headers["Content-Type"] == "application/json"

    async with session.post(f"{standin.base_url}/e/", data=b'{"name": "a"}') as resp:
        assert resp.status == 401
        assert (await resp.json())["error"] == "Event key is required"

    assert (await post({"name": "a"}, key="good-key")).status == 200
    assert standin.event_count == 1 and standin.status_counts == {401: 2, 200: 1}


async def test_keys_given_at_construction(post: Post) -> None:
    async with EventApiStandIn(keys=["k1", "k2"]) as api:
        assert (await post({"name": "a"}, key="k2", api=api)).status == 200
        assert (await post({"name": "a"}, key="k3", api=api)).status == 401


# --- deterministic ids under the seed header ------------------------------------------------


def expected_seeded_ulid(millis: int, entropy: bytes, index: int) -> str:
    """SeededIDFromString + ToULID, written out independently of the stand-in."""
    tail = (int.from_bytes(entropy[6:], "big") + index) % 2**32
    return str(ULID.from_bytes(millis.to_bytes(6, "big") + entropy[:6] + tail.to_bytes(4, "big")))


async def test_same_seed_gives_the_same_ids(standin: EventApiStandIn, post: Post) -> None:
    entropy = bytes.fromhex("7a28b660a5d1553248ff")  # last 4 bytes near the wrap-around
    entropy = entropy[:6] + (2**32 - 2).to_bytes(4, "big")
    seed = f"1743130137367,{base64.b64encode(entropy).decode()}"
    events = [track("USRC17600001"), track("USRC17600002"), {"name": "no-id"}]

    first = await post(events, headers={SEED_HEADER: seed})
    retry = await post(events, headers={SEED_HEADER: seed})

    assert first.status == retry.status == 200
    assert first.json["ids"] == retry.json["ids"]
    # The first event uses index 1 (Inngest increments before deriving), and the addition wraps.
    assert first.json["ids"] == [expected_seeded_ulid(1743130137367, entropy, i) for i in (1, 2, 3)]
    assert derive_event_ids(seed, 3) == first.json["ids"]
    assert ULID.from_str(first.json["ids"][0]).milliseconds == 1743130137367


async def test_different_or_malformed_seeds(post: Post) -> None:
    seed_a = f"1743130137367,{base64.b64encode(os.urandom(10)).decode()}"
    seed_b = f"1743130137367,{base64.b64encode(os.urandom(10)).decode()}"
    a = await post({"name": "a"}, headers={SEED_HEADER: seed_a})
    b = await post({"name": "a"}, headers={SEED_HEADER: seed_b})
    assert a.json["ids"] != b.json["ids"]

    # A seed Inngest cannot parse is ignored: random ids, never a rejection.
    for bad in ("nonsense", "0,AAAAAAAAAAAAAA==", "12,AAAA", "1,2,3", "-5,AAAAAAAAAAAAAA=="):
        one = await post({"name": "a"}, headers={SEED_HEADER: bad})
        two = await post({"name": "a"}, headers={SEED_HEADER: bad})
        assert one.status == two.status == 200
        assert one.json["ids"] != two.json["ids"]


def test_seed_parsing_follows_inngest() -> None:
    assert parse_event_id_seed("1743130137367,eii2YKXRVTJPuA==") == (
        1743130137367,
        base64.b64decode("eii2YKXRVTJPuA=="),
    )
    assert parse_event_id_seed("1743130137367,eii2YKXRVTJPuA") is None  # padding required
    assert parse_event_id_seed(" 1,eii2YKXRVTJPuA==") is None
    assert parse_event_id_seed("") is None
    assert derive_event_ids(f"{2**48},eii2YKXRVTJPuA==", 1) is None  # past ULID time: random


# --- runs --------------------------------------------------------------------------------


async def test_one_run_per_event_id(standin: EventApiStandIn, post: Post) -> None:
    first = await post(track("USRC17607839"))
    again = await post(track("USRC17607839"))

    # Not de-duplicated at ingest: both accepted, each with its own ULID...
    assert first.json["ids"] != again.json["ids"]
    assert standin.event_count == 2
    assert len(standin.events_with_id("track-ingestion-USRC17607839")) == 2
    # ...but the run scheduler starts one run.
    assert standin.runs_for("track-ingestion-USRC17607839") == 1
    assert standin.run_count() == 1 and standin.duplicate_runs() == {}

    await post([track("USRC17600001"), track("USRC17600002")])
    assert standin.run_count() == 3


async def test_events_without_id_each_start_a_run_unless_retried_with_the_seed(
    standin: EventApiStandIn, post: Post
) -> None:
    await post([{"name": "x"}, {"name": "x"}])
    await post({"name": "x"})
    assert standin.run_count() == 3

    # Without an id the idempotency key is the event's ULID, so a seeded retry does not run twice.
    seed = f"1743130137367,{base64.b64encode(os.urandom(10)).decode()}"
    await post({"name": "y"}, headers={SEED_HEADER: seed})
    await post({"name": "y"}, headers={SEED_HEADER: seed})
    assert standin.run_count() == 4
    assert standin.events_by_id()[None][-1].ulid == standin.runs[-1].key


async def test_runs_are_per_function_and_per_24_hours(post: Post) -> None:
    now = [1_700_000_000.0]
    async with EventApiStandIn(clock=lambda: now[0]) as api:
        await post(track("USRC17607839"), api=api)
        await post({"name": "other/event", "id": "track-ingestion-USRC17607839"}, api=api)
        assert api.runs_for("track-ingestion-USRC17607839") == 2  # two event names: two functions

        now[0] += 24 * 3600 - 1
        await post(track("USRC17607839"), api=api)
        assert api.run_count() == 2
        now[0] += 1  # 24 h after the first run the key has expired
        await post(track("USRC17607839"), api=api)
        assert api.run_count() == 3
        assert api.duplicate_runs() == {"track-ingestion-USRC17607839": 3}


# --- faults ------------------------------------------------------------------------------


async def test_refuse_closes_the_port_and_clear_reopens_it(
    standin: EventApiStandIn, post: Post
) -> None:
    # A keep-alive connection opened before the outage must not survive it.
    async with aiohttp.ClientSession() as pooled:
        async with pooled.post(standin.event_url(), data=b'{"name": "a"}') as resp:
            assert resp.status == 200
        port = standin.port

        await standin.inject(Refuse())
        assert standin.refusing

        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await post({"name": "a"})
        assert refused.value.os_error.errno == errno.ECONNREFUSED
        with pytest.raises(aiohttp.ClientError):
            async with pooled.post(standin.event_url(), data=b'{"name": "a"}'):
                pass

        await standin.clear("refuse")
        assert not standin.refusing and standin.port == port
        assert (await post({"name": "b"})).status == 200
    assert [e.name for e in standin.events] == ["a", "b"]


@pytest.mark.parametrize("stage", ["before_body", "after_body"])
async def test_drop_without_recording(standin: EventApiStandIn, post: Post, stage: str) -> None:
    await standin.inject(Drop(stage=stage), times=1)  # type: ignore[arg-type]

    with pytest.raises(DISCONNECTED):
        await post(track("USRC17607839"))
    await standin.wait_for_requests(1)
    assert standin.event_count == 0 and standin.dropped_count == 1
    assert standin.requests[0].outcome == "dropped" and standin.requests[0].status is None

    assert (await post(track("USRC17607839"))).status == 200  # times=1: gone


async def test_drop_after_record_loses_only_the_answer(
    standin: EventApiStandIn, post: Post
) -> None:
    await standin.inject(Drop(stage="after_record"), times=1)

    with pytest.raises(DISCONNECTED):
        await post([track("USRC17600001"), track("USRC17600002")])
    assert standin.event_count == 2 and standin.run_count() == 2

    # The publisher retries the same events: accepted again, but no second run.
    assert (await post([track("USRC17600001"), track("USRC17600002")])).status == 200
    assert standin.event_count == 4 and standin.run_count() == 2


async def test_5xx_with_json_and_html_bodies(standin: EventApiStandIn, post: Post) -> None:
    await standin.inject(Status5xx(status=503), times=1)
    reply = await post(track("USRC17607839"))
    assert reply.status == 503
    assert reply.json == {"error": "Service Unavailable", "status": 503}
    assert reply.headers["Content-Type"] == "application/json"

    await standin.inject(Status5xx(status=502, body="html"), times=1)
    reply = await post(track("USRC17607839"))
    assert reply.status == 502
    assert reply.headers["Content-Type"].startswith("text/html")
    assert b"<title>502 Bad Gateway</title>" in reply.raw
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(reply.raw)

    assert standin.event_count == 0 and standin.status_counts == {503: 1, 502: 1}

    await standin.inject(Status5xx(status=504, after_record=True), times=1)
    assert (await post(track("USRC17607839"))).status == 504
    assert standin.event_count == 1  # accepted, then the gateway failed


async def test_429_with_retry_after(standin: EventApiStandIn, post: Post) -> None:
    await standin.inject(Status429(retry_after=7), times=1)
    reply = await post({"name": "a"})
    assert reply.status == 429 and reply.headers["Retry-After"] == "7"
    assert reply.json["status"] == 429
    assert standin.event_count == 0
    assert (await post({"name": "a"})).status == 200


async def test_hang_then_clear_answers_the_waiting_request(
    standin: EventApiStandIn, post: Post
) -> None:
    await standin.inject(Hang())
    pending = asyncio.create_task(post(track("USRC17607839")))
    await standin.wait_for_hung(1)
    assert not pending.done() and standin.event_count == 0

    await standin.clear("hang")
    reply = await asyncio.wait_for(pending, 2)

    assert reply.status == 200 and standin.event_count == 1
    assert standin.hung_count == 1 and standin.hung_now == 0


async def test_hung_request_whose_client_gave_up_is_abandoned(
    standin: EventApiStandIn, post: Post
) -> None:
    await standin.inject(Hang(), times=1)
    pending = asyncio.create_task(post(track("USRC17607839")))
    await standin.wait_for_hung(1)

    pending.cancel()  # the client gives up and closes its connection
    with pytest.raises(asyncio.CancelledError):
        await pending
    await eventually(lambda: standin.hung_clients_gone() == 1)

    standin.release_hung()
    await standin.wait_for_requests(1)
    assert standin.requests[0].outcome == "abandoned"
    assert standin.event_count == 0
    assert (await post(track("USRC17607839"))).status == 200  # times=1: no longer hanging


async def test_stop_drops_hung_requests(session: aiohttp.ClientSession) -> None:
    api = EventApiStandIn()
    await api.start()
    await api.inject(Hang())
    pending = asyncio.create_task(session.post(api.event_url(), data=b'{"name": "a"}'))
    await api.wait_for_hung(1)
    await api.stop()
    with pytest.raises(DISCONNECTED):
        await pending
    assert api.event_count == 0


async def test_reject_by_id_with_partial_acceptance(standin: EventApiStandIn, post: Post) -> None:
    await standin.inject(Reject(ids=frozenset({"track-ingestion-USRC17600002"})), times=1)
    events = [track("USRC17600001"), track("USRC17600002"), track("USRC17600003")]

    reply = await post(events)

    assert reply.status == 400
    assert reply.json["error"].startswith("Event is over the max size: Max 262144 bytes / Size ")
    assert reply.json["ids"] == [standin.events[0].ulid]
    assert [e.id for e in standin.events] == ["track-ingestion-USRC17600001"]
    assert standin.requests[-1].fault == "reject"

    assert (await post(events)).status == 200  # times=1: the next request is not rejected
    assert standin.event_count == 4


async def test_reject_by_data_field_or_predicate(standin: EventApiStandIn, post: Post) -> None:
    await standin.inject(
        Reject(data_field="isrc", data_values=frozenset({"USRC17600002"}), message="no thanks")
    )
    reply = await post([track("USRC17600001"), track("USRC17600002")])
    assert (reply.status, reply.json["error"], len(reply.json["ids"])) == (400, "no thanks", 1)
    reply = await post(track("USRC17600002"))
    assert reply.json == {"ids": [""], "status": 400, "error": "no thanks"}

    await standin.inject(Reject(predicate=lambda event: event["data"].get("force") is True))
    assert (await post(track("USRC17600002"))).status == 200  # the new reject replaced the old
    assert (await post(track("USRC17600003", data={"force": True}))).status == 400


async def test_rate_limit_per_key(standin: EventApiStandIn, post: Post) -> None:
    assert (RateLimit().limit, RateLimit().window_s) == (75, 5.0)
    assert (CLOUD_RATE_LIMIT_REQUESTS, CLOUD_RATE_LIMIT_WINDOW_S) == (75, 5.0)
    await standin.inject(RateLimit(limit=3, window_s=60))

    statuses = [(await post({"name": "a"}, key="k1")).status for _ in range(3)]
    limited = await post({"name": "a"}, key="k1")
    assert statuses == [200, 200, 200]
    assert limited.status == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
    assert (await post({"name": "a"}, key="k2")).status == 200  # per key

    await standin.clear("rate_limit")
    assert (await post({"name": "a"}, key="k1")).status == 200
    assert standin.event_count == 5


async def test_times_limits_a_fault_to_the_next_n_requests(
    standin: EventApiStandIn, post: Post
) -> None:
    await standin.inject(Status5xx(status=500), times=2)
    assert standin.faults[0]["times_left"] == 2
    statuses = [(await post({"name": "a"})).status for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert standin.faults == []


async def test_latency_delays_each_request(standin: EventApiStandIn, post: Post) -> None:
    await standin.inject(Latency(seconds=0.05), times=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await post({"name": "a"})).status == 200
    assert loop.time() - started >= 0.05


async def test_fault_json_round_trip_and_validation() -> None:
    fault, times = fault_from_json(
        {"kind": "status_5xx", "status": 503, "body": "html", "times": 2}
    )
    assert (fault, times) == (Status5xx(status=503, body="html"), 2)
    fault, _ = fault_from_json({"kind": "reject", "ids": ["a", "b"]})
    assert fault == Reject(ids=frozenset({"a", "b"}))
    for bad in (
        {"kind": "nope"},
        {"kind": "status_5xx", "status": 404},
        {"kind": "drop", "stage": "sometime"},
        {"kind": "hang", "times": 0},
        {"kind": "latency", "whatever": 1},
    ):
        with pytest.raises(ValueError):
            fault_from_json(bad)


# --- control surface over HTTP, and waiting ----------------------------------------------


async def test_control_over_http_on_the_control_port(
    session: aiohttp.ClientSession, post: Post
) -> None:
    async with EventApiStandIn() as api:
        await api.stop()
        await api.start(control_port=0)
        control = api.control_url
        assert control is not None

        async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            data = None if body is None else orjson.dumps(body)
            async with session.request(method, f"{control}{path}", data=data) as resp:
                return resp.status, orjson.loads(await resp.read())

        status, state = await call("POST", "/_standin/faults", {"kind": "refuse"})
        assert status == 200 and state["faults"][0]["kind"] == "refuse"
        with pytest.raises(aiohttp.ClientConnectorError):
            await post({"name": "a"}, api=api)
        await call("DELETE", "/_standin/faults/refuse")

        await call("POST", "/_standin/faults", [{"kind": "status_5xx", "status": 502, "times": 1}])
        assert (await post({"name": "a", "id": "a-1"}, api=api)).status == 502
        assert (await post({"name": "a", "id": "a-1"}, api=api)).status == 200

        status, state = await call("GET", "/_standin/wait?events=1&timeout=2")
        assert status == 200 and state["event_count"] == 1
        status, state = await call("GET", "/_standin/wait?events=5&timeout=0.05")
        assert status == 408 and "waiting for 5 events" in state["error"]

        status, state = await call("GET", "/_standin/state?runs_for=a-1&runs_for=zzz")
        assert state["request_count"] == 2 and state["status_counts"] == {"200": 1, "502": 1}
        assert state["run_count"] == 1 and state["faults"] == []
        assert state["runs_for"] == {"a-1": 1, "zzz": 0}
        status, listing = await call("GET", "/_standin/events?since=0&runs=1")
        assert [e["name"] for e in listing["events"]] == ["a"]
        assert [r["key"] for r in listing["runs"]] == ["a-1"]
        assert listing["events"][0]["ulid"] == api.events[0].ulid

        status, _ = await call("POST", "/_standin/config", {"keys": ["only-this"]})
        assert (await post({"name": "a"}, api=api, key="other")).status == 401

        status, state = await call("POST", "/_standin/reset", {})
        assert state["event_count"] == 0 and state["request_count"] == 0

        status, error = await call("POST", "/_standin/faults", {"kind": "sideways"})
        assert status == 400 and "unknown fault kind" in error["error"]


async def test_refuse_over_http_needs_the_control_port(
    standin: EventApiStandIn, session: aiohttp.ClientSession
) -> None:
    url = f"{standin.base_url}/_standin/faults"
    async with session.post(url, data=b'{"kind": "refuse"}') as resp:
        assert resp.status == 409
    assert not standin.refusing


async def test_wait_for_events_wakes_on_arrival(standin: EventApiStandIn, post: Post) -> None:
    waiter = asyncio.create_task(standin.wait_for_events(3, timeout=5))
    await post({"name": "a"})
    assert not waiter.done()
    await post([{"name": "b"}, {"name": "c"}])
    await asyncio.wait_for(waiter, 2)

    with pytest.raises(TimeoutError, match="waiting for 10 events; the stand-in has 3 events"):
        await standin.wait_for_events(10, timeout=0.05)


@pytest.mark.slow
async def test_command_line_runs_a_separate_process(session: aiohttp.ClientSession) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "outbox_relay.testing.inngest",
        "--port=0",
        "--control-port=0",
        "--keys=k1,k2",
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        ready = orjson.loads(await asyncio.wait_for(process.stdout.readline(), 10))
        assert ready["event"] == "standin_ready" and ready["pid"] == process.pid

        async with session.post(f"{ready['base_url']}/e/k1", data=b'[{"name": "a"}]') as resp:
            assert resp.status == 200
        async with session.post(f"{ready['base_url']}/e/k3", data=b'[{"name": "a"}]') as resp:
            assert resp.status == 401
        async with session.get(f"{ready['control_url']}/_standin/state") as resp:
            state = orjson.loads(await resp.read())
        assert state["event_count"] == 1 and state["keys_enforced"] is True
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
