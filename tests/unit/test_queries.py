"""The named-query file parses into the statements the relay runs."""

from __future__ import annotations

import pytest

from outbox_relay.db.queries import QUERIES, parse


def test_all_relay_statements_are_present() -> None:
    assert {"claim", "finish", "requeue_dead", "summary", "recent_dead_letters"} <= set(QUERIES)
    assert "FOR UPDATE SKIP LOCKED" in QUERIES["claim"]
    assert not any(
        line.lstrip().startswith("--")
        for q in QUERIES.values()
        for q_line in [q]
        for line in q_line.splitlines()
    )


def test_parse_rejects_a_repeated_name() -> None:
    with pytest.raises(ValueError, match="used twice"):
        parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
