"""Who is asking: sessions (browser cookie or API bearer token), roles, CSRF and login throttling.

Sessions live in the store (`hmi_sessions`, token hashed with SHA-256), so any number of HMI
processes accept the same login. Browser sessions use an HttpOnly, SameSite=Strict cookie plus a
per-session CSRF token that every non-GET request must echo in `X-CSRF-Token` (or a `csrf` form
field); bearer tokens from `POST /api/login` need no CSRF token because browsers never send them
on their own.

Logins are throttled per account and per client; the client is the peer address, or the address
a configured reverse proxy (`[hmi] trusted_proxies`) put in X-Forwarded-For.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import delete
from starlette.requests import HTTPConnection

from plant.domain import Role
from plant.store import SessionRow, Store, utcnow
from plant.users import User, get_user

COOKIE = "plant_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Declares the bearer scheme in the OpenAPI document; `require` does the actual check.
BEARER = HTTPBearer(
    auto_error=False,
    description="`POST /api/login` returns the token; browsers use the session cookie instead.",
)
Networks = Sequence[IPv4Network | IPv6Network]
THROTTLE_KEYS_SWEEP = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the user, the session's CSRF token and how they came in."""

    user: User
    csrf: str
    via: str  # "cookie" or "bearer"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(store: Store, user: User, hours: float) -> tuple[str, str, datetime]:
    """Start a session; returns (token, csrf token, expiry). Expired sessions are purged."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    now = utcnow()
    expires = now + timedelta(hours=hours)
    with store.begin() as s:
        s.execute(delete(SessionRow).where(SessionRow.expires_at < now))
        s.add(SessionRow(token_hash=_hash(token), user=user.name, csrf=csrf, expires_at=expires))
        store.audit(s, user.name, "login", f"user:{user.name}", None, f"role={user.role}")
    return token, csrf, expires


def close_session(store: Store, token: str, user: str) -> None:
    """Log out: the token stops working everywhere at once."""
    with store.begin() as s:
        s.execute(delete(SessionRow).where(SessionRow.token_hash == _hash(token)))
        store.audit(s, user, "logout", f"user:{user}", None, None)


def _token_of(request: HTTPConnection) -> tuple[str, str] | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), "bearer"
    cookie = request.cookies.get(COOKIE)
    return (cookie, "cookie") if cookie else None


def principal_of(request: HTTPConnection) -> Principal | None:
    """The caller behind this request's bearer token or session cookie, if it is valid."""
    found = _token_of(request)
    if found is None:
        return None
    token, via = found
    store: Store = request.app.state.store
    with store.session() as s:
        row = s.get(SessionRow, _hash(token))
    if row is None:
        return None
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
    if expires < utcnow():
        return None
    user = get_user(store, row.user)
    if user is None or not user.active:
        return None
    return Principal(user, row.csrf, via)


def session_token(request: HTTPConnection) -> str | None:
    found = _token_of(request)
    return found[0] if found else None


def require(role: Role) -> Callable[..., Principal]:
    """A FastAPI dependency: 401 without a valid login, 403 below `role` or without CSRF."""

    def dependency(
        request: Request,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> Principal:
        who = principal_of(request)
        if who is None:
            raise HTTPException(
                401, "login required", headers={"WWW-Authenticate": 'Bearer realm="plant"'}
            )
        if not who.user.can(role):
            raise HTTPException(403, f"needs role {role.value} or higher; you are {who.user.role}")
        if request.method not in SAFE_METHODS and who.via == "cookie":
            sent = request.headers.get(CSRF_HEADER, "")
            if not secrets.compare_digest(sent, who.csrf):
                raise HTTPException(403, f"CSRF token missing or wrong ({CSRF_HEADER} header)")
        return who

    dependency.__name__ = f"require_{role.value}"
    return dependency


class LoginThrottle:
    """Failed logins in a sliding window per key (an account, a client), per HMI process.

    A successful login does not clear the count, so correct logins in between buy no guesses.
    """

    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        """The key's failures still in the window (older ones dropped, empty keys forgotten)."""
        q = self._failures.get(key, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            self._failures.pop(key, None)
        return q

    def retry_after(self, *keys: str) -> int | None:
        """Seconds until none of `keys` is over the limit, or None if a try is allowed now."""
        now = time.monotonic()
        waits = []
        with self._lock:
            for key in keys:
                q = self._recent(key, now)
                if len(q) >= self.max_failures:
                    waits.append(max(1, int(q[-self.max_failures] + self.window_s - now) + 1))
        return max(waits) if waits else None

    def tracked(self) -> int:
        """How many accounts and clients have failures on record (expired ones may linger)."""
        with self._lock:
            return len(self._failures)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > THROTTLE_KEYS_SWEEP:  # many names tried: forget old ones
                for old in list(self._failures):
                    self._recent(old, now)
            for key in keys:
                q = self._recent(key, now)
                q.append(now)
                self._failures[key] = q


def _within(host: str, networks: Networks) -> bool:
    try:
        addr = ip_address(host)
    except ValueError:
        return False
    return any(addr in net for net in networks)


def client_of(request: HTTPConnection, trusted_proxies: Networks = ()) -> str:
    """The client address the throttle counts against: the peer, or, when the peer is a trusted
    reverse proxy, the nearest X-Forwarded-For address that is not itself a trusted proxy."""
    peer = request.client.host if request.client else "unknown"
    if not _within(peer, trusted_proxies):
        return peer
    hops = [
        h.strip()
        for line in request.headers.getlist("x-forwarded-for")
        for h in line.split(",")
        if h.strip()
    ]
    for hop in reversed(hops):
        if not _within(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer
