"""Everything a request handler needs, built once per app: store, config, bus and views."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import Request
from sqlalchemy import func, select

from hmi.auth import LoginThrottle
from plant.alarms import Alarms, Flood, flood_status
from plant.config import PlantConfig
from plant.events import Event, EventBus
from plant.store import AssayRow, BatchRow, Store
from plant.users import UsersConfig

SetpointWriter = Callable[[str, float], None]
# Battery grade: >= 99.5 % purity (/work/shared/reference/xrf-and-process.md §4.1).
BATTERY_GRADE_PCT = 99.5


@dataclass
class PurityView:
    """Batches with their latest assay; verdicts by the battery-grade purity line."""

    store: Store
    target_pct: float = BATTERY_GRADE_PCT

    def batches(self, product: str | None, limit: int) -> list[dict[str, Any]]:
        latest = (
            select(AssayRow.batch_id, func.max(AssayRow.id).label("aid"))
            .where(AssayRow.batch_id.is_not(None))
            .group_by(AssayRow.batch_id)
            .subquery()
        )
        q = (
            select(BatchRow, AssayRow)
            .outerjoin(latest, latest.c.batch_id == BatchRow.id)
            .outerjoin(AssayRow, AssayRow.id == latest.c.aid)
        )
        if product:
            q = q.where(BatchRow.product == product)
        with self.store.session() as s:
            rows = s.execute(q.order_by(BatchRow.created_at.desc()).limit(limit)).all()
        return [self._batch(b, a) for b, a in rows]

    def _batch(self, b: BatchRow, a: AssayRow | None) -> dict[str, Any]:
        purity = a.purity_pct if a else None
        in_spec = None if purity is None else purity >= self.target_pct
        reasons = [f"purity {purity:.2f} % < {self.target_pct} %"] if in_spec is False else []
        return {
            "id": b.id,
            "product": b.product,
            "mass_kg": b.mass_kg,
            "state": b.state,
            "created_at": b.created_at.isoformat(),
            "purity_pct": purity,
            "impurities_ppm": dict(a.composition) if a else {},
            "assay_source": a.source if a else None,
            "in_spec": in_spec,
            "reasons": reasons,
        }

    def overview(self) -> dict[str, Any]:
        return {"available": False, "reason": "purity reports are not installed yet"}


@dataclass
class ModelsView:
    """The classifier registry, when one is installed."""

    def describe(self) -> dict[str, Any]:
        return {"available": False, "reason": "model registry not installed yet", "models": []}

    def activate(self, version: str) -> str | None:
        raise RuntimeError("model registry not installed yet")


THRESHOLD_SECTION = "thresholds"


@dataclass
class RoutingView:
    """Numeric thresholds of config/routing.toml's [thresholds] table, edited in place."""

    path: Path
    store: Store

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist")
        with self.path.open("rb") as fh:
            return tomllib.load(fh)

    def thresholds(self) -> dict[str, Any]:
        try:
            table = self._read().get(THRESHOLD_SECTION, {})
        except (FileNotFoundError, tomllib.TOMLDecodeError) as exc:
            return {"available": False, "reason": str(exc), "thresholds": []}
        items = [
            {"name": k, "value": v, **self._range(k)}
            for k, v in table.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        return {"available": True, "file": str(self.path), "thresholds": items}

    @staticmethod
    def _range(key: str) -> dict[str, float | None]:
        bounded = any(w in key for w in ("confidence", "rate", "fraction", "share"))
        return {"lo": 0.0, "hi": 1.0 if bounded else None}

    def set_threshold(self, key: str, value: float, user: str) -> tuple[float, float]:
        """Rewrite one `key = number` line in [thresholds], keeping comments; audited."""
        table = self._read().get(THRESHOLD_SECTION, {})
        if key not in table or isinstance(table[key], bool | str):
            raise KeyError(f"{self.path}: no numeric threshold {key!r} in [{THRESHOLD_SECTION}]")
        rng = self._range(key)
        if value < (rng["lo"] or 0.0) or (rng["hi"] is not None and value > rng["hi"]):
            raise ValueError(f"{key} = {value:g} is outside {rng['lo']:g}-{rng['hi']}")
        text = self.path.read_text()
        new_text, n = _replace_in_section(text, THRESHOLD_SECTION, key, repr(float(value)))
        if n != 1:
            raise KeyError(f"{self.path}: cannot find the line for {key!r} to rewrite")
        tomllib.loads(new_text)  # never write a file that no longer parses
        old = float(table[key])
        with self.store.begin() as s:
            self.store.audit(s, user, "routing.threshold", f"routing:{key}", old, value)
            self.path.write_text(new_text)
        return old, float(value)


def _replace_in_section(text: str, section: str, key: str, value: str) -> tuple[str, int]:
    """Replace the value of `key` inside `[section]` only; returns (text, replacements)."""
    out, current, n = [], None, 0
    pattern = re.compile(rf"^(\s*{re.escape(key)}\s*=\s*)([^#\n]*?)(\s*(#.*)?)$")
    for line in text.splitlines(keepends=True):
        header = re.match(r"^\s*\[([^\]]+)\]", line)
        if header:
            current = header.group(1).strip()
        elif current == section:
            m = pattern.match(line.rstrip("\n"))
            if m:
                line = f"{m.group(1)}{value}{m.group(3)}" + ("\n" if line.endswith("\n") else "")
                n += 1
        out.append(line)
    return "".join(out), n


@dataclass
class HmiContext:
    """Per-app state: one store, the plant and users config, the bus, throttle and views."""

    store: Store
    config: PlantConfig
    users: UsersConfig
    config_dir: Path
    bus: EventBus | None = None
    setpoint_writer: SetpointWriter | None = None
    throttle: LoginThrottle = field(init=False)
    alarms: Alarms = field(init=False)
    purity: PurityView = field(init=False)
    models: ModelsView = field(init=False)
    routing: RoutingView = field(init=False)

    def __post_init__(self) -> None:
        self.throttle = LoginThrottle(
            self.users.auth.login_max_failures, self.users.auth.login_window_s
        )
        self.alarms = Alarms(self.store, None, self.bus)
        self.purity = PurityView(self.store)
        self.models = ModelsView()
        self.routing = RoutingView(self.config_dir / "routing.toml", self.store)

    def flood(self) -> Flood:
        return flood_status(
            self.store,
            threshold=self.users.alarms.flood_count,
            window=timedelta(minutes=self.users.alarms.flood_window_min),
        )

    def publish(self, topic: str, line: str, data: dict[str, Any]) -> None:
        """Tell in-process subscribers (the WebSocket) about a change made through the HMI."""
        if self.bus is not None:
            self.bus.publish_threadsafe(Event(topic, line, data))


def ctx(request: Request) -> HmiContext:
    """FastAPI dependency: this app's context."""
    c: HmiContext = request.app.state.hmi
    return c
