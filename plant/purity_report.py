"""The purity report: batches with verdicts, SPC, mass balance, recovery and valued lots.

One builder for `plant purity report --json`, the HMI and the certificates, so they all agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

from sqlalchemy import select

from plant.alarms import alarm_json
from plant.hydromet import (
    HydrometConfig,
    ReconciliationSection,
    chart_of,
    effective_assays,
    product_history,
    verdict_of,
)
from plant.lot_assays import MEASURED_FEED, measured_feed_g
from plant.lot_assays import SOURCE as MEASURED
from plant.purity import (
    MetalBalance,
    ProductsConfig,
    bad_side,
    capability,
    mass_balance,
    metal_in_product,
    recovery,
    spec_limit,
)
from plant.reconciliation import Stream, reconciliation_json
from plant.recycling import RECOVERY_METALS, Fraction, material_recovery, recycling_efficiency
from plant.store import (
    AlarmRow,
    AssayRow,
    BatchRow,
    CampaignLotRow,
    CampaignRow,
    LotRow,
    Store,
    WeighingRow,
)
from plant.weighings import FRACTIONS, weighed_lots, weighings_of


def iso_utc(ts: datetime | None) -> str | None:
    """ISO 8601 with offset; SQLite hands back naive datetimes, which the store keeps in UTC."""
    if ts is None:
        return None
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).isoformat()


def batch_rows(
    store: Store, products: ProductsConfig, since: datetime | None = None
) -> list[dict[str, Any]]:
    """Every batch since `since` with its deciding assay and spec verdict, oldest first."""
    with store.session() as s:
        q = select(BatchRow).order_by(BatchRow.created_at, BatchRow.id)
        if since is not None:
            q = q.where(BatchRow.created_at >= since)
        batches = list(s.scalars(q))
        assays = effective_assays(s, [b.id for b in batches])
    out = []
    for b in batches:
        spec = products.products.get(b.product)
        a = assays.get(b.id)
        verdict = verdict_of(spec, a) if spec is not None else None
        out.append(
            {
                "id": b.id,
                "product": b.product,
                "campaign_id": b.campaign_id,
                "mass_kg": b.mass_kg,
                "state": b.state,
                "created_at": iso_utc(b.created_at),
                "assay_source": a.source if a else None,
                "purity_pct": a.purity_pct if a else None,
                "main_pct": a.main_pct if a else {},
                "impurities_ppm": a.impurities_ppm if a else {},
                "physical": a.physical if a else {},
                "in_spec": verdict.in_spec if verdict else False,
                "reasons": verdict.reasons if verdict else [f"no spec for {b.product}"],
                "metal_g": round(
                    metal_in_product(
                        spec, b.mass_kg or 0.0, a.purity_pct, a.main_pct.get(spec.metal)
                    ),
                    1,
                )
                if spec is not None and a is not None
                else None,
            }
        )
    return out


def balance_of(
    store: Store,
    products: ProductsConfig,
    config: HydrometConfig,
    since: datetime | None = None,
    batches: list[dict[str, Any]] | None = None,
    campaign_id: str | None = None,
    until: datetime | None = None,
) -> dict[str, MetalBalance]:
    """Mass balance over the campaigns started in [since, until) (or one campaign): lot
    estimates in, or the lot's measured assay where there is one (plant/lot_assays.py); assayed
    products out."""
    with store.session() as s:
        q = select(CampaignRow)
        if since is not None:
            q = q.where(CampaignRow.started_at >= since)
        if until is not None:
            q = q.where(CampaignRow.started_at < until)
        if campaign_id is not None:
            q = q.where(CampaignRow.id == campaign_id)
        campaigns = list(s.scalars(q))
        ids = {c.id for c in campaigns}
        links = s.execute(
            select(CampaignLotRow.campaign_id, CampaignLotRow.lot_id).where(
                CampaignLotRow.campaign_id.in_(ids)
            )
        ).all()
        measured = measured_feed_g(s, [lot for _, lot in links])
    feeds = {c.id: {k: float(v) for k, v in c.feed_g.items()} for c in campaigns}
    for cid, lot in links:
        if lot in measured:
            est, got = measured[lot]
            for el in MEASURED_FEED:
                feeds[cid][el] = feeds[cid].get(el, 0.0) - est[el] + got[el]
    rows = batches if batches is not None else batch_rows(store, products, since)
    made = [
        (products.products[b["product"]].metal, float(b["metal_g"]))
        for b in rows
        if b["campaign_id"] in ids and b["metal_g"] is not None
    ]
    return mass_balance(
        feeds.values(),
        made,
        (c.residues_g for c in campaigns),
        config.mass_balance.saleable_byproducts,
        config.mass_balance.holdup_streams,
    )


def spc_summary(store: Store, products: ProductsConfig, config: HydrometConfig) -> dict[str, Any]:
    """Chart limits and the rules firing in the bad direction, per product and variable."""
    out: dict[str, Any] = {}
    with store.session() as s:
        for product, spec in products.products.items():
            hist = product_history(s, product, config.spc)
            charts: dict[str, Any] = {}
            for var in spec.spc:
                vals = [a.value(var) for _, a in hist]
                if not vals or any(v is None for v in vals):
                    continue
                chart = chart_of(var, [float(v) for v in vals if v is not None], config.spc)
                lim = chart.limits
                limit = spec_limit(spec, var)
                lower, upper = (limit, None) if bad_side(var) < 0 else (None, limit)
                cap = {} if lim is None else capability(lim, lower, upper)
                charts[var] = {
                    "points": len(chart.values),
                    "center": None if lim is None else round(lim.center, 4),
                    "ucl": None if lim is None else round(lim.ucl, 4),
                    "lcl": None if lim is None else round(lim.lcl, 4),
                    "spec_lower": lower,
                    "spec_upper": upper,
                    **{k: None if v is None else round(v, 2) for k, v in cap.items()},
                    "violations": [
                        {"rule": r.rule, "batch_id": hist[r.index][0].id, "text": r.description}
                        for r in chart.violations
                        if r.side == bad_side(var) and r.rule in config.spc.rules
                    ],
                }
            if charts:
                out[product] = charts
    return out


def lot_rows(store: Store, since: datetime | None = None) -> list[dict[str, Any]]:
    """Closed and consumed lots with their estimate, their latest assay (XRF pellet, lab or
    measured on the analyser) and value where there is one."""
    with store.session() as s:
        q = select(LotRow).where(LotRow.state != "open").order_by(LotRow.closed_at, LotRow.id)
        if since is not None:
            q = q.where(LotRow.closed_at >= since)
        lots = list(s.scalars(q))
        ids = [lot.id for lot in lots]
        xrf = {
            a.lot_id: a
            for a in s.scalars(
                select(AssayRow)
                .where(AssayRow.lot_id.in_(ids), AssayRow.source.in_(["xrf", "lab", MEASURED]))
                .order_by(AssayRow.taken_at, AssayRow.id)
            )
        }
        campaign = dict(
            s.execute(
                select(CampaignLotRow.lot_id, CampaignLotRow.campaign_id).where(
                    CampaignLotRow.lot_id.in_(ids)
                )
            ).all()
        )
    out = []
    for lot in lots:
        a = xrf.get(lot.id)
        comp = a.composition if a is not None else {}
        out.append(
            {
                "id": lot.id,
                "line": lot.line,
                "route": lot.route,
                "state": lot.state,
                "mass_g": round(lot.mass_g, 1),
                "cell_count": lot.cell_count,
                "closed_at": iso_utc(lot.closed_at),
                "campaign_id": campaign.get(lot.id),
                "metals_g_estimated": {k: round(float(v), 1) for k, v in lot.metals_g.items()},
                "assay": None
                if a is None
                else {
                    "source": a.source,
                    "method": comp.get("method"),
                    "taken_at": iso_utc(a.taken_at),
                    "black_mass_kg": comp.get("black_mass_kg"),
                    "wt_pct": comp.get("wt_pct", {}),
                    "unc_pct": comp.get("unc_pct", {}),
                },
                "value": comp.get("value"),
            }
        )
    return out


INPUT_POINT = "hydromet lot weighed at lot close, entering the mechanical stage"
PRODUCT_POINT = "product batch released after its assay (end of the last recycling step)"
BYPRODUCT_POINT = "by-product leaving the plant for metal recovery"


@dataclass(frozen=True)
class EuFractions:
    """The fractions of a period at their calculation points: inputs, counted outputs, and the
    weighed fractions that do not count (intermediates, residue, energy recovery)."""

    inputs: list[Fraction]
    outputs: list[Fraction]
    not_counted: list[Fraction]
    weighed: list[Fraction]
    lots_weighed: int

    def as_json(self) -> dict[str, Any]:
        return {
            "input": [f.as_json() for f in self.inputs],
            "output": [f.as_json() for f in self.outputs],
            "not_counted": [f.as_json() for f in self.not_counted],
            "lots_weighed": self.lots_weighed,
        }


def _weighed_fractions(rows: list[WeighingRow]) -> list[Fraction]:
    """The period's weighings summed per fraction, in the order of FRACTIONS."""
    kg: dict[str, float] = {}
    n: dict[str, int] = {}
    for w in rows:
        kg[w.fraction] = kg.get(w.fraction, 0.0) + w.kg
        n[w.fraction] = n.get(w.fraction, 0) + 1
    return [
        Fraction(f"{name} ({n[name]} weighings)", kind.calculation_point, kg[name])
        for name, kind in FRACTIONS.items()
        if name in kg
    ]


def eu_fractions(
    store: Store,
    products: ProductsConfig,
    config: HydrometConfig,
    start: datetime | None = None,
    end: datetime | None = None,
) -> EuFractions:
    """Input and output fractions of the campaigns started in [start, end) at their calculation
    points: input = the lots' weighed mass and metal; output = the mechanical stage's recycled
    fractions as weighed leaving the plant, released batches' assayed metal and the saleable
    by-products' metal. Batches on hold are not output (yet); residue, energy recovery and the
    black mass (counted at the hydromet outputs) are listed but not counted."""
    with store.session() as s:
        q = select(CampaignRow).order_by(CampaignRow.started_at)
        if start is not None:
            q = q.where(CampaignRow.started_at >= start)
        if end is not None:
            q = q.where(CampaignRow.started_at < end)
        campaigns = list(s.scalars(q))
        ids = [c.id for c in campaigns]
        lots = list(
            s.scalars(
                select(LotRow)
                .join(CampaignLotRow, CampaignLotRow.lot_id == LotRow.id)
                .where(CampaignLotRow.campaign_id.in_(ids))
                .order_by(LotRow.id)
            )
        )
        batches = list(
            s.scalars(select(BatchRow).where(BatchRow.campaign_id.in_(ids)).order_by(BatchRow.id))
        )
        assays = effective_assays(s, [b.id for b in batches])
        lot_ids = [lot.id for lot in lots]
        weighed = weighings_of(s, lot_ids, start, end)
        lots_weighed = len(weighed_lots(s, lot_ids))
    inputs = [
        Fraction(lot.id, INPUT_POINT, lot.mass_g / 1000.0, dict(lot.metals_g or {})) for lot in lots
    ]
    mechanical = _weighed_fractions(weighed)
    counted = {k.calculation_point for k in FRACTIONS.values() if k.counted}
    outputs = [f for f in mechanical if f.calculation_point in counted]
    not_counted = [f for f in mechanical if f.calculation_point not in counted]
    for b in batches:
        spec, a = products.products.get(b.product), assays.get(b.id)
        if spec is None or a is None or b.state != "released":
            continue
        g = metal_in_product(spec, b.mass_kg or 0.0, a.purity_pct, a.main_pct.get(spec.metal))
        outputs.append(Fraction(b.id, PRODUCT_POINT, g / 1000.0, {spec.metal: g}))
    sold = set(config.mass_balance.saleable_byproducts)
    for c in campaigns:
        for stream, grams in (c.residues_g or {}).items():
            if stream in sold and grams:
                metals = {k: float(v) for k, v in grams.items()}
                name = f"{c.id} {stream}"
                outputs.append(Fraction(name, BYPRODUCT_POINT, sum(metals.values()) / 1000, metals))
    return EuFractions(inputs, outputs, not_counted, mechanical, lots_weighed)


MECHANICAL_NODE = "mechanical stage"


def reconciliation_streams(
    fr: EuFractions, balance: Mapping[str, MetalBalance], cfg: ReconciliationSection
) -> list[Stream]:
    """The measured streams and their balance nodes: the mechanical stage in kg (cells in =
    every weighed fraction out, when anything was weighed) and each recovery metal in g (feed in
    = products + by-products + residues out)."""
    streams: list[Stream] = []

    def add(name: str, kind: str, value: float, node: str, sign: int) -> None:
        streams.append(Stream(name, kind, value, cfg.sd(kind, value), {node: sign}))

    if fr.weighed:
        cells = math.fsum(f.counted_kg for f in fr.inputs)
        add(f"cells in ({len(fr.inputs)} lots)", "lot", cells, MECHANICAL_NODE, +1)
        for f in fr.weighed:
            add(f.name, "weighing", f.counted_kg, MECHANICAL_NODE, -1)
    for metal in RECOVERY_METALS:
        b = balance.get(metal)
        if b is None or b.in_g <= 0:
            continue
        add(f"{metal} feed", "feed", b.in_g, metal, +1)
        add(f"{metal} products", "product", b.products_g, metal, -1)
        add(f"{metal} by-products", "residue", b.byproducts_g, metal, -1)
        for name, g in sorted(b.residues_g.items()):
            add(f"{metal} {name}", "residue", g, metal, -1)
        if b.holdup_g:
            add(f"{metal} tank hold-up", "residue", b.holdup_g, metal, -1)
    return streams


def eu_figures(
    store: Store,
    products: ProductsConfig,
    config: HydrometConfig,
    start: datetime | None = None,
    end: datetime | None = None,
    balance: Mapping[str, MetalBalance] | None = None,
) -> dict[str, Any]:
    """recycling_efficiency and material_recovery (Delegated Regulation (EU) 2025/606), the
    fractions behind them and the period's reconciled mass balance (`balance`: the period's,
    if the caller has it already)."""
    fr = eu_fractions(store, products, config, start, end)
    if balance is None:
        balance = balance_of(
            store, products, config, start, batch_rows(store, products, start), until=end
        )
    streams = reconciliation_streams(fr, balance, config.reconciliation)
    units = {MECHANICAL_NODE: "kg", **{m: "g" for m in RECOVERY_METALS}}
    return {
        "recycling_efficiency": recycling_efficiency(
            fr.inputs, fr.outputs, products.recycling_efficiency_targets
        ),
        "material_recovery": material_recovery(fr.inputs, fr.outputs, products.recovery_targets),
        "fractions": fr.as_json(),
        "reconciliation": reconciliation_json(streams, units),
    }


def build_report(
    store: Store,
    products: ProductsConfig,
    config: HydrometConfig,
    since: datetime | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The whole report as one JSON-ready object."""
    batches = batch_rows(store, products, since)
    balance = balance_of(store, products, config, since, batches)
    with store.session() as s:
        q = (
            select(AlarmRow)
            .where(AlarmRow.source.in_(["spc", "purity"]))
            .order_by(AlarmRow.raised_at)
        )
        if since is not None:
            q = q.where(AlarmRow.raised_at >= since)
        alarms = [alarm_json(a) for a in s.scalars(q)]
    eu = eu_figures(store, products, config, since, balance=balance)
    return {
        "generated_at": iso_utc(now),
        "since": iso_utc(since),
        "batches": batches,
        "alarms": alarms,
        "spc_alarms": [a for a in alarms if a["source"] == "spc"],
        "spc": spc_summary(store, products, config),
        "mass_balance": {m: b.as_json() for m, b in balance.items()},
        "recovery": recovery(balance, products.recovery_targets),
        "lots": lot_rows(store, since),
        "recycling_efficiency": eu["recycling_efficiency"],
        "material_recovery": eu["material_recovery"],
        "fractions": eu["fractions"],
        "reconciliation": eu["reconciliation"],
    }


def annual_documentation(
    store: Store, products: ProductsConfig, config: HydrometConfig, year: int, *, site: str
) -> dict[str, Any]:
    """The year's recycling efficiency and material recovery with every fraction behind them
    (the documentation a recycler keeps under Delegated Regulation (EU) 2025/606)."""
    start = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    return {
        "regulation": "Regulation (EU) 2023/1542 Annex XII; Delegated Regulation (EU) 2025/606",
        "battery_category": "lithium-based",
        "site": site,
        "year": year,
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        **eu_figures(store, products, config, start, end),
    }


def render_documentation(doc: dict[str, Any]) -> str:
    """The annual documentation as one self-contained page (no scripts, no external links)."""
    re_ = doc["recycling_efficiency"]

    def rows(cells: list[list[Any]]) -> str:
        return "".join(
            "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in cells
        )

    rm = [
        [m, r["input_g"], r["output_g"], r["rate_pct"], r["targets"], r["meets"]]
        for m, r in doc["material_recovery"].items()
    ]
    fr = [
        [kind.replace("_", " "), f["name"], f["calculation_point"], f["counted_kg"], f["metals_g"]]
        for kind in ("input", "output", "not_counted")
        for f in doc["fractions"][kind]
    ]
    rec = doc["reconciliation"]
    rs = [
        [r["name"], r["measured"], r["sd"], r["reconciled"], r["adjustment"],
         r["normalised_adjustment"], "gross error" if r["gross_error"] else ""]
        for r in rec["streams"]
    ]  # fmt: skip
    nodes = "; ".join(f"{n} {v['unaccounted']} {v['unit']}" for n, v in rec["nodes"].items())
    warn = "".join(f"<li>{escape(w)}</li>" for w in rec["warnings"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Recycling efficiency {doc["year"]} — {escape(str(doc["site"]))}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem auto;max-width:70rem}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.2rem .4rem;
text-align:left;font-size:.9rem}}</style></head><body>
<h1>Recycling efficiency and recovery of materials, {doc["year"]}</h1>
<p>{escape(doc["regulation"])} · {escape(doc["battery_category"])} batteries · site
{escape(str(doc["site"]))}</p>
<h2>Recycling efficiency</h2>
<p>{re_["output_kg"]} kg counted output / {re_["input_kg"]} kg input =
<strong>{re_["rate_pct"]} %</strong>; targets {escape(str(re_["targets"]))}, met
{escape(str(re_["meets"]))}</p>
<h2>Recovery of materials</h2>
<table><tr><th>Metal</th><th>In, g</th><th>Out, g</th><th>Rate, %</th><th>Targets</th>
<th>Met</th></tr>{rows(rm)}</table>
<h2>Fractions at their calculation points</h2>
<table><tr><th>Kind</th><th>Fraction</th><th>Calculation point</th><th>Counted kg</th>
<th>Metals, g</th></tr>{rows(fr)}</table>
<h2>Mass balance reconciled (weighted least squares)</h2>
<p>Unaccounted before reconciliation: {escape(nodes) or "-"}</p>
<ul>{warn}</ul>
<table><tr><th>Stream</th><th>Measured</th><th>1 sigma</th><th>Reconciled</th>
<th>Adjustment</th><th>Normalised</th><th></th></tr>{rows(rs)}</table>
</body></html>
"""
