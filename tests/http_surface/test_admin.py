"""Admin endpoints on the relay's port: token required, constant-time compare, requeue works."""

from __future__ import annotations

import aiohttp
import asyncpg
import pytest

from relay.harness import Harness

TOKEN = "admin-7c1f9a2b4d"


async def _make_dead(harness: Harness, count: int) -> list[int]:
    conn = await harness.conn()
    # One transaction: the relay never sees these rows pending.
    async with conn.transaction():
        ids = await harness.enqueue_tracks(count)
        await _mark_dead(conn, ids, count)
    return ids


async def _mark_dead(conn: asyncpg.Connection, ids: list[int], count: int) -> None:
    await conn.execute(
        "UPDATE outbox.messages SET status = 'dead', attempts = 5, "
        "last_error = '400: Event is over the max size: Max 100% bytes' WHERE id = ANY($1)",
        ids[: count // 2],
    )
    await conn.execute(
        "UPDATE outbox.messages SET status = 'dead', attempts = 5, last_error = '400: other' "
        "WHERE id = ANY($1)",
        ids[count // 2 :],
    )


@pytest.fixture
async def admin(harness: Harness) -> tuple[Harness, str]:
    relay = await harness.start_relay(admin_token=TOKEN, poll_interval=30)
    await relay.wait_idle()
    return harness, f"http://127.0.0.1:{relay.service.http_port}"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"bearer{TOKEN}"},
    ],
    ids=["missing", "wrong", "no-scheme", "longer", "malformed"],
)
async def test_admin_refuses_a_missing_or_wrong_token(
    admin: tuple[Harness, str], headers: dict[str, str]
) -> None:
    _, base = admin
    async with aiohttp.ClientSession(headers=headers) as http:
        for method, path in (("GET", "/admin/status"), ("POST", "/admin/requeue")):
            async with http.request(method, base + path, json={"all": True}) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_admin_status_and_requeue_with_the_token(admin: tuple[Harness, str]) -> None:
    harness, base = admin
    ids = await _make_dead(harness, 6)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        async with http.get(base + "/admin/status") as response:
            assert response.status == 200
            report = await response.json()
        dead = {row["status"]: row["count"] for row in report["statuses"]}["dead"]
        assert dead == 6
        assert len(report["recent_dead_letters"]) == 6

        async with http.post(base + "/admin/requeue", json={"ids": [ids[0]]}) as response:
            assert await response.json() == {"requeued": 1, "ids": [ids[0]], "not_requeued": []}
        # Asked for by id but not dead (pending again, or already published by the relay the
        # requeue woke), or not there at all: each says why.
        missing = ids[-1] + 1000
        async with http.post(base + "/admin/requeue", json={"ids": [ids[0], missing]}) as r:
            answer = await r.json()
        assert answer["requeued"] == 0 and answer["ids"] == []
        assert [row["id"] for row in answer["not_requeued"]] == [ids[0], missing]
        assert answer["not_requeued"][0]["reason"] in {
            "is pending, not dead",
            "is published, not dead",
        }
        assert answer["not_requeued"][1]["reason"] == "does not exist"
        # "100%" is taken literally, not as a LIKE pattern
        async with http.post(base + "/admin/requeue", json={"error_contains": "max 100%"}) as r:
            assert (await r.json())["requeued"] == 2
        async with http.post(base + "/admin/requeue", json={"all": True}) as response:
            assert (await response.json())["requeued"] == 3
        async with http.post(base + "/admin/requeue", json={}) as response:
            assert response.status == 422
            assert "exactly one" in (await response.json())["fields"][0]["rule"]
        async with http.post(base + "/admin/requeue", json={"all": True, "ids": [1]}) as r:
            assert r.status == 422
    # requeued rows are pending with fresh attempts, and the relay publishes them
    await harness.standin.wait_for_events(6, timeout=40)


async def test_admin_endpoints_do_not_exist_without_a_token(harness: Harness) -> None:
    relay = await harness.start_relay()
    await relay.wait_idle()
    base = f"http://127.0.0.1:{relay.service.http_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/admin/status") as response:
            assert response.status == 404
            # Every error of the relay's port is JSON, routing errors included.
            assert await response.json() == {
                "error": "not_found",
                "detail": "no route for GET /admin/status",
            }
        async with http.post(base + "/readyz") as response:
            assert response.status == 405
            assert response.headers["Allow"]
            assert (await response.json())["error"] == "method_not_allowed"
