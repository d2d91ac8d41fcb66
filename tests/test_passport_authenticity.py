"""Signed passports (W3C VC 2.0 `vc+jwt`): verified, forged, unknown key, revoked, expired,
unsigned, each through `plant classify --json`, `plant passports import` and the status lists
(all as processes); the routing policy on a steel-can cell."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import ECKey, OKPKey

from models.credentials import Issuer, TrustList, Verdict, verify_credential
from models.passport import parse_passport
from plant.decide import Evidence, decide_batch
from plant.passports import authenticity_now, find_passport, import_passports, lookup_passport
from plant.routing import RoutingRules
from plant.store import Store
from plant.trust import load_trust

REPO = Path(__file__).resolve().parent.parent
ISSUER = "did:web:cells.example.com"
STATUS_URL = "https://cells.example.com/status/1"


def passport_doc(pid: str, chemistry: str = "NMC811") -> dict[str, Any]:
    return {
        "format": "plant-passport/1",
        "passport_id": pid,
        "chemistry": chemistry,
        "mass": {"value": 46, "unit": "g"},
    }


def sign(payload: dict[str, Any], key: Any, alg: str, kid: str | None = None) -> str:
    header = {"alg": alg, "typ": "vc+jwt", **({"kid": kid} if kid else {})}
    return jws.serialize_compact(header, json.dumps(payload), key, algorithms=[alg])


def credential(subject: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "@context": ["https://www.w3.org/ns/credentials/v2"],
        "type": ["VerifiableCredential"],
        "issuer": ISSUER,
        "validFrom": "2024-01-01T00:00:00Z",
        "credentialSubject": subject,
        **extra,
    }


def revocable(index: int) -> dict[str, Any]:
    return {
        "credentialStatus": {
            "type": "BitstringStatusListEntry",
            "statusPurpose": "revocation",
            "statusListIndex": str(index),
            "statusListCredential": STATUS_URL,
        }
    }


def encode_bitstring(bits: bytes) -> str:
    """A status list's `encodedList`, as an issuer writes it: GZIP, base64url, multibase 'u'."""
    return "u" + base64.urlsafe_b64encode(gzip.compress(bits)).decode().rstrip("=")


def status_list(revoked: set[int], size: int = 1024) -> dict[str, Any]:
    bits = bytearray(size // 8)
    for i in revoked:
        bits[i // 8] |= 0x80 >> (i % 8)
    return credential(
        {
            "id": f"{STATUS_URL}#list",
            "type": "BitstringStatusList",
            "statusPurpose": "revocation",
            "encodedList": encode_bitstring(bytes(bits)),
        },
        id=STATUS_URL,
        type=["VerifiableCredential", "BitstringStatusListCredential"],
    )


@pytest.fixture
def keys() -> dict[str, Any]:
    return {
        "es": ECKey.generate_key("P-256", parameters={"kid": "es-2026"}),
        "ed": OKPKey.generate_key("Ed25519", parameters={"kid": "ed-2026"}),
        "stranger": OKPKey.generate_key("Ed25519", parameters={"kid": "ed-2026"}),
    }


@pytest.fixture
def config(tmp_path: Path, keys: dict[str, Any]) -> Path:
    """A plant config with a SQLite database and a trust list naming one issuer, two keys."""
    d = tmp_path / "config"
    (d / "trust").mkdir(parents=True)
    (d / "plant.toml").write_text(
        f'[plant]\ndata_dir = "{tmp_path / "var"}"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "plant.db"}"\n'
    )
    # The strict policy: an unsigned passport may not decide a steel can alone.
    rules = (REPO / "config" / "routing.toml").read_text()
    (d / "routing.toml").write_text(
        rules.replace("unsigned_decides_alone = true", "unsigned_decides_alone = false")
    )
    jwks = {"keys": [keys["es"].as_dict(private=False), keys["ed"].as_dict(private=False)]}
    (d / "trust" / "cells.jwks.json").write_text(json.dumps(jwks))
    (d / "trust" / "issuers.toml").write_text(
        f'[[issuer]]\nid = "{ISSUER}"\nname = "Example Cells"\njwks = "cells.jwks.json"\n'
    )
    return d


def plant(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plant.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def flip_one_byte(token: str) -> str:
    """The token with one character of its payload changed (a forged passport)."""
    head, body, sig = token.split(".")
    doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw = json.dumps(doc).replace("NMC811", "NMC812").encode()  # one byte
    return f"{head}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}.{sig}"


def write(d: Path, name: str, text: str) -> Path:
    path = d / name
    path.write_text(text)
    return path


@pytest.mark.e2e  # `plant` commands as processes
def test_each_passport_gets_its_verdict_through_classify(
    config: Path, keys: dict[str, Any], tmp_path: Path
) -> None:
    files = tmp_path / "in"
    files.mkdir()
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    made = {
        "es256.jwt": sign(credential(passport_doc("P-ES")), keys["es"], "ES256", "es-2026"),
        "ed25519.jwt": sign(credential(passport_doc("P-ED")), keys["ed"], "Ed25519", "ed-2026"),
        "eddsa.txt": sign(credential(passport_doc("P-EDDSA")), keys["ed"], "EdDSA", "ed-2026"),
        "forged.jwt": flip_one_byte(
            sign(credential(passport_doc("P-FORGED")), keys["ed"], "Ed25519", "ed-2026")
        ),
        "stranger.jwt": sign(
            credential(passport_doc("P-STRANGER")), keys["stranger"], "Ed25519", "ed-2026"
        ),
        "revoked.jwt": sign(
            credential(passport_doc("P-REVOKED"), **revocable(7)), keys["es"], "ES256", "es-2026"
        ),
        "kept.jwt": sign(
            credential(passport_doc("P-KEPT"), **revocable(8)), keys["es"], "ES256", "es-2026"
        ),
        "expired.jwt": sign(
            credential(passport_doc("P-OLD"), validUntil=past), keys["ed"], "Ed25519", "ed-2026"
        ),
        "plain.json": json.dumps(passport_doc("P-PLAIN")),
    }
    for name, text in made.items():
        write(files, name, text)
    status = write(tmp_path, "status.jwt", sign(status_list({7}), keys["ed"], "Ed25519", "ed-2026"))
    assert plant(config, "db", "upgrade").returncode == 0
    imported = plant(config, "passports", "status-lists", "import", str(status))
    assert imported.returncode == 0, imported.stderr
    assert f"status list {STATUS_URL} of {ISSUER} (1024 entries) kept" in imported.stderr

    proc = plant(config, "classify", "--json", *(str(files / n) for n in made))
    rows = {Path(r["input"]).name: r for r in map(json.loads, proc.stdout.splitlines())}
    assert set(rows) == set(made), proc.stderr
    verdicts = {name: row["authenticity"]["result"] for name, row in rows.items()}
    assert verdicts == {
        "es256.jwt": "verified",
        "ed25519.jwt": "verified",
        "eddsa.txt": "verified",
        "forged.jwt": "invalid_signature",
        "stranger.jwt": "invalid_signature",  # same kid, another key: the signature fails
        "revoked.jwt": "revoked",
        "kept.jwt": "verified",
        "expired.jwt": "expired",
        "plain.json": "unsigned",
    }
    for name in ("es256.jwt", "ed25519.jwt", "eddsa.txt", "kept.jwt"):
        row = rows[name]
        assert (row["chemistry"], row["route"]) == ("NMC811", "hydromet"), name
        assert {"chemistry", "route", "reason", "confidence"} <= set(row)
    assert rows["kept.jwt"]["authenticity"]["status_entry"] == f"{STATUS_URL}#8"
    for name, code in (
        ("forged.jwt", "passport_invalid_signature"),
        ("revoked.jwt", "passport_revoked"),
        ("expired.jwt", "passport_expired"),
        ("plain.json", "passport_unsigned"),
    ):
        assert rows[name]["route"] == "quarantine", name
        assert rows[name]["reason"].startswith(f"{code}: "), rows[name]["reason"]
    assert "signature does not verify" in rows["forged.jwt"]["authenticity"]["reason"]
    assert "index 7" in rows["revoked.jwt"]["reason"]


def test_a_key_the_issuer_never_listed_is_an_unknown_issuer(
    config: Path, keys: dict[str, Any], tmp_path: Path
) -> None:
    other = OKPKey.generate_key("Ed25519", parameters={"kid": "rotated-away"})
    unknown_kid = write(
        tmp_path, "a.jwt", sign(credential(passport_doc("P-A")), other, "Ed25519", "rotated-away")
    )
    foreign = credential(passport_doc("P-B"))
    foreign["issuer"] = {"id": "did:web:forger.example"}
    unknown = write(tmp_path, "b.jwt", sign(foreign, other, "Ed25519", "rotated-away"))
    proc = plant(config, "classify", "--json", str(unknown_kid), str(unknown))
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["authenticity"]["result"] for r in rows] == ["unknown_issuer", "unknown_issuer"]
    assert "has no key 'rotated-away'" in rows[0]["reason"]
    assert "did:web:forger.example is not in the trust list" in rows[1]["reason"]
    assert all(r["route"] == "quarantine" for r in rows)


@pytest.mark.e2e  # `plant` commands as processes
def test_import_stores_verdict_and_credential_and_a_status_list_revokes_later(
    config: Path, keys: dict[str, Any], tmp_path: Path
) -> None:
    files = tmp_path / "in"
    files.mkdir()
    token = sign(credential(passport_doc("P-1"), **revocable(3)), keys["es"], "ES256", "es-2026")
    write(files, "p1.jwt", token)
    write(files, "p2.jwt", flip_one_byte(sign(credential(passport_doc("P-2")), keys["ed"],
                                                "Ed25519", "ed-2026")))  # fmt: skip
    assert plant(config, "db", "upgrade").returncode == 0
    proc = plant(config, "passports", "import", "--json", str(files))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["imported"] == 2
    assert sorted(summary["authenticity"].values()) == ["invalid_signature", "status_unknown"]

    shown = json.loads(plant(config, "passports", "show", "--json", "P-2").stdout)
    assert (shown["authenticity"], shown["signed"]) == ("invalid_signature", True)

    # The issuer revokes P-1: importing its status list re-verifies the stored credential.
    status = write(tmp_path, "s.jwt", sign(status_list({3}), keys["es"], "ES256", "es-2026"))
    proc = plant(config, "passports", "status-lists", "import", str(status))
    assert proc.returncode == 0, proc.stderr
    assert "passport P-1: status_unknown -> revoked" in proc.stdout
    shown = json.loads(plant(config, "passports", "show", "--json", "P-1").stdout)
    assert shown["authenticity"] == "revoked"
    explained = plant(config, "passports", "verify", str(files / "p1.jwt"), str(files / "p2.jwt"))
    assert explained.returncode == 1  # not every file verified
    assert f"p1.jwt: revoked: revoked by {ISSUER} (status list {STATUS_URL} index 3)" in (
        explained.stdout
    )
    assert f"issuer {ISSUER}, kid es-2026, status_entry {STATUS_URL}#3" in explained.stdout
    assert "p2.jwt: invalid_signature: signature does not verify" in explained.stdout

    # A status list signed by a key not in the trust list is refused, and nothing is kept.
    forged = write(tmp_path, "f.jwt", sign(status_list(set()), keys["stranger"], "Ed25519"))
    proc = plant(config, "passports", "status-lists", "import", str(forged))
    assert proc.returncode == 1
    assert "f.jwt: status list credential: signature does not verify" in proc.stderr
    assert len(load_trust(config).status_lists) == 1


def test_trust_list_refuses_private_keys_and_keys_without_kid(config: Path) -> None:
    private = OKPKey.generate_key("Ed25519", parameters={"kid": "k"}).as_dict(private=True)
    (config / "trust" / "cells.jwks.json").write_text(json.dumps({"keys": [private]}))
    proc = plant(config, "classify", "--json", str(REPO / "docs" / "passport-example.json"))
    assert proc.returncode != 0
    assert "cells.jwks.json: keys[0]: key 'k' is a PRIVATE key" in proc.stderr
    public = OKPKey.generate_key("Ed25519").as_dict(private=False)
    (config / "trust" / "cells.jwks.json").write_text(json.dumps({"keys": [public]}))
    proc = plant(config, "classify", "--json", str(REPO / "docs" / "passport-example.json"))
    assert "keys[0]: key without a 'kid'" in proc.stderr


def test_authenticity_policy_for_a_cell_the_passport_decides_alone(keys: dict[str, Any]) -> None:
    """A steel can: the spectrum cannot see the chemistry, so only the passport could decide."""
    token = flip_one_byte(sign(credential(passport_doc("P-9")), keys["ed"], "Ed25519", "ed-2026"))
    assert verify_credential(token, TrustList(), datetime.now(UTC))[0].verdict is (
        Verdict.unknown_issuer
    )
    base = parse_passport(json.dumps(passport_doc("P-9")).encode(), source="p")

    def route(verdict: str, rules: RoutingRules) -> tuple[str, str]:
        p = base.model_copy(update={"authenticity": verdict, "authenticity_reason": "why"})
        (d,) = decide_batch([Evidence(passport=p, spectrum_error="steel can")], None, rules, None)
        return d.route.value, d.reason

    for verdict in ("invalid_signature", "revoked", "unknown_issuer", "expired"):
        assert route(verdict, RoutingRules())[1].startswith(f"passport_{verdict}: why")
    strict = RoutingRules.model_validate({"authenticity": {"unsigned_decides_alone": False}})
    assert route("unsigned", strict)[1].startswith("passport_unsigned: ")
    assert route("verified", strict)[0] == "hydromet"
    assert route("unsigned", RoutingRules())[0] == "hydromet"  # the shipped default


def test_a_stored_verified_passport_is_expired_once_its_credential_is(
    store: Store, keys: dict[str, Any], tmp_path: Path
) -> None:
    """The line reads the stored verdict; it turns `expired` when the credential's end passes."""
    soon = datetime.now(UTC) + timedelta(hours=1)
    token = sign(
        credential(passport_doc("P-SOON"), validUntil=soon.isoformat()),
        keys["ed"],
        "Ed25519",
        "ed-2026",
    )
    trust = TrustList({ISSUER: Issuer(ISSUER, {"ed-2026": keys["ed"]})})
    report = import_passports(store, [write(tmp_path, "soon.jwt", token)], trust=trust)
    assert report.ok and report.authenticity == {str(tmp_path / "soon.jwt"): "verified"}
    found = find_passport(store, "P-SOON")
    assert found is not None and found.authenticity == "verified"
    row = lookup_passport(store, "P-SOON")
    assert row is not None and row.credential == token
    later = authenticity_now(row, soon + timedelta(seconds=1))
    assert later[0] == "expired" and "credential expired on" in later[1]
