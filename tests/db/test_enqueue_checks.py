"""``enqueue_track``'s one-expression fast path (migration 005) accepts exactly what the checks
of migration 001 accept, and every refusal still carries their message.

The fast path only decides "valid, skip the checks"; a wrong "valid" would let a bad row into
the outbox, so arguments are generated around every rule's edge (NULL, each whitespace
character, lengths at the limits, URL shapes, priority bounds) and both sides are compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbox_relay.domain import limits

WHITESPACE = " \t\n\r\f\x0b"


def _around(limit: int) -> st.SearchStrategy[str]:
    return st.builds(
        lambda n, fill, edge: edge + fill * n + edge,
        st.integers(limit - 3, limit + 1),
        st.sampled_from(["a", " ", "é"]),
        st.sampled_from(["", " ", "\t"]),
    )


def _text(limit: int) -> st.SearchStrategy[str | None]:
    short = st.text(alphabet=st.sampled_from([*WHITESPACE, "a", "Z", "é", "\u00a0"]), max_size=4)
    return st.one_of(st.none(), short, _around(limit))


URLS = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "",
            " ",
            "https://img.example/a.jpg",
            "HTTP://IMG.EXAMPLE/A.JPG",
            "ftp://img.example/a.jpg",
            "https://img.example/a b.jpg",
            "https:// ",
            "https://",
            "http://x",
        ]
    ),
    # lengths around the URL limit (2045 to 2049 for 2048)
    st.integers(limits.URL_MAX_LENGTH - 11, limits.URL_MAX_LENGTH - 7).map(
        lambda n: "https://" + "a" * n
    ),
)

LOW, HIGH = limits.PRIORITY_MIN, limits.PRIORITY_MAX
FIELDS = (
    _text(limits.ISRC_MAX_LENGTH),
    _text(limits.TEXT_MAX_LENGTH),
    _text(limits.TEXT_MAX_LENGTH),
    _text(limits.TEXT_MAX_LENGTH),
    st.one_of(
        st.none(), st.integers(LOW - 2, HIGH + 2), st.sampled_from([LOW - 1, LOW, HIGH, HIGH + 1])
    ),
    URLS,
)
VALID = ("USRC17607839", "Song", "Artist", "Album", 0, "https://img.example/a.jpg")


def _one_field_off(position: int, value: object) -> tuple[object, ...]:
    """A valid call with one argument replaced: each rule's edge, seen on its own."""
    return (*VALID[:position], value, *VALID[position + 1 :])


ARGUMENTS = st.one_of(
    st.tuples(*FIELDS),
    st.integers(0, len(FIELDS) - 1).flatmap(
        lambda i: FIELDS[i].map(lambda value: _one_field_off(i, value))
    ),
)

ENQUEUE = "SELECT outbox.enqueue_track(%s, %s, %s, %s, %s, false, %s)"
# The checks of migration 001, in the order enqueue_track runs them.
CHECKS = (
    "SELECT outbox.check_text('enqueue_track', 'isrc', %s, 64, false), "
    "       outbox.check_text('enqueue_track', 'title', %s, 1000), "
    "       outbox.check_text('enqueue_track', 'artist', %s, 1000), "
    "       outbox.check_text('enqueue_track', 'album', %s, 1000), "
    "       outbox.check_artwork_url('enqueue_track', %s)"
)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url) as connection:
        yield connection


def _error(conn: psycopg.Connection, statement: str, params: tuple[object, ...]) -> str | None:
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(statement, params)  # type: ignore[arg-type]
    except psycopg.DataError as exc:
        return str(exc.diag.message_primary)
    return None


@pytest.mark.slow
@settings(
    max_examples=1500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(arguments=ARGUMENTS)
def test_the_fast_path_accepts_exactly_what_the_checks_accept(
    conn: psycopg.Connection,
    arguments: tuple[Any, ...],
) -> None:
    isrc, title, artist, album, priority, artwork_url = arguments
    got = _error(conn, ENQUEUE, (isrc, title, artist, album, priority, artwork_url))
    expected = _error(conn, CHECKS, (isrc, title, artist, album, artwork_url))
    if expected is None and priority is not None and not LOW <= priority <= HIGH:
        expected = (
            f"enqueue_track: priority must be an integer from {LOW} to {HIGH} (got {priority})"
        )
    assert got == expected
