"""Analog alarm limits acting on the live process: the limits engineers set, checked every second.

`LimitWatch` is pure: give it the configured limits (`configure`) and process samples
(`update`); it answers which alarms to raise or clear (deadband and on-delay by
`plant.alarms.LimitAlarm`). `LiveLimits` is the controller's side: it reads its line's limits
(its own, else the every-line ones) from the store at every check, so a limit changed or
deleted through the HMI acts at the next sample, and raises and clears the alarms (source
`process`, code `<tag>.<kind>`, e.g. `leach.ph.high`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from plant.alarms import ACTIVE_STATES, Alarms, LimitAlarm, Transition, alarm_limits
from plant.domain import AlarmPriority, AlarmState
from plant.events import EventBus
from plant.store import AlarmLimitRow, AlarmRow, Store

SOURCE = "process"


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One enabled limit as configured (a change of any field is a new limit)."""

    tag: str
    kind: str
    limit: float
    deadband: float = 0.0
    on_delay_s: float = 0.0
    priority: str = AlarmPriority.medium.value
    unit: str = ""

    @property
    def code(self) -> str:
        return f"{self.tag}.{self.kind}"

    @classmethod
    def from_row(cls, row: AlarmLimitRow) -> LimitSpec:
        return cls(
            row.tag, row.kind, row.limit, row.deadband, row.on_delay_s, row.priority, row.unit
        )

    def message(self, value: float) -> str:
        side = "above its high" if self.kind == "high" else "below its low"
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.tag} {value:.4g}{unit} {side} limit {self.limit:g}{unit}"


@dataclass(frozen=True, slots=True)
class LimitEvent:
    """Raise or clear the alarm `code` (message and priority matter for a raise)."""

    code: str
    transition: Transition
    message: str = ""
    priority: str = AlarmPriority.medium.value


class LimitWatch:
    """The state of every configured limit; `standing` are the codes of alarms still active
    from an earlier run, re-evaluated against the limits and values this run sees."""

    def __init__(self, standing: Iterable[str] = ()) -> None:
        self._standing: set[str] | None = set(standing)
        self._limits: dict[str, tuple[LimitSpec, LimitAlarm]] = {}

    def configure(self, specs: Iterable[LimitSpec]) -> list[LimitEvent]:
        """Take the limits now configured; an active alarm whose limit is gone clears, one whose
        limit changed stays active until the value is back inside the new limit."""
        wanted = {spec.code: spec for spec in specs}
        standing, self._standing = self._standing or set(), None
        events = [LimitEvent(code, "clear") for code in sorted(standing - wanted.keys())]
        for code, (_, alarm) in list(self._limits.items()):
            if code not in wanted:
                del self._limits[code]
                if alarm.active:
                    events.append(LimitEvent(code, "clear"))
        for code, spec in wanted.items():
            old = self._limits.get(code)
            if old is not None and old[0] == spec:
                continue
            alarm = LimitAlarm(
                "high" if spec.kind == "high" else "low",
                spec.limit,
                spec.deadband,
                spec.on_delay_s,
                active=(old is not None and old[1].active) or code in standing,
            )
            self._limits[code] = (spec, alarm)
        return events

    def update(self, values: Mapping[str, float], t: float) -> list[LimitEvent]:
        """Feed one sample of the process values at time `t` (seconds)."""
        events = []
        for code, (spec, alarm) in self._limits.items():
            value = values.get(spec.tag)
            if value is None:
                continue
            change = alarm.update(value, t)
            if change == "raise":
                events.append(LimitEvent(code, change, spec.message(value), spec.priority))
            elif change == "clear":
                events.append(LimitEvent(code, change))
        return events


class LiveLimits:
    """The controller's side: limits from the store, alarms into the store and onto the bus."""

    def __init__(self, store: Store, line: str, bus: EventBus | None) -> None:
        self.store = store
        self.line = line
        self.alarms = Alarms(store, line, bus)
        self._watch: LimitWatch | None = None

    def check(self, values: Mapping[str, float], t: float) -> None:
        """One sample (blocking: database reads and writes; run it in a worker thread)."""
        if self._watch is None:
            self._watch = LimitWatch(standing_codes(self.alarms.active()))
        specs = [LimitSpec.from_row(r) for r in alarm_limits(self.store, self.line) if r.enabled]
        for e in self._watch.configure(specs) + self._watch.update(values, t):
            if e.transition == "raise":
                self.alarms.raise_(SOURCE, e.code, e.message, AlarmPriority(e.priority))
            else:
                self.alarms.clear(SOURCE, e.code)


def standing_codes(rows: Iterable[AlarmRow]) -> list[str]:
    """Codes of limit alarms whose condition was still there when they were last seen."""
    hidden = (AlarmState.shelved, AlarmState.suppressed)
    return [
        r.code
        for r in rows
        if r.source == SOURCE
        and r.state in ACTIVE_STATES
        and (r.state not in hidden or r.cleared_at is None)
    ]
