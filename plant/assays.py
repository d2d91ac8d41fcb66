"""Lab assays from a LIMS CSV export (docs/assays-csv.md): parse, check, keep the good rows.

Rows of the same sample (same target, sample time and sample id) become one assay with source
`lab`. Each bad row is reported by its line number with the reason, and the good rows are
still imported.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from plant.purity import ProductsConfig
from plant.store import AssayRow, BatchRow, LotRow, Store

REQUIRED = ("sampled_at", "analyte", "value", "unit")
TARGETS = ("batch_id", "lot_id")
OPTIONAL = ("sample_id", "uncertainty", "method", "lab", "note")
# Conversion to ppm (mass fraction).
UNITS_PPM = {
    "%": 1e4,
    "wt%": 1e4,
    "g/kg": 1e3,
    "ppm": 1.0,
    "mg/kg": 1.0,
    "ppb": 1e-3,
    "µg/kg": 1e-3,
}
ELEMENT = re.compile(r"^[A-Z][a-z]?$")


class AssayFileError(Exception):
    """The file as a whole cannot be read (missing columns, not CSV)."""


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


@dataclass
class Sample:
    """One lab sample: the analytes of the rows that share target, time and sample id."""

    batch_id: str | None
    lot_id: str | None
    sampled_at: datetime
    sample_id: str
    values_ppm: dict[str, float] = field(default_factory=dict)
    unc_ppm: dict[str, float] = field(default_factory=dict)
    purity_pct: float | None = None
    lines: list[int] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)


@dataclass
class ImportResult:
    samples: list[Sample]
    bad: list[BadRow]

    @property
    def good_rows(self) -> int:
        return sum(len(s.lines) for s in self.samples)


def _time(text: str) -> datetime:
    ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def _number(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{what} {text!r} must be a finite number >= 0")
    return v


def parse(text: str) -> ImportResult:
    """Parse the CSV text; header problems raise AssayFileError, row problems become BadRow."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing or not any(t in header for t in TARGETS):
        need = missing + ([] if any(t in header for t in TARGETS) else ["batch_id or lot_id"])
        raise AssayFileError(f"header is missing column(s): {', '.join(need)}")
    unknown = [h for h in header if h and h not in (*REQUIRED, *TARGETS, *OPTIONAL)]
    if unknown:
        raise AssayFileError(f"unknown column(s): {', '.join(unknown)}")
    reader.fieldnames = header
    samples: dict[tuple[str, str, datetime, str], Sample] = {}
    bad: list[BadRow] = []
    for row in reader:
        line = reader.line_num
        r = {k: (v or "").strip() for k, v in row.items() if k is not None}
        if row.get(None):  # type: ignore[call-overload]
            bad.append(BadRow(line, "more fields than the header has columns"))
            continue
        try:
            batch, lot = r.get("batch_id", ""), r.get("lot_id", "")
            if bool(batch) == bool(lot):
                raise ValueError("give exactly one of batch_id and lot_id")
            try:
                when = _time(r["sampled_at"])
            except ValueError:
                raise ValueError(
                    f"sampled_at {r['sampled_at']!r} is not an ISO 8601 time"
                ) from None
            analyte = r["analyte"]
            unit = r["unit"]
            value = _number(r["value"], "value")
            if analyte.lower() == "purity":
                if unit not in ("%", "wt%"):
                    raise ValueError(f"purity must be in %, not {unit!r}")
                if value > 100:
                    raise ValueError(f"purity {value} % is above 100 %")
            elif not ELEMENT.match(analyte):
                raise ValueError(f"analyte {analyte!r} is not purity or an element symbol")
            if unit not in UNITS_PPM:
                raise ValueError(f"unit {unit!r} is not one of {', '.join(UNITS_PPM)}")
            unc = _number(r["uncertainty"], "uncertainty") if r.get("uncertainty") else None
        except ValueError as exc:
            bad.append(BadRow(line, str(exc)))
            continue
        key = ("batch" if batch else "lot", batch or lot, when, r.get("sample_id", ""))
        s = samples.setdefault(key, Sample(batch or None, lot or None, when, key[3]))
        name = "purity" if analyte.lower() == "purity" else analyte
        if name in s.values_ppm or (name == "purity" and s.purity_pct is not None):
            bad.append(BadRow(line, f"{name} given twice for the same sample"))
            continue
        if name == "purity":
            s.purity_pct = value
        else:
            s.values_ppm[name] = value * UNITS_PPM[unit]
            if unc is not None:
                s.unc_ppm[name] = unc * UNITS_PPM[unit]
        s.lines.append(line)
        s.meta.update({k: r[k] for k in ("method", "lab") if r.get(k)})
    return ImportResult(list(samples.values()), bad)


def composition(sample: Sample, main_metal: str | None) -> dict[str, Any]:
    """AssayRow.composition: batches get main_pct + impurities_ppm, lots wt_pct + unc_pct."""
    if sample.lot_id is not None:
        return {
            "method": sample.meta.get("method", "lab"),
            "wt_pct": {k: v / 1e4 for k, v in sample.values_ppm.items()},
            "unc_pct": {k: v / 1e4 for k, v in sample.unc_ppm.items()},
            **({"lab": sample.meta["lab"]} if "lab" in sample.meta else {}),
            "sample_id": sample.sample_id,
        }
    main = {k: v / 1e4 for k, v in sample.values_ppm.items() if k == main_metal}
    ppm = {k: v for k, v in sample.values_ppm.items() if k != main_metal}
    return {"main_pct": main, "impurities_ppm": ppm, "sample_id": sample.sample_id, **sample.meta}


def store_samples(store: Store, products: ProductsConfig, result: ImportResult) -> int:
    """Write the samples whose batch or lot exists; the others become bad rows. Returns assays."""
    with store.session() as s:
        batches = dict(
            s.execute(
                select(BatchRow.id, BatchRow.product).where(
                    BatchRow.id.in_([x.batch_id for x in result.samples if x.batch_id])
                )
            ).all()
        )
        lots = set(
            s.scalars(
                select(LotRow.id).where(
                    LotRow.id.in_([x.lot_id for x in result.samples if x.lot_id])
                )
            )
        )
    keep: list[Sample] = []
    for sample in result.samples:
        if sample.batch_id is not None and sample.batch_id not in batches:
            reason = f"unknown batch {sample.batch_id!r}"
        elif sample.lot_id is not None and sample.lot_id not in lots:
            reason = f"unknown lot {sample.lot_id!r}"
        else:
            keep.append(sample)
            continue
        result.bad.extend(BadRow(line, reason) for line in sample.lines)
    result.bad.sort(key=lambda b: b.line)
    result.samples = keep
    with store.begin() as s:
        for sample in keep:
            spec = products.products.get(batches.get(sample.batch_id or "", ""))
            s.add(
                AssayRow(
                    batch_id=sample.batch_id,
                    lot_id=sample.lot_id,
                    source="lab",
                    purity_pct=sample.purity_pct,
                    composition=composition(sample, spec.metal if spec else None),
                    taken_at=sample.sampled_at,
                )
            )
    return len(keep)
