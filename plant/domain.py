"""Plain domain types shared by routing, the line engine, the store and the HMI."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from models.chemistry import Chemistry as Chemistry  # re-exported: the plant's one vocabulary


class Route(StrEnum):
    """Diverter destinations."""

    hydromet = "hydromet"
    black_mass = "black_mass"
    reject = "reject"
    quarantine = "quarantine"


class CellState(StrEnum):
    """Life of one cell on the line; `confirmed` and `quarantined` are final."""

    detected = "detected"
    measured = "measured"
    classified = "classified"
    routed = "routed"
    confirmed = "confirmed"
    quarantined = "quarantined"


FINAL_STATES = frozenset({CellState.confirmed, CellState.quarantined})

# Route codes written to the PLC's `diverter.target` register (documented in docs/plc.md).
ROUTE_CODES: dict[Route, int] = {
    Route.hydromet: 1,
    Route.black_mass: 2,
    Route.reject: 3,
    Route.quarantine: 4,
}
ROUTE_BY_CODE: dict[int, Route] = {code: route for route, code in ROUTE_CODES.items()}


class DecisionSource(StrEnum):
    """Which evidence decided a cell's chemistry."""

    passport = "passport"
    spectrum = "spectrum"
    fused = "fused"
    operator = "operator"
    none = "none"


class AlarmPriority(StrEnum):
    critical = "critical"
    high = "high"
    medium = "medium"
    low = "low"
    diagnostic = "diagnostic"


class AlarmState(StrEnum):
    """ISA-18.2 alarm states."""

    active_unacked = "active_unacked"
    active_acked = "active_acked"
    rtn_unacked = "rtn_unacked"
    cleared = "cleared"
    shelved = "shelved"
    suppressed = "suppressed"


class Role(StrEnum):
    viewer = "viewer"
    operator = "operator"
    engineer = "engineer"
    admin = "admin"


ROLE_RANK: dict[Role, int] = {Role.viewer: 0, Role.operator: 1, Role.engineer: 2, Role.admin: 3}


@dataclass(frozen=True, slots=True)
class Decision:
    """A classification outcome with the words an operator reads."""

    chemistry: Chemistry
    confidence: float
    source: DecisionSource
    route: Route
    reason: str
    model_version: str | None = None
