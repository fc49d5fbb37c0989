"""Sessions and CSRF tokens of the admin page, stateless and shared by every replica.

Signing in exchanges ``OUTBOX_ADMIN_TOKEN`` for a session cookie ``v1.<issued>.<nonce>.<mac>``:
a MAC, under a key derived from the admin token, of when it was issued and a random nonce. Any
replica behind a load balancer checks it without shared state; rotating the token ends every
session. A session lasts :data:`SESSION_SECONDS`.

CSRF: every form carries a token derived from the session (HMAC of its nonce under the same
key), so a page of another site can neither read nor forge it (the cookie is also
``SameSite=Strict``). The sign-in form, before any session, is bound the same way to a random
pre-session cookie.

Guessing the token: :class:`SigninLimiter` answers 429 to an address after 5 wrong tokens
within a minute.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

SESSION_COOKIE: Final = "outbox_admin_session"
SIGNIN_COOKIE: Final = "outbox_admin_signin"
SESSION_SECONDS: Final = 12 * 3600
# A clock a little ahead on another replica must not make a fresh cookie "from the future".
_SKEW_SECONDS: Final = 300


@dataclass(frozen=True, slots=True)
class Session:
    """A valid session: its nonce names it in logs (``who``) and binds its CSRF token."""

    nonce: str
    issued: int

    @property
    def label(self) -> str:
        """A short name for audit logs: enough to tell sessions apart, useless to replay."""
        return f"session:{self.nonce[:8]}"


class Sessions:
    """Issues and checks session cookies and CSRF tokens for one admin token."""

    def __init__(self, admin_token: str, *, now: float | None = None) -> None:
        self._key = hmac.new(
            admin_token.encode(), b"outbox-relay admin page v1", hashlib.sha256
        ).digest()
        self._now = now

    def _time(self) -> int:
        return int(self._now if self._now is not None else time.time())

    def _mac(self, *parts: str) -> str:
        return hmac.new(self._key, ".".join(parts).encode(), hashlib.sha256).hexdigest()

    def token_matches(self, given: str, expected: str) -> bool:
        """The admin token check, in constant time."""
        return hmac.compare_digest(given.encode(), expected.encode())

    def issue(self) -> str:
        """A new session cookie value."""
        issued = str(self._time())
        nonce = secrets.token_hex(16)
        return f"v1.{issued}.{nonce}.{self._mac('session', issued, nonce)}"

    def check(self, cookie: str | None) -> Session | None:
        """The session a cookie value carries, or None when it is absent, forged or expired."""
        if not cookie:
            return None
        parts = cookie.split(".")
        if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit():
            return None
        _, issued, nonce, mac = parts
        if not hmac.compare_digest(mac.encode(), self._mac("session", issued, nonce).encode()):
            return None
        age = self._time() - int(issued)
        if age > SESSION_SECONDS or age < -_SKEW_SECONDS:
            return None
        return Session(nonce=nonce, issued=int(issued))

    def csrf_for(self, session: Session) -> str:
        """The CSRF token of a session's forms."""
        return self._mac("csrf", session.nonce)

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(
            given.encode(), self.csrf_for(session).encode()
        )

    @staticmethod
    def new_signin_nonce() -> str:
        """The pre-session cookie that the sign-in form's CSRF token is bound to."""
        return secrets.token_hex(16)

    def signin_csrf(self, nonce: str) -> str:
        return self._mac("signin", nonce)

    def signin_csrf_ok(self, nonce: str | None, given: str | None) -> bool:
        if not nonce or given is None:
            return False
        return hmac.compare_digest(given.encode(), self.signin_csrf(nonce).encode())


class SigninLimiter:
    """Failed sign-ins per client address: after ``limit`` wrong tokens within ``window``
    seconds, the address may not try again until the oldest of them is ``window`` old.

    In memory, per relay process (replicas do not share it): it slows guessing to ``limit``
    tokens a minute per address and replica. A correct token clears the address's count. The
    addresses tracked are bounded (``max_addresses``, the one tracked longest dropped first),
    so a flood from many addresses costs a bounded amount of memory.
    """

    def __init__(
        self,
        *,
        limit: int = 5,
        window: float = 60.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._max_addresses = max_addresses
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        now = self._clock()
        failures = self._recent(address, now)
        if failures is None or len(failures) < self.limit:
            return None
        return failures[-self.limit] + self.window - now

    def failed(self, address: str) -> int:
        """Records a wrong token from ``address``; returns its failures within the window."""
        now = self._clock()
        failures = self._recent(address, now)
        if failures is None:
            if len(self._failures) >= self._max_addresses:
                # the address tracked longest goes first (dicts keep insertion order): O(1)
                del self._failures[next(iter(self._failures))]
            failures = self._failures[address] = deque(maxlen=self.limit)
        failures.append(now)
        return len(failures)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
