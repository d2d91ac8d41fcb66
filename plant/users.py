"""HMI users: argon2-hashed passwords, roles, the first admin, and config/users.toml.

Passwords are never stored or logged in clear; only argon2id hashes (argon2-cffi defaults).
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import Field
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from plant.config import Strict, load_file
from plant.domain import ROLE_RANK, Role
from plant.store import SessionRow, Store, UserRow

USERS_FILE = "users.toml"
MIN_PASSWORD_LEN = 10
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HASHER = PasswordHasher()
# A valid hash to verify against when the user does not exist, so timing does not reveal names.
_DUMMY_HASH = _HASHER.hash("no such user, constant-time filler")


def use_hash_cost(time_cost: int, memory_kib: int) -> None:
    """Set the argon2 cost for new hashes (a slow panel PC may need less; tests use the least).

    Existing hashes keep verifying; they are rehashed with the new cost at the next login.
    """
    global _HASHER, _DUMMY_HASH
    if (_HASHER.time_cost, _HASHER.memory_cost) == (time_cost, memory_kib):
        return
    _HASHER = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
    _DUMMY_HASH = _HASHER.hash("no such user, constant-time filler")


class UserError(ValueError):
    """A user cannot be created or changed as asked; the message says why in one line."""


class AuthSection(Strict):
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    login_max_failures: int = Field(5, ge=1, le=1000)
    login_window_s: float = Field(60.0, gt=0, le=86400)
    # argon2id cost (RFC 9106 low-memory profile by default: t=3, m=64 MiB).
    argon2_time_cost: int = Field(3, ge=1, le=20)
    argon2_memory_kib: int = Field(65536, ge=64, le=4 * 1024 * 1024)


class AlarmSection(Strict):
    max_shelve_hours: float = Field(8.0, gt=0, le=24 * 7)
    flood_count: int = Field(10, ge=1)
    flood_window_min: float = Field(10.0, gt=0)


class UsersConfig(Strict):
    """config/users.toml (optional): login policy and the operator limits on alarm handling."""

    auth: AuthSection = AuthSection()
    alarms: AlarmSection = AlarmSection()


def load_users_config(config_dir: Path) -> UsersConfig:
    """config/users.toml, or the defaults when the file does not exist."""
    return load_file(config_dir / USERS_FILE, UsersConfig, required=False)


@dataclass(frozen=True, slots=True)
class User:
    """A user as the rest of the software sees it: no hash."""

    name: str
    role: Role
    active: bool

    def can(self, needed: Role) -> bool:
        """True if this user's role is at least `needed` (viewer < operator < engineer < admin)."""
        return self.active and ROLE_RANK[self.role] >= ROLE_RANK[needed]


def _user(row: UserRow) -> User:
    return User(row.name, Role(row.role), row.active)


def _check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise UserError(f"role {role!r} is not one of {', '.join(r.value for r in Role)}") from None


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LEN:
        raise UserError(f"password must have at least {MIN_PASSWORD_LEN} characters")


def check_new_user(name: str, role: str) -> Role:
    """Check a name and role before asking for a password; returns the role."""
    if not NAME_RE.match(name):
        raise UserError(f"user name {name!r}: use 1-64 letters, digits, '_', '.' or '-'")
    return _check_role(role)


def add_user(store: Store, name: str, role: str, password: str, *, by: str = "cli") -> User:
    """Create a user; the name must be new, the role known and the password long enough."""
    r = check_new_user(name, role)
    _check_password(password)
    try:
        with store.begin() as s:
            s.add(UserRow(name=name, role=r.value, password_hash=_HASHER.hash(password)))
            store.audit(s, by, "user.add", f"user:{name}", None, f"role={r.value}")
    except IntegrityError:
        raise UserError(f"user {name!r} already exists") from None
    return User(name, r, True)


def _end_sessions(s: Session, name: str) -> None:
    """A changed password, role or login state ends every open session of the user, in every
    HMI process (they check the store on each request and WebSocket tick)."""
    s.execute(delete(SessionRow).where(SessionRow.user == name))


def set_password(store: Store, name: str, password: str, *, by: str = "cli") -> None:
    """Replace a user's password (the old one is not needed: this is an admin action)."""
    _check_password(password)
    with store.begin() as s:
        row = s.scalars(select(UserRow).where(UserRow.name == name)).first()
        if row is None:
            raise UserError(f"no user {name!r}")
        row.password_hash = _HASHER.hash(password)
        store.audit(s, by, "user.password", f"user:{name}", "***", "***")
        _end_sessions(s, name)


def set_role(store: Store, name: str, role: str, *, by: str) -> User:
    """Change a user's role, audited with old and new role."""
    r = _check_role(role)
    with store.begin() as s:
        row = s.scalars(select(UserRow).where(UserRow.name == name)).first()
        if row is None:
            raise UserError(f"no user {name!r}")
        old = row.role
        row.role = r.value
        store.audit(s, by, "user.role", f"user:{name}", old, r.value)
        _end_sessions(s, name)
        return _user(row)


def set_active(store: Store, name: str, active: bool, *, by: str) -> User:
    """Disable or re-enable a login without deleting the user's audit history."""
    with store.begin() as s:
        row = s.scalars(select(UserRow).where(UserRow.name == name)).first()
        if row is None:
            raise UserError(f"no user {name!r}")
        old = row.active
        row.active = active
        store.audit(s, by, "user.active", f"user:{name}", old, active)
        _end_sessions(s, name)
        return _user(row)


def list_users(store: Store) -> list[User]:
    with store.session() as s:
        return [_user(r) for r in s.scalars(select(UserRow).order_by(UserRow.name))]


def get_user(store: Store, name: str) -> User | None:
    with store.session() as s:
        row = s.scalars(select(UserRow).where(UserRow.name == name)).first()
        return _user(row) if row else None


def verify(store: Store, name: str, password: str) -> User | None:
    """The user if the name exists, is active and the password matches; else None."""
    with store.session() as s:
        row = s.scalars(select(UserRow).where(UserRow.name == name)).first()
    try:
        _HASHER.verify(row.password_hash if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or not row.active:
        return None
    if _HASHER.check_needs_rehash(row.password_hash):
        with store.begin() as s:
            fresh = s.get(UserRow, row.id)
            if fresh is not None:
                fresh.password_hash = _HASHER.hash(password)
    return _user(row)


def ensure_admin(store: Store) -> str | None:
    """On a database without users, create `admin` and return its generated password (once)."""
    with store.session() as s:
        if int(s.scalar(select(func.count(UserRow.id))) or 0) > 0:
            return None
    password = secrets.token_urlsafe(12)
    try:
        add_user(store, "admin", Role.admin.value, password, by="bootstrap")
    except UserError:  # another HMI process created it first
        return None
    return password


def write_secret(path: Path, text: str) -> None:
    """Write `text` to `path` readable and writable only by this process's user (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)  # an existing file keeps its mode on open: set it
        fh.write(text)
