"""Process setpoints requested by engineers from the HMI, applied by the line controller.

The HMI validates the range and records the request (audited, old -> new) in `setpoints`; the
controller polls `pending_setpoints`, writes the PLC and calls `mark_applied`. A controller that
runs in the HMI's process may instead pass a callback to `hmi.app.create_app(setpoint_writer=)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from plant.store import SetpointRow, Store, utcnow


@dataclass(frozen=True, slots=True)
class SetpointSpec:
    """A setpoint the HMI offers: allowed range, unit, and what it does."""

    name: str
    label: str
    unit: str
    lo: float
    hi: float
    default: float


# Ranges from docs/reference/xrf-and-process.md §4.2: the leach runs in 2 M H2SO4
# (strongly acid, pH well below 2); Fe/Al removal precipitates at about pH 3.5-4.
SETPOINTS: dict[str, SetpointSpec] = {
    s.name: s
    for s in (
        SetpointSpec("leach.ph", "Leach pH", "pH", 0.0, 2.0, 1.0),
        SetpointSpec("impurity_removal.ph", "Fe/Al removal pH", "pH", 3.0, 5.0, 4.0),
        # D2EHPA takes Mn at pH ~2.5 (reference §4.2 item 3); Cyanex 272 takes Co from Ni at
        # pH ~5 (docs/purity.md, "Solvent extraction").
        SetpointSpec("sx_mn.ph", "SX D2EHPA (Mn) pH", "pH", 1.5, 4.0, 2.5),
        SetpointSpec("sx_co.ph", "SX Cyanex 272 (Co) pH", "pH", 3.5, 6.5, 5.0),
        # Li2CO3 precipitates hot (inverse solubility); a bleed keeps Na2SO4 from building up
        # in the recycled mother liquor (docs/purity.md, "Li2CO3 precipitation").
        SetpointSpec(
            "carbonation.temp_c", "Li2CO3 carbonation temperature", "°C", 20.0, 100.0, 90.0
        ),
        SetpointSpec("carbonation.bleed_pct", "Li2CO3 mother-liquor bleed", "%", 5.0, 100.0, 30.0),
    )
}
# The hydromet pH loop each hydromet setpoint moves (its historian tag).
HYDROMET_LOOPS = {
    "impurity_removal.ph": "purification.ph",
    "sx_mn.ph": "sx_mn.ph",
    "sx_co.ph": "sx_co.ph",
    "carbonation.temp_c": "carbonation.temp_c",
    "carbonation.bleed_pct": "carbonation.bleed_pct",
}


class SetpointError(ValueError):
    """A setpoint request is out of range or names no known setpoint."""


def validate_setpoint(name: str, value: float) -> SetpointSpec:
    """The spec if `value` is a finite number inside the setpoint's range; else SetpointError."""
    spec = SETPOINTS.get(name)
    if spec is None:
        raise SetpointError(f"unknown setpoint {name!r}; known: {', '.join(SETPOINTS)}")
    if not math.isfinite(value) or not spec.lo <= value <= spec.hi:
        raise SetpointError(
            f"{spec.label} {value!r} {spec.unit} is outside {spec.lo:g}-{spec.hi:g} {spec.unit}"
        )
    return spec


def current_setpoints(store: Store) -> list[dict[str, Any]]:
    """Every offered setpoint with its requested and applied values (default if never set)."""
    with store.session() as s:
        rows = {r.name: r for r in s.scalars(select(SetpointRow))}
    out = []
    for spec in SETPOINTS.values():
        row = rows.get(spec.name)
        out.append(
            {
                "name": spec.name,
                "label": spec.label,
                "unit": spec.unit,
                "lo": spec.lo,
                "hi": spec.hi,
                "value": row.value if row else spec.default,
                "requested_by": row.requested_by if row else None,
                "requested_at": _iso(row.requested_at) if row else None,
                "applied_value": row.applied_value if row else None,
                "applied_at": _iso(row.applied_at) if row else None,
            }
        )
    return out


def request_setpoint(store: Store, name: str, value: float, user: str) -> tuple[float, float]:
    """Record a validated setpoint request, audited; returns (old, new)."""
    spec = validate_setpoint(name, value)
    with store.begin() as s:
        row = s.get(SetpointRow, name, with_for_update=True)
        old = row.value if row else spec.default
        if row is None:
            row = SetpointRow(name=name, value=value, unit=spec.unit, requested_by=user)
            s.add(row)
        row.value = value
        row.requested_by = user
        row.requested_at = utcnow()
        store.audit(s, user, "setpoint", f"setpoint:{name}", f"{old:g}", f"{value:g}")
    return old, value


def pending_setpoints(store: Store) -> list[SetpointRow]:
    """Requests the controller has not applied yet (value differs from the applied one)."""
    with store.session() as s:
        return [
            r
            for r in s.scalars(select(SetpointRow))
            if r.applied_value is None or r.applied_value != r.value
        ]


def mark_applied(store: Store, name: str, value: float) -> None:
    """The controller wrote `value` to the PLC."""
    with store.begin() as s:
        row = s.get(SetpointRow, name)
        if row is not None:
            row.applied_value = value
            row.applied_at = utcnow()


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None
