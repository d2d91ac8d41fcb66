"""Passport authenticity: W3C Verifiable Credentials 2.0 secured as `vc+jwt` (compact JWS).

A signed passport is a compact JWS whose payload is the credential and whose
`credentialSubject` is the passport document. It is verified against a trust list (issuer id
-> public keys by `kid`) and, when it names one, a W3C Bitstring Status List credential of its
issuer (revocation), all held locally: the plant may be offline. Pure: the caller gives the
trust list, the status lists and the time (docs/passport.md, "Authenticity").
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, OKPKey

# RFC 9864 names Ed25519 `Ed25519` and deprecates `EdDSA`; issuers still sign with the old name.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)

ALGORITHMS = ("ES256", "Ed25519", "EdDSA")
CREDENTIAL_TYPE = "vc+jwt"
STATUS_LIST_TYPE = "BitstringStatusListCredential"

PublicKey = ECKey | OKPKey


class Verdict(StrEnum):
    """The result of verifying one passport: the stable vocabulary the plant reports."""

    verified = "verified"  # signature by a trusted issuer's key, valid now, not revoked
    unsigned = "unsigned"  # a plain JSON passport: nothing to verify
    invalid_signature = "invalid_signature"  # tampered, or not a well-formed vc+jwt
    unknown_issuer = "unknown_issuer"  # issuer or key id not in the trust list
    revoked = "revoked"  # its bit is set in the issuer's status list
    expired = "expired"  # outside validFrom/nbf .. validUntil/exp
    status_unknown = "status_unknown"  # names a status list the plant does not hold


@dataclass(frozen=True)
class Authenticity:
    """A verdict with a one-line reason, the issuer and key that signed, and the validity end."""

    verdict: Verdict
    reason: str
    issuer: str | None = None
    kid: str | None = None
    valid_until: datetime | None = None
    status_entry: str | None = None  # "URL#index" of the revocation entry it names

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": self.verdict.value,
            "reason": self.reason,
            "issuer": self.issuer,
            "kid": self.kid,
            "valid_until": self.valid_until.isoformat() if self.valid_until else None,
            "status_entry": self.status_entry,
        }


UNSIGNED = Authenticity(Verdict.unsigned, "plain JSON passport: no signature to verify")


@dataclass(frozen=True)
class Issuer:
    """One trusted issuer: its id (a DID or URL) and its public keys by key id."""

    id: str
    keys: Mapping[str, PublicKey]
    name: str = ""


@dataclass(frozen=True)
class StatusList:
    """A verified Bitstring Status List (revocation) of one issuer, by its credential URL."""

    url: str
    issuer: str
    bits: bytes
    valid_until: datetime | None = None

    def is_set(self, index: int) -> bool:
        """Bit `index`, the first bit being the most significant bit of the first byte."""
        return bool(self.bits[index // 8] & (0x80 >> (index % 8)))

    @property
    def size(self) -> int:
        return len(self.bits) * 8


@dataclass
class TrustList:
    """Trusted issuers by id, and the status lists held (by URL)."""

    issuers: dict[str, Issuer] = field(default_factory=dict)
    status_lists: dict[str, StatusList] = field(default_factory=dict)


class CredentialError(ValueError):
    """A credential cannot be used; carries the verdict and a one-line reason."""

    def __init__(self, verdict: Verdict, reason: str) -> None:
        super().__init__(reason)
        self.verdict = verdict


def looks_like_jws(raw: bytes) -> bool:
    """True when the bytes hold a compact JWS (three base64url parts), told by content."""
    text = raw.strip()
    return text.startswith(b"eyJ") and text.count(b".") == 2 and b"{" not in text


def public_key(jwk: Mapping[str, Any], where: str) -> tuple[str, PublicKey]:
    """(kid, key) of a public JWK a trust list may hold: P-256 EC or Ed25519 OKP, with a kid,
    never a private key. ValueError names `where` and what is wrong."""
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError(f"{where}: key without a 'kid' (key rotation needs one per key)")
    if "d" in jwk:
        raise ValueError(f"{where}: key {kid!r} is a PRIVATE key: a trust list holds public keys")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    try:
        if kty == "EC" and crv == "P-256":
            return kid, ECKey.import_key(dict(jwk))
        if kty == "OKP" and crv == "Ed25519":
            return kid, OKPKey.import_key(dict(jwk))
    except (JoseError, ValueError, TypeError) as exc:
        raise ValueError(f"{where}: key {kid!r} cannot be read: {exc}") from None
    raise ValueError(
        f"{where}: key {kid!r} is {kty}/{crv}; accepted are EC P-256 (ES256) and OKP Ed25519"
    )


def _b64json(part: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise CredentialError(Verdict.invalid_signature, f"malformed JWS {what}: {exc}") from None
    if not isinstance(value, dict):
        raise CredentialError(Verdict.invalid_signature, f"malformed JWS {what}: not an object")
    return value


def _time(value: Any, name: str) -> datetime | None:
    """An XML Schema dateTime (validFrom/validUntil) or a NumericDate (nbf/exp), UTC."""
    if value is None:
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return t if t.tzinfo else t.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise CredentialError(Verdict.invalid_signature, f"{name}: {value!r} is not a date-time")


def _issuer_id(vc: dict[str, Any]) -> str:
    issuer = vc.get("issuer", vc.get("iss"))
    if isinstance(issuer, dict):
        issuer = issuer.get("id")
    if not isinstance(issuer, str) or not issuer:
        raise CredentialError(Verdict.invalid_signature, "credential names no issuer")
    return issuer


def _validity(vc: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    """(not before, not after): the stricter of the VC's validFrom/validUntil and JWT nbf/exp."""
    starts = [_time(vc.get(k), k) for k in ("validFrom", "nbf")]
    ends = [_time(vc.get(k), k) for k in ("validUntil", "exp")]
    return (
        max((t for t in starts if t), default=None),
        min((t for t in ends if t), default=None),
    )


def open_credential(token: str, trust: TrustList, now: datetime) -> tuple[Authenticity, dict]:
    """Verify a compact JWS credential's form, issuer, key, signature and validity period.

    Returns (authenticity, credential): the credential is the decoded payload even when the
    verdict is not `verified` (so a forged passport can still be named), but CredentialError
    when the token cannot be decoded at all. Revocation is `check_status`'s."""
    parts = token.strip().encode("ascii", "replace").split(b".")
    if len(parts) != 3:
        raise CredentialError(Verdict.invalid_signature, "malformed JWS: not three parts")
    header = _b64json(parts[0], "header")
    vc = _b64json(parts[1], "payload")
    alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")

    def result(verdict: Verdict, reason: str, **more: Any) -> tuple[Authenticity, dict]:
        return Authenticity(verdict, reason, issuer, kid, **more), vc

    issuer = _issuer_id(vc)
    if typ not in (CREDENTIAL_TYPE, f"application/{CREDENTIAL_TYPE}"):  # RFC 7515 4.1.9
        return result(Verdict.invalid_signature, f"JWS typ {typ!r} is not {CREDENTIAL_TYPE!r}")
    if alg not in ALGORITHMS:
        return result(
            Verdict.invalid_signature,
            f"algorithm {alg!r} not accepted (accepted: {', '.join(ALGORITHMS)})",
        )
    known = trust.issuers.get(issuer)
    if known is None:
        return result(Verdict.unknown_issuer, f"issuer {issuer} is not in the trust list")
    if kid is not None and kid not in known.keys:
        return result(
            Verdict.unknown_issuer, f"issuer {issuer} has no key {kid!r} in the trust list"
        )
    candidates = [known.keys[kid]] if kid is not None else list(known.keys.values())
    if not any(_signed_by(token, key, alg) for key in candidates):
        return result(
            Verdict.invalid_signature,
            f"signature does not verify with key {kid or '(any)'} of {issuer}: altered?",
        )
    start, end = _validity(vc)
    if start is not None and now < start:
        return result(Verdict.expired, f"not valid before {start.isoformat()}", valid_until=end)
    if end is not None and now >= end:
        return result(Verdict.expired, f"expired on {end.isoformat()}", valid_until=end)
    return result(Verdict.verified, f"signed by {issuer} (key {kid})", valid_until=end)


def _signed_by(token: str, key: PublicKey, alg: str) -> bool:
    try:
        jws.deserialize_compact(token.strip(), key, algorithms=[alg])
    except (JoseError, ValueError):
        return False
    return True


def revocation_entry(vc: dict[str, Any]) -> tuple[str, int] | None:
    """(status list URL, index) of the credential's revocation entry, or None."""
    status = vc.get("credentialStatus")
    entries = status if isinstance(status, list) else [status] if status else []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("statusPurpose") != "revocation":
            continue
        url, index = entry.get("statusListCredential"), entry.get("statusListIndex")
        try:
            idx = int(str(index))  # a string of digits in the specification
        except ValueError:
            raise CredentialError(
                Verdict.invalid_signature, f"credentialStatus.statusListIndex {index!r}"
            ) from None
        if not isinstance(url, str) or idx < 0:
            raise CredentialError(Verdict.invalid_signature, "malformed credentialStatus")
        return url, idx
    return None


def check_status(
    auth: Authenticity, vc: dict[str, Any], trust: TrustList, now: datetime
) -> Authenticity:
    """A verified credential's verdict once its revocation entry is looked up locally."""
    if auth.verdict is not Verdict.verified:
        return auth
    try:
        entry = revocation_entry(vc)
    except CredentialError as exc:
        return Authenticity(exc.verdict, str(exc), auth.issuer, auth.kid, auth.valid_until)
    if entry is None:
        return auth
    url, index = entry
    named = f"{url}#{index}"

    def unknown(reason: str) -> Authenticity:
        return Authenticity(
            Verdict.status_unknown, reason, auth.issuer, auth.kid, auth.valid_until, named
        )

    held = trust.status_lists.get(url)
    if held is None:
        return unknown(f"status list {url} not held: import it (plant passports status-lists)")
    if held.issuer != auth.issuer:
        return unknown(f"status list {url} is {held.issuer}'s, not the issuer's ({auth.issuer})")
    if held.valid_until is not None and now >= held.valid_until:
        return unknown(f"status list {url} expired on {held.valid_until.isoformat()}: refresh it")
    if index >= held.size:
        return unknown(f"index {index} is beyond status list {url} ({held.size} entries)")
    if held.is_set(index):
        return Authenticity(
            Verdict.revoked,
            f"revoked by {auth.issuer} (status list {url} index {index})",
            auth.issuer,
            auth.kid,
            auth.valid_until,
            named,
        )
    return Authenticity(
        Verdict.verified,
        f"{auth.reason}, not revoked (status list index {index})",
        auth.issuer,
        auth.kid,
        auth.valid_until,
        named,
    )


def verify_credential(token: str, trust: TrustList, now: datetime) -> tuple[Authenticity, dict]:
    """The passport credential's verdict and its decoded payload (see `open_credential`)."""
    auth, vc = open_credential(token, trust, now)
    return check_status(auth, vc, trust, now), vc


def decode_bitstring(encoded: Any) -> bytes:
    """The bits of a status list's `encodedList`: multibase base64url ('u' prefix), GZIP."""
    if not isinstance(encoded, str) or not encoded:
        raise ValueError("encodedList missing")
    text = encoded[1:] if encoded[0] == "u" else encoded
    try:
        return gzip.decompress(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, OSError, EOFError) as exc:
        raise ValueError(f"encodedList is not GZIP'd base64url: {exc}") from None


def status_list_of(token: str, trust: TrustList, now: datetime) -> StatusList:
    """A Bitstring Status List credential, verified against the trust list: the list, or
    CredentialError saying why it cannot be used."""
    auth, vc = open_credential(token, trust, now)
    if auth.verdict is not Verdict.verified:
        raise CredentialError(auth.verdict, f"status list credential: {auth.reason}")
    types = vc.get("type")
    if not isinstance(types, list) or STATUS_LIST_TYPE not in types:
        raise CredentialError(
            Verdict.invalid_signature, f"not a {STATUS_LIST_TYPE} (type {types!r})"
        )
    subject = vc.get("credentialSubject")
    if not isinstance(subject, dict) or subject.get("statusPurpose") != "revocation":
        raise CredentialError(
            Verdict.invalid_signature, "credentialSubject.statusPurpose is not 'revocation'"
        )
    url = vc.get("id")
    if not isinstance(url, str) or not url:
        raise CredentialError(Verdict.invalid_signature, "status list credential has no id (URL)")
    try:
        bits = decode_bitstring(subject.get("encodedList"))
    except ValueError as exc:
        raise CredentialError(Verdict.invalid_signature, f"credentialSubject.{exc}") from None
    return StatusList(url, str(auth.issuer), bits, auth.valid_until)
