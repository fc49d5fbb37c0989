"""Admin page sessions and CSRF tokens: forged, expired and foreign cookies are refused; wrong
tokens are limited per address."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from outbox_relay.config import Settings
from outbox_relay.http.ui_session import SESSION_SECONDS, Sessions, SigninLimiter


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


def test_the_signin_limiter_counts_wrong_tokens_per_address_within_its_window() -> None:
    now = [1000.0]
    limiter = SigninLimiter(limit=3, window=60.0, clock=lambda: now[0])
    for n in (1, 2, 3):
        assert limiter.retry_after("10.0.0.1") is None
        assert limiter.failed("10.0.0.1") == n
        now[0] += 10
    # three wrong tokens at 1000, 1010, 1020; at 1030 the oldest leaves the window at 1060
    assert limiter.retry_after("10.0.0.1") == pytest.approx(30.0)
    assert limiter.retry_after("10.0.0.2") is None  # another address is not held up
    now[0] = 1060.0
    assert limiter.retry_after("10.0.0.1") is None
    assert limiter.failed("10.0.0.1") == 3  # 1010, 1020, 1060: limited again
    assert limiter.retry_after("10.0.0.1") == pytest.approx(10.0)
    limiter.succeeded("10.0.0.1")  # a correct token clears the count
    assert limiter.retry_after("10.0.0.1") is None


def test_the_signin_limiter_tracks_a_bounded_number_of_addresses() -> None:
    limiter = SigninLimiter(limit=1, window=60.0, max_addresses=2, clock=lambda: 0.0)
    for address in ("a", "b", "c"):
        limiter.failed(address)
    assert limiter.retry_after("a") is None  # tracked longest, dropped for "c"
    assert limiter.retry_after("b") == limiter.retry_after("c") == 60.0
