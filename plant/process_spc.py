"""SPC on process variables: pH, ORP and temperatures charted from the historian, alarmed early.

A process variable drifts before the batches it makes go off spec (a leach pH creeping up, a
carbonation running cold). Each configured tag is charted as an individuals chart of subgroup
means (`subgroup_s` seconds of historian samples a point), with limits from the first
`baseline_points` points this controller saw and the product charts' rules (plant/purity.py).

`ProcessSpcWatch` is pure: give it points, it answers which alarms to raise or clear.
`LiveProcessSpc` is the controller's side: it reads the completed subgroups of one line from the
historian and raises and clears the alarms (source `spc`, code `process/<tag>`), so they reach
the alarm list, the HMI and MQTT like the product SPC alarms.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from plant.alarms import Alarms
from plant.config import ProcessSpcSection
from plant.domain import AlarmPriority
from plant.events import EventBus
from plant.historian import Historian
from plant.purity import SpcChart, spc_chart
from plant.store import Store

SOURCE = "spc"
# Tag -> its unit in alarm messages (what the historian records it in).
UNITS = {"_ph": "pH", ".ph": "pH", "temp_c": "°C", "orp_mv": "mV", "_pct": "%"}


def unit_of_tag(tag: str) -> str:
    return next((u for suffix, u in UNITS.items() if tag.endswith(suffix)), "")


@dataclass(frozen=True, slots=True)
class ProcessSpcEvent:
    """Raise or clear the alarm `process/<tag>` (the message matters for a raise)."""

    tag: str
    transition: str  # "raise" or "clear"
    message: str = ""

    @property
    def code(self) -> str:
        return f"process/{self.tag}"


@dataclass
class _Series:
    baseline: list[float] = field(default_factory=list)
    recent: deque[tuple[datetime, float]] = field(default_factory=deque)


class ProcessSpcWatch:
    """Pure: the charts of the configured tags; `add` a completed subgroup's mean, get events."""

    def __init__(self, cfg: ProcessSpcSection) -> None:
        self.cfg = cfg
        self._series: dict[str, _Series] = {tag: _Series() for tag in cfg.tags}
        self._alarmed: set[str] = set()

    def chart(self, tag: str) -> SpcChart:
        """The tag's chart: the baseline, then the recent points after it."""
        s = self._series[tag]
        values = s.baseline + [v for _, v in s.recent]
        c = self.cfg
        return spc_chart(
            tag,
            values,
            c.baseline_points,
            trend_run=c.trend_run,
            floor_ppm=c.floor_of(tag),
            floor_rel=0.0,
            ewma_lambda=c.ewma_lambda,
            ewma_l=c.ewma_l,
        )

    def add(self, tag: str, at: datetime, mean: float) -> list[ProcessSpcEvent]:
        """The mean of the subgroup starting `at`; the alarm to raise or clear, if any."""
        s = self._series[tag]
        if len(s.baseline) < self.cfg.baseline_points:
            s.baseline.append(mean)
            return []
        s.recent.append((at, mean))
        while len(s.recent) > self.cfg.recent_points:
            s.recent.popleft()
        chart = self.chart(tag)
        last = len(chart.values) - 1
        fired = [r for r in chart.violations if r.index == last and r.rule in self.cfg.rules]
        if not fired or chart.limits is None:
            if tag in self._alarmed:
                self._alarmed.discard(tag)
                return [ProcessSpcEvent(tag, "clear")]
            return []
        lim = chart.limits
        unit = unit_of_tag(tag)
        message = (
            f"{tag} {mean:.4g} {unit} (mean of {self.cfg.subgroup_s} s from "
            f"{at.astimezone(UTC):%H:%M:%S} UTC): "
            + "; ".join(f"{r.rule} {r.description}" for r in fired)
            + f" (centre {lim.center:.4g}, UCL {lim.ucl:.4g}, LCL {lim.lcl:.4g})"
        )
        self._alarmed.add(tag)
        return [ProcessSpcEvent(tag, "raise", message)]


class LiveProcessSpc:
    """The controller's side: completed subgroups from one line's historian, alarms into the
    store and onto the bus. `check(now)` is cheap between subgroups (blocking when it reads:
    run it in a worker thread)."""

    LAG_S = 2  # a subgroup is read this long after it ends (samples still on their way)

    def __init__(
        self, store: Store, line: str, bus: EventBus | None, cfg: ProcessSpcSection
    ) -> None:
        self.cfg = cfg
        self.historian = Historian(store, line)
        self.alarms = Alarms(store, line, bus)
        self.watch = ProcessSpcWatch(cfg)
        self._next: int | None = None  # epoch second of the next subgroup to read
        # Each charted tag's limits once its baseline is complete (for the line's status, which
        # the Trends page draws): replaced whole, so another thread reads it safely.
        self.limits: dict[str, dict[str, float]] = {}

    def check(self, now: datetime) -> list[ProcessSpcEvent]:
        """Chart every subgroup completed since the last call; raise or clear the alarms."""
        sub = self.cfg.subgroup_s
        end = (math.floor(now.timestamp()) - self.LAG_S) // sub * sub
        if self._next is None:  # start with the next whole subgroup: this one is partial
            self._next = end + sub
            return []
        if end <= self._next:
            return []
        start, self._next = self._next, end
        t0, t1 = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
        n = (end - start) // sub
        events: list[ProcessSpcEvent] = []
        for tag in self.cfg.tags:
            for b in self.historian.trend(tag, t0, t1, max_points=n):
                events += self.watch.add(tag, b.start, b.mean)
        self.limits = {
            tag: {
                "center": round(lim.center, 6),
                "ucl": round(lim.ucl, 6),
                "lcl": round(lim.lcl, 6),
                "subgroup_s": sub,
            }
            for tag in self.cfg.tags
            if (lim := self.watch.chart(tag).limits) is not None
        }
        for e in events:
            if e.transition == "raise":
                self.alarms.raise_(SOURCE, e.code, e.message, AlarmPriority.medium)
            else:
                self.alarms.clear(SOURCE, e.code)
        return events
