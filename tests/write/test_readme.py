"""The README's "five minutes" examples are true: its curl requests get the answers it prints,
and the event it shows is the one the relay encodes for that request.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from outbox_relay.domain.events import encode_event
from outbox_relay.http.write_api import create_app

README = Path(__file__).resolve().parents[2] / "README.md"
Client = TestClient[web.Request, web.Application]


def _section() -> str:
    text = README.read_text()
    start = text.index("\n## Use it from your app in five minutes\n")
    return text[start : text.index("\n## ", start + 1)]


def _curl_examples() -> list[tuple[str, dict[str, Any], Any]]:
    """(path, body, printed answer) of every ``curl`` in a console block of the section."""
    examples = []
    for block in re.findall(r"```console\n(.*?)```", _section(), flags=re.S):
        if "curl" not in block:
            continue
        path = re.search(r"localhost:8080(/\S+)", block)
        body = re.search(r"-d '(.*?)'", block, flags=re.S)
        answer = block.rstrip().splitlines()[-1]
        assert path and body, block
        examples.append((path.group(1), json.loads(body.group(1)), json.loads(answer)))
    return examples


def _event_example() -> dict[str, Any]:
    [block] = re.findall(r"```json\n(.*?)```", _section(), flags=re.S)
    event: dict[str, Any] = json.loads(block)
    return event


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(database_url))) as test_client:
        yield test_client


async def test_the_curl_examples_get_the_answers_the_readme_prints(client: Client) -> None:
    examples = _curl_examples()
    assert len(examples) == 2
    for path, body, printed in examples:
        response = await client.post(path, json=body)
        assert await response.json() == printed, (path, body)


def test_the_event_shown_is_what_the_relay_sends_for_the_curl_example() -> None:
    shown = _event_example()
    (_, body, answer), _ = _curl_examples()
    sent = encode_event(
        row_id=answer["outboxId"],
        isrc=body["isrc"],
        title=body["title"],
        artist=body["artist"],
        album=body["album"],
        artwork_url=body.get("artworkUrl"),
        priority=body.get("priority"),
        force=body.get("force", False),
        ts_ms=shown["ts"],
    )
    assert orjson.loads(sent.body) == shown
