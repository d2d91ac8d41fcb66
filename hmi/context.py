"""Everything a request handler needs, built once per app: store, config, bus and views."""

from __future__ import annotations

import json
import os
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
from plant.model_catalog import ModelCatalog
from plant.purity_report import iso_utc
from plant.store import AssayRow, BatchRow, Store
from plant.users import UsersConfig

SetpointWriter = Callable[[str, float], None]
# Battery grade: >= 99.5 % purity (docs/reference/xrf-and-process.md §4.1).
BATTERY_GRADE_PCT = 99.5


@dataclass
class PurityView:
    """Batches with verdicts, SPC, mass balance, recovery and lots from `plant.purity_report`.

    Without config/products.toml and config/hydromet.toml it still lists batches, judged by the
    battery-grade purity line alone, and says why the rest is missing.
    """

    store: Store
    config_dir: Path
    target_pct: float = BATTERY_GRADE_PCT

    def _configs(self) -> tuple[Any, Any] | str:
        from plant.config import ConfigError
        from plant.hydromet import load_hydromet
        from plant.purity import load_products

        try:
            return load_products(self.config_dir), load_hydromet(self.config_dir)
        except ConfigError as exc:
            return str(exc)

    def batches(self, product: str | None, limit: int) -> list[dict[str, Any]]:
        from plant.purity_report import batch_rows

        cfgs = self._configs()
        rows = self._plain_batches() if isinstance(cfgs, str) else batch_rows(self.store, cfgs[0])
        rows = [r for r in rows if product in (None, r["product"])]
        rows.sort(key=lambda r: r["created_at"] or "", reverse=True)
        return rows[:limit]

    def _plain_batches(self) -> list[dict[str, Any]]:
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
        with self.store.session() as s:
            rows = s.execute(q).all()
        out = []
        for b, a in rows:
            purity = a.purity_pct if a else None
            in_spec = None if purity is None else purity >= self.target_pct
            out.append(
                {
                    "id": b.id,
                    "product": b.product,
                    "mass_kg": b.mass_kg,
                    "state": b.state,
                    "created_at": iso_utc(b.created_at),
                    "purity_pct": purity,
                    "assay_source": a.source if a else None,
                    "in_spec": in_spec,
                    "reasons": [f"purity {purity:.2f} % < {self.target_pct} %"]
                    if in_spec is False
                    else [],
                }
            )
        return out

    def specs(self) -> dict[str, dict[str, Any]]:
        """Each product's spec as configured, so pages draw limits without knowing them."""
        cfgs = self._configs()
        if isinstance(cfgs, str):
            return {}
        return {name: spec.model_dump() for name, spec in cfgs[0].products.items()}

    def overview(self) -> dict[str, Any]:
        from plant.purity_report import build_report

        cfgs = self._configs()
        if isinstance(cfgs, str):
            return {"available": False, "reason": cfgs}
        rep = build_report(self.store, cfgs[0], cfgs[1])
        rep.pop("batches", None)
        return {"available": True, **rep}


THRESHOLD_SECTION = "thresholds"
ROUTES_SECTION = "routes"
APPLIES_LIVE = "live: the line routes the cells decided from about a second after the change by it"


@dataclass
class RoutingView:
    """Thresholds and routes of config/routing.toml, edited in place; the line controller
    applies a change within about a second (plant/routing_live.py)."""

    path: Path
    store: Store

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist")
        with self.path.open("rb") as fh:
            return tomllib.load(fh)

    def thresholds(self) -> dict[str, Any]:
        try:
            data = self._read()
        except (FileNotFoundError, tomllib.TOMLDecodeError) as exc:
            return {"available": False, "reason": str(exc), "thresholds": [], "routes": {}}
        items = [
            {"name": k, "value": v, **self._range(k)}
            for k, v in data.get(THRESHOLD_SECTION, {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        return {
            "available": True,
            "file": str(self.path),
            "thresholds": items,
            "routes": data.get(ROUTES_SECTION, {}),
            "applies": APPLIES_LIVE,
        }

    @staticmethod
    def _range(key: str) -> dict[str, float | None]:
        """Bounds from plant.routing.Thresholds' field constraints (ge/le)."""
        from plant.routing import Thresholds

        lo: float = 0.0
        hi: float | None = None
        field_info = Thresholds.model_fields.get(key)
        for m in field_info.metadata if field_info else []:
            if getattr(m, "ge", None) is not None:
                lo = float(m.ge)
            if getattr(m, "le", None) is not None:
                hi = float(m.le)
        return {"lo": lo, "hi": hi}

    def set_threshold(self, key: str, value: float, user: str) -> tuple[float, float]:
        """Rewrite one `key = number` line in [thresholds], keeping comments; audited."""
        table = self._read().get(THRESHOLD_SECTION, {})
        if key not in table or isinstance(table[key], bool | str):
            raise KeyError(f"{self.path}: no numeric threshold {key!r} in [{THRESHOLD_SECTION}]")
        rng = self._range(key)
        lo, hi = rng["lo"] or 0.0, rng["hi"]
        if value < lo or (hi is not None and value > hi):
            raise ValueError(
                f"{key} = {value:g} is outside {lo:g}-{hi if hi is not None else 'inf'}"
            )
        old = float(table[key])
        self._rewrite(THRESHOLD_SECTION, key, repr(float(value)), user, "routing.threshold", old)
        return old, float(value)

    def set_route(self, chemistry: str, route: str, user: str) -> tuple[str, str]:
        """Rewrite the route of one chemistry in [routes], keeping comments; audited."""
        table = self._read().get(ROUTES_SECTION, {})
        old = table.get(chemistry)
        if not isinstance(old, str):
            raise KeyError(f"{self.path}: no route for {chemistry!r} in [{ROUTES_SECTION}]")
        self._rewrite(ROUTES_SECTION, chemistry, json.dumps(route), user, "routing.route", old)
        return old, route

    def _rewrite(
        self, section: str, key: str, value: str, user: str, action: str, old: object
    ) -> None:
        """Write `key = value` in `section` if the file still validates; audited old -> new.
        The file is replaced in one step, so the line controller never reads half of it."""
        text = self.path.read_text()
        new_text, n = _replace_in_section(text, section, key, value)
        if n != 1:
            raise KeyError(f"{self.path}: cannot find the line for {key!r} to rewrite")
        from plant.config import ConfigError, validate
        from plant.routing import RoutingRules

        try:  # never write a file the line controller would refuse
            validate(self.path, tomllib.loads(new_text), RoutingRules)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with self.store.begin() as s:
            self.store.audit(s, user, action, f"routing:{key}", old, value.strip('"'))
            tmp.write_text(new_text)
            os.replace(tmp, self.path)


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
    models: ModelCatalog = field(init=False)
    routing: RoutingView = field(init=False)

    def __post_init__(self) -> None:
        self.throttle = LoginThrottle(
            self.users.auth.login_max_failures, self.users.auth.login_window_s
        )
        self.alarms = Alarms(self.store, None, self.bus)
        self.purity = PurityView(self.store, self.config_dir)
        self.models = ModelCatalog(self.config.plant.data_dir, self.config_dir)
        self.routing = RoutingView(self.config_dir / "routing.toml", self.store)

    def line_limits(self) -> dict[str, float]:
        """What the overview draws the line's figures against: the quarantine-rate alarm limit
        and the XRF station's capacity (heads / live time), from config/plant.toml."""
        line, heads = self.config.line, self.config.xrf.heads
        return {
            "quarantine_rate_alarm": line.quarantine_rate_alarm,
            "capacity_cells_per_min": round(heads / line.xrf_live_time_s * 60, 1),
        }

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
