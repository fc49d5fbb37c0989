"""Qdrant refusing connections or hanging: events still go out, delayed at most by the timeout."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from .conftest import Fleet, delivery_report, figure, hanging_tcp_server, refused_port

# Slow (long fault tests): CI runs them, -m "not slow" leaves them out.
pytestmark = pytest.mark.slow

TIMEOUT = 0.5


@pytest.fixture(params=["refused", "hanging"])
def qdrant_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "refused":
        yield f"http://127.0.0.1:{refused_port()}"
    else:
        with hanging_tcp_server() as port:
            yield f"http://127.0.0.1:{port}"


async def test_unavailable_qdrant_fails_open_within_its_timeout(
    fleet: Fleet, qdrant_url: str, request: pytest.FixtureRequest
) -> None:
    name = request.node.callspec.id
    relay = await fleet.start(
        name="relay", QDRANT_URL=qdrant_url, OUTBOX_QDRANT_TIMEOUT=str(TIMEOUT)
    )
    latencies = []
    for n in range(5):
        began = time.monotonic()
        await fleet.enqueue_tracks(20, prefix=f"USQD{n}")
        await fleet.standin.wait_for_events(20 * (n + 1), timeout=20)
        latencies.append(time.monotonic() - began)
    figure(f"qdrant.{name}.write_to_accepted_s", [round(s, 2) for s in latencies])
    await fleet.wait_drained(timeout=10)
    report = await delivery_report(fleet)
    assert report.by_status == {"published": 100}
    assert report.lost == []
    output = relay.output()
    assert '"qdrant_error"' in output
    # Bounded by the check's timeout: the existence check, then at most the collection check
    # that follows a failed retrieve (each capped at OUTBOX_QDRANT_TIMEOUT), plus slack.
    assert max(latencies) < 2 * TIMEOUT + 3.0, latencies
