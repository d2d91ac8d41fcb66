"""The plant's trust list (config/trust/issuers.toml + JWKS files) and the status lists it holds
(config/trust/status/), and signed passports read with them (docs/passport.md, "Authenticity")."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from models.credentials import (
    UNSIGNED,
    Authenticity,
    CredentialError,
    Issuer,
    PublicKey,
    StatusList,
    TrustList,
    Verdict,
    looks_like_jws,
    public_key,
    status_list_of,
    verify_credential,
)
from models.passport import Passport, PassportError, load_document, passport_from_document
from plant.config import ConfigError, Strict, load_file

TRUST_DIR = "trust"
ISSUERS_FILE = "issuers.toml"
STATUS_DIR = "status"


class IssuerEntry(Strict):
    """One `[[issuer]]` of issuers.toml."""

    id: str = Field(min_length=1)
    name: str = ""
    jwks: str = Field(min_length=1, description="JWKS file beside issuers.toml")


class IssuersFile(Strict):
    """config/trust/issuers.toml."""

    issuer: list[IssuerEntry] = Field(default_factory=list)


def _jwks(path: Path) -> dict[str, PublicKey]:
    try:
        doc = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a JWKS (JSON) file: {exc}") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ConfigError(f"{path}: keys: a JWKS needs a non-empty 'keys' list")
    found: dict[str, PublicKey] = {}
    for i, jwk in enumerate(keys):
        if not isinstance(jwk, dict):
            raise ConfigError(f"{path}: keys[{i}]: not an object")
        try:
            kid, key = public_key(jwk, f"{path}: keys[{i}]")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if kid in found:
            raise ConfigError(f"{path}: keys[{i}]: kid {kid!r} appears twice")
        found[kid] = key
    return found


def load_trust(config_dir: Path, now: datetime | None = None) -> TrustList:
    """The trust list and the verified status lists under <config_dir>/trust; no issuers.toml
    means no trusted issuer. ConfigError names the file and what is wrong."""
    base = config_dir / TRUST_DIR
    entries = load_file(base / ISSUERS_FILE, IssuersFile, required=False).issuer
    trust = TrustList()
    for entry in entries:
        if entry.id in trust.issuers:
            raise ConfigError(f"{base / ISSUERS_FILE}: issuer {entry.id} is listed twice")
        trust.issuers[entry.id] = Issuer(entry.id, _jwks(base / entry.jwks), entry.name)
    when = now or datetime.now(UTC)
    for path in sorted((base / STATUS_DIR).glob("*.jwt")):
        try:
            held = status_list_of(path.read_text("ascii", "replace"), trust, when)
        except CredentialError as exc:
            if exc.verdict is Verdict.expired:
                continue  # an expired list is no list: its entries are status_unknown
            raise ConfigError(f"{path}: {exc}") from None
        trust.status_lists[held.url] = held
    return trust


def status_list_path(config_dir: Path, url: str) -> Path:
    """Where the status list credential with this URL is kept (one file per URL)."""
    name = hashlib.sha256(url.encode()).hexdigest()[:20]
    return config_dir / TRUST_DIR / STATUS_DIR / f"{name}.jwt"


def keep_status_list(config_dir: Path, token: str, trust: TrustList) -> StatusList:
    """Verify a status list credential against the trust list and keep it (replacing the one
    with the same URL); CredentialError when it does not verify."""
    held = status_list_of(token, trust, datetime.now(UTC))
    path = status_list_path(config_dir, held.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(token.strip() + "\n", "ascii")
    tmp.replace(path)
    trust.status_lists[held.url] = held
    return held


class UnreadableCredential(PassportError):
    """A signed passport whose JWS cannot even be decoded: no passport, verdict attached."""

    def __init__(self, message: str, authenticity: Authenticity) -> None:
        super().__init__(message)
        self.authenticity = authenticity


@dataclass(frozen=True)
class SignedPassport:
    """A passport file's parsed passport, its authenticity and, when signed, the raw JWS."""

    passport: Passport
    document: dict[str, Any]
    authenticity: Authenticity
    credential: str | None


def read_passport(
    raw: bytes, *, source: str, trust: TrustList, now: datetime | None = None
) -> SignedPassport:
    """A passport file of any extension, told by content: plain JSON (`unsigned`) or a
    `vc+jwt` credential verified against the trust list, whose credentialSubject is read as
    the passport even when it does not verify (so the forged passport can be named and set
    aside). PassportError when no passport can be read at all."""
    if not looks_like_jws(raw.lstrip(b"\xef\xbb\xbf")):
        doc = load_document(raw, source=source)
        return SignedPassport(passport_from_document(doc, source=source), doc, UNSIGNED, None)
    token = raw.lstrip(b"\xef\xbb\xbf").decode("ascii", "replace").strip()
    try:
        auth, vc = verify_credential(token, trust, now or datetime.now(UTC))
    except CredentialError as exc:
        raise UnreadableCredential(
            f"{source}: signed passport cannot be read: {exc}", Authenticity(exc.verdict, str(exc))
        ) from None
    subject = vc.get("credentialSubject")
    if not isinstance(subject, dict):
        raise UnreadableCredential(
            f"{source}: credentialSubject: the credential holds no passport",
            Authenticity(Verdict.invalid_signature, "credentialSubject holds no passport"),
        )
    passport = passport_from_document(subject, source=source).model_copy(
        update={"authenticity": auth.verdict.value, "authenticity_reason": auth.reason}
    )
    return SignedPassport(passport, subject, auth, token)


def reverify(token: str, trust: TrustList, now: datetime | None = None) -> Authenticity:
    """The verdict of a stored credential now (after a status list or trust list change)."""
    try:
        return verify_credential(token, trust, now or datetime.now(UTC))[0]
    except CredentialError as exc:
        return Authenticity(exc.verdict, str(exc))
