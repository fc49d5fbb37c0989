"""Admin page sessions and CSRF tokens: forged, expired and foreign cookies are refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from outbox_relay.config import Settings
from outbox_relay.http.ui_session import SESSION_SECONDS, Sessions


def test_a_session_is_accepted_until_it_expires() -> None:
    issued_at = 1_800_000_000.0
    cookie = Sessions("token", now=issued_at).issue()
    assert Sessions("token", now=issued_at + SESSION_SECONDS).check(cookie) is not None
    assert Sessions("token", now=issued_at + SESSION_SECONDS + 1).check(cookie) is None
    # a clock behind by more than the allowed skew does not accept a cookie "from the future"
    assert Sessions("token", now=issued_at - 301).check(cookie) is None


def test_forged_and_foreign_cookies_are_refused() -> None:
    sessions = Sessions("token")
    cookie = sessions.issue()
    version, issued, nonce, mac = cookie.split(".")
    assert sessions.check(cookie) is not None
    for forged in (
        f"{version}.{int(issued) + 3600}.{nonce}.{mac}",  # extended
        f"{version}.{issued}.{'0' * 32}.{mac}",  # another nonce
        f"{version}.{issued}.{nonce}.{'0' * 64}",
        f"v2.{issued}.{nonce}.{mac}",
        "v1.x.y.z",
        "",
        None,
        cookie + ".x",
    ):
        assert sessions.check(forged) is None, forged
    # rotating the admin token ends every session
    assert Sessions("rotated").check(cookie) is None


def test_csrf_tokens_are_bound_to_their_session() -> None:
    sessions = Sessions("token")
    one = sessions.check(sessions.issue())
    two = sessions.check(sessions.issue())
    assert one is not None and two is not None
    assert sessions.csrf_ok(one, sessions.csrf_for(one))
    assert not sessions.csrf_ok(one, sessions.csrf_for(two))
    assert not sessions.csrf_ok(one, None) and not sessions.csrf_ok(one, "")
    nonce = sessions.new_signin_nonce()
    assert sessions.signin_csrf_ok(nonce, sessions.signin_csrf(nonce))
    assert not sessions.signin_csrf_ok(None, sessions.signin_csrf(nonce))
    assert not sessions.signin_csrf_ok(sessions.new_signin_nonce(), sessions.signin_csrf(nonce))


@pytest.mark.parametrize("url", ["javascript:alert(1)", "grafana.local/d/x", "ftp://g/x"])
def test_the_grafana_link_must_be_http(url: str) -> None:
    with pytest.raises(ValidationError, match="must be an http:// or https:// URL"):
        Settings(grafana_url=url)
    assert Settings(grafana_url=" https://g.example/d/outbox-relay ").grafana_url == (
        "https://g.example/d/outbox-relay"
    )
