"""Simulated battery passports: Catena-X BatteryPass 6.x shaped JSON for simulated cells.

The passport states `truth.passport_chemistry` (wrong when the cell is mislabelled), worded the
way real suppliers word it: most NMC passports name only the family ("NCM", "Nickel Cobalt
Manganese (NCM)"), some give the grade ("NCM 811", "NMC-622") or the cathode formula, either
in `identification.chemistry` or as a material name in `materials.composition`. The layout
follows tests/data/reference-passports/catenax-battery_pass-6.1.0/BatteryPass.json.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from joserfc import jws
from joserfc.jwk import ECKey, OKPKey

from drivers.sim.cells import CellStream, CellTruth

SPEC_VERSION = "urn:io.catenax.battery.battery_pass:6.1.0"

# Cathode formulas per class (Ni:Mn:Co grades as in docs/reference/xrf-and-process.md §2.1).
FORMULAS: dict[str, tuple[str, ...]] = {
    "NMC111": ("LiNi1/3Mn1/3Co1/3O2", "LiNi0.33Mn0.33Co0.33O2"),
    "NMC532": ("LiNi0.5Mn0.3Co0.2O2",),
    "NMC622": ("LiNi0.6Mn0.2Co0.2O2",),
    "NMC811": ("LiNi0.8Mn0.1Co0.1O2", "LiNi₀.₈Mn₀.₁Co₀.₁O₂"),
    "NCA": ("LiNi0.8Co0.15Al0.05O2", "LiNiCoAlO2"),
    "LFP": ("LiFePO4",),
    "LCO": ("LiCoO2",),
    "LMO": ("LiMn2O4",),
}
NMC_FAMILY_WORDING: tuple[str, ...] = (
    "NCM",
    "NMC",
    "Nickel Cobalt Manganese (NCM)",
    "Lithium nickel manganese cobalt oxide",
    "Li-ion NMC",
)
NMC_GRADE_WORDING: dict[str, tuple[str, ...]] = {
    "NMC111": ("NMC111", "NCM 111", "NMC 1:1:1"),
    "NMC532": ("NMC532", "NCM523", "NMC-532"),
    "NMC622": ("NMC622", "NCM 622", "NMC-622"),
    "NMC811": ("NMC811", "NCM 811", "NMC 8:1:1"),
}
WORDING: dict[str, tuple[str, ...]] = {
    "NCA": ("NCA", "NCA (Lithium nickel cobalt aluminum oxide)", "nickel cobalt aluminium"),
    "LFP": ("LFP", "lithium iron phosphate", "Lithium Iron Phosphate (LFP)", "LiFePO4"),
    "LCO": ("LCO", "lithium cobalt oxide", "LiCoO2"),
    "LMO": ("LMO", "Lithium-Manganese-Oxide (LMO)", "LiMn2O4"),
    "NiMH": ("NiMH", "nickel-metal hydride"),
    "NiCd": ("NiCd", "Ni-Cd"),
    "ZnMn": ("alkaline", "Zn-MnO2"),
}
MANUFACTURERS: tuple[str, ...] = (
    "BPNL00000003AYRE",
    "BPNL00000007RXRX",
    "BPNL000000000001",
    "BPNL00000003CML1",
)
TIME = "2024-03-01T08:00:00.000+01:00"
NMC_FAMILY_SHARE = 0.7  # real passports name the family, rarely the grade (docs/architecture.md)


def _wording(chemistry: str, rng: random.Random) -> tuple[str, str | None]:
    """(text for identification.chemistry, cathode formula for materials.composition or None)."""
    if chemistry in NMC_GRADE_WORDING:
        roll = rng.random()
        if roll < NMC_FAMILY_SHARE:
            return rng.choice(NMC_FAMILY_WORDING), None
        if roll < 0.8:
            return rng.choice(NMC_GRADE_WORDING[chemistry]), None
        if roll < 0.9:
            return rng.choice(FORMULAS[chemistry]), None
        return rng.choice(NMC_FAMILY_WORDING), rng.choice(FORMULAS[chemistry])
    text = rng.choice(WORDING[chemistry])
    formula = (
        rng.choice(FORMULAS[chemistry]) if chemistry in FORMULAS and rng.random() < 0.2 else None
    )
    return text, formula


def _document(kind: str, header: str) -> dict[str, str]:
    return {"contentType": "URL", "header": header, "content": f"https://dummy.link/{kind}"}


REUSABLE_SHARE = 0.03  # simulated passports whose state of health invites reuse inspection


def passport_document(truth: CellTruth) -> dict[str, Any]:
    """The Catena-X 6.x shaped passport of a simulated cell (deterministic per passport id)."""
    if truth.passport_id is None or truth.passport_chemistry is None:
        raise ValueError(f"simulated cell {truth.seq} carries no passport")
    rng = random.Random(truth.passport_id)
    text, formula = _wording(truth.passport_chemistry, rng)
    # End-of-life cells: mostly below the 80 % second-life threshold, a few still healthy.
    soh = round(
        rng.uniform(80.0, 97.0) if rng.random() < REUSABLE_SHARE else rng.uniform(50.0, 79.5), 1
    )
    in_kg = rng.random() < 0.3  # some suppliers state the mass in kilograms
    weight = {
        "value": round(truth.mass_g / 1000.0, 4) if in_kg else truth.mass_g,
        "unit": "unit:kilogram" if in_kg else "unit:gram",
    }
    manufacturer = rng.choice(MANUFACTURERS)
    composition = []
    if formula is not None:
        composition.append(
            {
                "id": [{"type": "CAS", "name": formula, "id": "12190-79-3"}],
                "concentration": round(rng.uniform(25.0, 40.0), 1),
                "unit": "unit:percent",
                "location": "Cathode",
                "critical": True,
            }
        )
    events = [_document("event", "Cell damaged: swollen casing")] if truth.damaged else []
    return {
        "specVersion": SPEC_VERSION,
        "metadata": {
            "passportIdentifier": truth.passport_id,
            "version": "1.0.0",
            "status": "approved",
            "issueDate": "2024-03-01",
            "economicOperatorId": manufacturer,
        },
        "identification": {
            "category": "EV",
            "chemistry": text,
            "idDmc": f"SIM{truth.seq:012d}",
            "identification": {
                "type": {
                    "manufacturerPartId": f"CELL-{rng.randrange(1000, 9999)}",
                    "nameAtManufacturer": "Simulated cell",
                },
                "codes": [],
                "dataCarrier": {"carrierType": "QR", "carrierLayout": "label, upper-left side"},
                "classification": [],
            },
        },
        "operation": {
            "manufacturer": {"manufacturer": manufacturer, "manufacturingDate": "2019-05-14"}
        },
        "characteristics": {"physicalDimension": {"weight": weight}},
        "materials": {"composition": composition},
        "performance": {
            "rated": {"capacity": {"value": round(rng.uniform(2.0, 60.0), 1), "temperature": 20.0}},
            "dynamic": {
                "capacity": {"fade": {"value": round(100.0 - soh, 1), "time": TIME}},
                "negativeEvents": events,
            },
        },
        # Every tenth cell is a cell maker's reject (manufacturing waste, Art. 8(1)(a)).
        "sustainability": {"status": "production scrap" if truth.seq % 10 == 7 else "waste"},
    }


def passport_filename(passport_id: str) -> str:
    """File name for a passport id (`urn:uuid:...` -> `<uuid>.json`; no colons on disk)."""
    return passport_id.rsplit(":", 1)[-1].replace("/", "_") + ".json"


def write_passport(truth: CellTruth, path: Path) -> None:
    """Write the simulated cell's passport JSON to `path`."""
    path.write_text(json.dumps(passport_document(truth), ensure_ascii=False, indent=1), "utf-8")


def write_passports(stream: CellStream, seqs: Iterable[int], out_dir: Path) -> int:
    """Write a passport file for every cell in `seqs` that carries one; returns how many."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for seq in seqs:
        truth = stream.truth(seq)
        if truth.passport_id is not None:
            write_passport(truth, out_dir / passport_filename(truth.passport_id))
            written += 1
    return written


class SimIssuer:
    """A passport issuer of the simulation: a key made at start-up (Ed25519, or ES256) that
    signs each simulated passport as a W3C Verifiable Credential (`vc+jwt`, docs/passport.md).
    A share of passports is forged: the payload altered after signing, so the signature fails."""

    def __init__(
        self,
        issuer: str = "did:web:passports.sim.invalid",
        forged_share: float = 0.0,
        alg: str = "Ed25519",
    ):
        self.id = issuer
        self.kid = f"sim-{alg.lower()}"
        self.alg = alg
        self.forged_share = forged_share
        self.key: ECKey | OKPKey = (
            ECKey.generate_key("P-256", parameters={"kid": self.kid})
            if alg == "ES256"
            else OKPKey.generate_key("Ed25519", parameters={"kid": self.kid})
        )

    def public_jwk(self) -> dict[str, Any]:
        return dict(self.key.as_dict(private=False))

    def credential(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The Verifiable Credential 2.0 carrying a passport document."""
        return {
            "@context": ["https://www.w3.org/ns/credentials/v2"],
            "type": ["VerifiableCredential", "BatteryPassportCredential"],
            "issuer": self.id,
            "validFrom": "2024-03-01T00:00:00Z",
            "credentialSubject": doc,
        }

    def sign(self, doc: dict[str, Any], passport_id: str) -> str:
        """The compact JWS of the passport's credential; forged for `forged_share` of ids."""
        header = {"alg": self.alg, "typ": "vc+jwt", "kid": self.kid}
        vc = self.credential(doc)
        token = jws.serialize_compact(header, json.dumps(vc), self.key, algorithms=[self.alg])
        if random.Random(f"forged {passport_id}").random() >= self.forged_share:
            return token
        forged = json.loads(json.dumps(vc))
        claim = forged["credentialSubject"]["identification"]
        claim["chemistry"] = "LFP" if claim.get("chemistry") == "NMC811" else "NMC811"
        body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
        head, _, signature = token.split(".")
        return f"{head}.{body}.{signature}"
