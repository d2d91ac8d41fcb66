"""Live status of each line, shared through the store so any number of HMI processes can show it.

The line controller upserts one row per line about once a second (`write_status`); HMIs read all
rows (`read_statuses`). A row older than `STALE_AFTER_S` means that line's controller is silent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from plant.store import LineStatusRow, Store, utcnow

HEALTH_OK = "ok"
HEALTH_DEGRADED = "degraded"
HEALTH_DOWN = "down"
HEALTH_UNKNOWN = "unknown"
HEALTH_VALUES = (HEALTH_OK, HEALTH_DEGRADED, HEALTH_DOWN, HEALTH_UNKNOWN)
STALE_AFTER_S = 10.0


@dataclass(slots=True)
class LineStatus:
    """What the HMI overview shows for one line: health, throughput, per-route counts."""

    line: str
    running: bool = False
    plc_health: str = HEALTH_UNKNOWN
    xrf_health: str = HEALTH_UNKNOWN
    cells_per_min: float = 0.0
    quarantine_rate: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        for name in ("plc_health", "xrf_health"):
            if getattr(self, name) not in HEALTH_VALUES:
                raise ValueError(
                    f"LineStatus.{name}={getattr(self, name)!r}: expected one of {HEALTH_VALUES}"
                )

    def age_s(self, now: datetime | None = None) -> float:
        """Seconds since the controller last wrote this status."""
        ts = self.updated_at if self.updated_at.tzinfo else self.updated_at.replace(tzinfo=UTC)
        return ((now or utcnow()) - ts).total_seconds()

    def as_json(self) -> dict[str, Any]:
        """The status as the API, the WebSocket and the `counts`/`health` events carry it."""
        d = asdict(self)
        d["updated_at"] = self.updated_at.isoformat()
        d["stale"] = self.age_s() > STALE_AFTER_S
        return d


def write_status(store: Store, status: LineStatus) -> None:
    """Insert or replace the line's status row in one statement (SQLite and PostgreSQL)."""
    values = {
        "line": status.line,
        "updated_at": status.updated_at,
        "running": status.running,
        "plc_health": status.plc_health,
        "xrf_health": status.xrf_health,
        "cells_per_min": float(status.cells_per_min),
        "quarantine_rate": float(status.quarantine_rate),
        "counts": dict(status.counts),
        "extra": dict(status.extra),
    }
    dialect = postgresql if store.engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(LineStatusRow).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["line"], set_={k: v for k, v in values.items() if k != "line"}
    )
    with store.begin() as s:
        s.execute(stmt)


def read_statuses(store: Store) -> list[LineStatus]:
    """Every line's latest status, ordered by line id."""
    with store.session() as s:
        rows = s.scalars(select(LineStatusRow).order_by(LineStatusRow.line)).all()
    return [
        LineStatus(
            line=r.line,
            running=r.running,
            plc_health=r.plc_health,
            xrf_health=r.xrf_health,
            cells_per_min=r.cells_per_min,
            quarantine_rate=r.quarantine_rate,
            counts={str(k): int(v) for k, v in (r.counts or {}).items()},
            extra=dict(r.extra or {}),
            updated_at=r.updated_at if r.updated_at.tzinfo else r.updated_at.replace(tzinfo=UTC),
        )
        for r in rows
    ]
