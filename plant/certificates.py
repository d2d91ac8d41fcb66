"""Recycled-content certificate per product batch, as signed JSON and as self-contained HTML.

A cell maker needs this for its own recycled-content declaration (EU 2023/1542 Art. 8): what the
batch is, that it meets spec, how much recovered Co, Li or Ni (Pb) it holds, which share of it
came from post-consumer batteries and which from manufacturing waste (from the cells' passports),
and which lots, cells and passports it came from. Only released, in-spec batches get one. The
JSON carries a SHA-256 of its canonical form and a JWS (ES256) over it with the plant's key, so a
buyer verifies it with the public key `plant certificates public-key` exports.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from joserfc import jws
from joserfc.jwk import ECKey
from sqlalchemy import select

from plant.genealogy import TraceError, trace_batch
from plant.hydromet import HydrometConfig, effective_assays, verdict_of
from plant.lots import estimate_metals
from plant.purity import ProductsConfig, metal_in_product
from plant.purity_report import balance_of, iso_utc
from plant.store import BatchRow, CampaignRow, PassportRow, Store

ART8_METALS = ("Co", "Li", "Ni", "Pb")  # Regulation (EU) 2023/1542 Art. 8(1)
ORIGINS = ("post_consumer", "manufacturing_waste", "unknown")
KEY_FILE = "certificate-signing.jwk"  # in the config directory, created on first use (0600)
ALG = "ES256"


class CertificateRefused(ValueError):
    """The batch may not carry a recycled-content certificate (the message says why)."""


def waste_origin(payload: Mapping[str, Any] | None) -> str:
    """post_consumer, manufacturing_waste or unknown, from a passport's status fields
    (Catena-X `sustainability.status`, BatteryPass `batteryStatus`)."""
    if not payload:
        return "unknown"
    sus = payload.get("sustainability")
    texts = [
        sus.get("status") if isinstance(sus, Mapping) else None,
        payload.get("batteryStatus"),
    ]
    for t in (str(x).lower() for x in texts if x):
        if any(w in t for w in ("scrap", "production", "manufactur")):
            return "manufacturing_waste"
        if any(w in t for w in ("waste", "used", "end of life", "repurposed", "reused")):
            return "post_consumer"
    return "unknown"


def origin_shares(cells: list[tuple[str | None, float | None, str]], metal: str) -> dict[str, Any]:
    """Shares of the metal by the waste origin of the cells that carried it:
    cells = (chemistry, mass_g, origin); grams from the cells' estimated metal content."""
    grams = dict.fromkeys(ORIGINS, 0.0)
    for chem, mass, origin in cells:
        grams[origin] += estimate_metals(chem, mass or 0.0).get(metal, 0.0)
    total = sum(grams.values())
    return {
        "basis": f"{metal} estimated from each traced cell's chemistry and mass",
        **{f"{o}_pct": round(100.0 * g / total, 1) if total else None for o, g in grams.items()},
    }


def plant_key(config_dir: Path) -> ECKey:
    """The plant's certificate signing key (P-256), made on first use and kept private."""
    path = config_dir / KEY_FILE
    if path.exists():
        return ECKey.import_key(json.loads(path.read_text(encoding="utf-8")))
    key = ECKey.generate_key("P-256", private=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(key.as_dict(private=True), f)
    return key


def public_jwk(config_dir: Path) -> dict[str, Any]:
    """The public half of the plant's key as a JWK, with its thumbprint as `kid`."""
    key = plant_key(config_dir)
    return {**key.as_dict(private=False), "kid": key.thumbprint(), "alg": ALG, "use": "sig"}


def sign(body: dict[str, Any], config_dir: Path) -> str:
    """Compact JWS over the certificate's canonical JSON with the plant's key."""
    key = plant_key(config_dir)
    header = {"alg": ALG, "kid": key.thumbprint(), "typ": "recycled-content+json"}
    return jws.serialize_compact(header, canonical(body).encode(), key)


def certificate(
    store: Store,
    products: ProductsConfig,
    config: HydrometConfig,
    batch_id: str,
    *,
    site: str,
    now: datetime,
    key_dir: Path,
) -> dict[str, Any]:
    """The signed certificate; TraceError for an unknown batch, CertificateRefused for one that
    may not have a certificate. `key_dir` holds the plant's signing key."""
    with store.session() as s:
        batch = s.get(BatchRow, batch_id)
        if batch is None:
            raise TraceError(f"batch {batch_id!r} not found")
        assay = effective_assays(s, [batch_id]).get(batch_id)
        campaign = s.get(CampaignRow, batch.campaign_id) if batch.campaign_id else None
        line = s.scalar(select(CampaignRow.line).where(CampaignRow.id == batch.campaign_id))
    spec = products.products.get(batch.product)
    if spec is None:
        raise TraceError(f"batch {batch_id!r} is {batch.product!r}, which has no product spec")
    if spec.metal not in ART8_METALS:
        raise CertificateRefused(
            f"batch {batch_id} is {batch.product}: its metal {spec.metal} is not one Art. 8 "
            f"counts ({', '.join(ART8_METALS)}); no recycled-content certificate"
        )
    verdict = verdict_of(spec, assay)
    if batch.state != "released" or not verdict.in_spec:
        why = "; ".join(verdict.reasons) or f"state {batch.state}"
        raise CertificateRefused(
            f"batch {batch_id} is {batch.state.replace('_', ' ')} ({why}); "
            "no recycled-content certificate for a batch that is not released in spec"
        )
    trace = trace_batch(store, batch_id)
    with store.session() as s:
        ids = [c.passport_id for c in trace.cells if c.passport_id]
        payloads: dict[str, Any] = dict(
            s.execute(
                select(PassportRow.id, PassportRow.payload).where(PassportRow.id.in_(ids))
            ).all()
        )
    shares = origin_shares(
        [
            (c.chemistry, c.mass_g, waste_origin(payloads.get(c.passport_id or "")))
            for c in trace.cells
        ],
        spec.metal,
    )
    metal_g = (
        metal_in_product(
            spec, batch.mass_kg or 0.0, assay.purity_pct, assay.main_pct.get(spec.metal)
        )
        if assay is not None
        else None
    )
    recovery_pct = None
    if campaign is not None:
        bal = balance_of(store, products, config, campaign_id=campaign.id).get(spec.metal)
        recovery_pct = (
            None if bal is None or bal.recovery_pct is None else round(bal.recovery_pct, 2)
        )
    chem = Counter(c.chemistry or "unknown" for c in trace.cells)
    body: dict[str, Any] = {
        "certificate_id": f"RCC-{batch_id}",
        "issued_at": now.isoformat(),
        "site": site,
        "line": line,
        "batch": {
            "id": batch.id,
            "product": batch.product,
            "mass_kg": None if batch.mass_kg is None else round(batch.mass_kg, 3),
            "made_at": iso_utc(batch.created_at),
            "campaign_id": batch.campaign_id,
            "state": batch.state,
        },
        "assay": None
        if assay is None
        else {
            "source": assay.source,
            "taken_at": iso_utc(assay.taken_at),
            "purity_pct": assay.purity_pct,
            "main_pct": {k: round(v, 3) for k, v in assay.main_pct.items()},
            "impurities_ppm": {k: round(v, 2) for k, v in assay.impurities_ppm.items()},
            "physical": assay.physical,
        },
        "spec": spec.model_dump(exclude={"spc"}),
        "verdict": {"in_spec": verdict.in_spec, "reasons": verdict.reasons},
        "recovered_metal": {
            "metal": spec.metal,
            "mass_g": None if metal_g is None else round(metal_g, 1),
            "origin": shares,
            "campaign_recovery_pct": recovery_pct,
        },
        "genealogy": {
            "lots": trace.lots,
            "cell_count": len(trace.cells),
            "cells_without_passport": sum(1 for c in trace.cells if not c.passport_id),
            "chemistries": dict(sorted(chem.items())),
            "passport_ids": trace.passport_ids,
        },
    }
    body["sha256"] = hashlib.sha256(canonical(body).encode()).hexdigest()
    body["jws"] = sign(body, key_dir)
    return body


def canonical(body: dict[str, Any]) -> str:
    """The certificate without its hash and signature, in the one text form both cover."""
    rest = {k: v for k, v in body.items() if k not in ("sha256", "jws")}
    return json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:60rem;
color:#1b1f23;line-height:1.4}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.1rem;margin-top:1.6rem;
border-bottom:1px solid #ccd;padding-bottom:.2rem}
table{border-collapse:collapse;width:100%}td,th{padding:.25rem .5rem;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}th{width:16rem;color:#445}
.ok{color:#0a6b2b;font-weight:600}.bad{color:#a4001d;font-weight:600}
.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem;word-break:break-all}
ul.ids{columns:2;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.8rem}
@media print{body{margin:0}}
"""


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in pairs)


def render_html(cert: dict[str, Any]) -> str:
    """A self-contained page (inline CSS, no scripts, no external links) to print or archive."""
    b, a, v, r, g = (
        cert["batch"],
        cert["assay"] or {},
        cert["verdict"],
        cert["recovered_metal"],
        cert["genealogy"],
    )
    verdict = (
        '<span class="ok">IN SPEC — battery grade</span>'
        if v["in_spec"]
        else '<span class="bad">OFF SPEC</span>: ' + escape("; ".join(v["reasons"]))
    )
    spec = cert["spec"]
    window = ""
    if spec.get("main_min_pct") is not None or spec.get("main_max_pct") is not None:
        lo, hi = spec.get("main_min_pct"), spec.get("main_max_pct")
        rng = f"{lo}-{hi}" if lo is not None and hi is not None else f"≥ {lo}" if lo else f"≤ {hi}"
        window = f"{spec['metal']} {rng} %"
    limits = ", ".join(f"{k} ≤ {lim:g} ppm" for k, lim in spec["impurity_limits_ppm"].items())
    main = ", ".join(f"{k} {val} %" for k, val in (a.get("main_pct") or {}).items())
    imps = ", ".join(f"{k} {val:g}" for k, val in (a.get("impurities_ppm") or {}).items())
    lots = "".join(
        f"<tr><td>{escape(lot['id'])}</td><td>{escape(str(lot['route']))}</td>"
        f"<td>{lot['mass_g'] / 1000:.1f} kg</td><td>{lot['cell_count']}</td></tr>"
        for lot in g["lots"]
    )
    pids = "".join(f"<li>{escape(p)}</li>" for p in g["passport_ids"])
    chems = ", ".join(f"{k} {n}" for k, n in g["chemistries"].items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{escape(cert["certificate_id"])} — recycled-content certificate</title>
<style>{_CSS}</style></head><body>
<h1>Recycled-content certificate</h1>
<div>{escape(cert["certificate_id"])} · issued {escape(cert["issued_at"])} · site
{escape(str(cert["site"]))} · line {escape(str(cert["line"]))}</div>
<h2>Batch</h2><table>{
        _rows(
            [
                ("Batch", b["id"]),
                ("Product", b["product"]),
                ("Mass", f"{b['mass_kg']} kg"),
                ("Made", b["made_at"]),
                ("Campaign", b["campaign_id"]),
            ]
        )
    }</table>
<h2>Assay and verdict</h2><table>{
        _rows(
            [
                ("Assay source", f"{a.get('source', 'none')} at {a.get('taken_at', '-')}"),
                ("Purity", f"{a.get('purity_pct')} % (minimum {spec['min_purity_pct']} %)"),
                ("Main element", f"{main or '-'} {('(spec ' + window + ')') if window else ''}"),
                ("Impurities, ppm", imps or "-"),
                ("Impurity limits", limits or "-"),
            ]
        )
    }<tr><th>Verdict</th><td>{verdict}</td></tr></table>
<h2>Recovered metal</h2><table>{
        _rows(
            [
                (f"{r['metal']} in this batch", f"{r['mass_g']} g"),
                ("From post-consumer batteries", f"{r['origin']['post_consumer_pct']} %"),
                ("From manufacturing waste", f"{r['origin']['manufacturing_waste_pct']} %"),
                ("Origin unknown (not claimable)", f"{r['origin']['unknown_pct']} %"),
                ("Campaign recovery of " + r["metal"], f"{r['campaign_recovery_pct']} %"),
            ]
        )
    }</table>
<h2>Traced input</h2>
<p>{g["cell_count"]} end-of-life cells ({escape(chems)}); {g["cells_without_passport"]}
without a battery passport.</p>
<table><tr><th>Lot</th><th>Route</th><th>Mass</th><th>Cells</th></tr>{lots}</table>
<h2>Battery passports ({len(g["passport_ids"])})</h2><ul class="ids">{pids}</ul>
<h2>Integrity</h2><p class="mono">SHA-256 of the canonical JSON: {escape(cert["sha256"])}</p>
<p class="mono">JWS ({ALG}, the plant's key): {escape(cert["jws"])}</p>
</body></html>
"""
