"""Historian: process values into the store, with roll-ups that keep year-long trends fast.

Samples belong to a line: two lines on one database keep their own. Each tag has one writer:
the line controller records the PLC's values (`PROCESS_TAGS`), the hydromet runner its own
control loops (`HYDROMET_TAGS`); a `Historian` made to write one set refuses the other's tags.
Each sample goes into `process_values` (raw). The same call also folds it into
`process_rollups` at 1-minute, 1-hour and 1-day resolution (count, min, max, sum, sum of squares),
maintained incrementally with one upsert per bucket touched. A trend query picks the coarsest
resolution that still gives about `max_points` buckets over the range, so a year reads at most
8,760 hourly rows and a few minutes read raw samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, cast, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from plant.store import ProcessValueRow, RollupRow, Store

RESOLUTIONS_S: tuple[int, ...] = (60, 3600, 86400)
# PLC process values the line controller records every second (and checks against alarm limits).
PROCESS_TAGS = (
    "leach.ph",
    "leach.temp_c",
    "leach.orp_mv",
    "tank.feed_level_pct",
    "dosing.h2so4_lpm",
    "dosing.naoh_lpm",
    "leach.ph_setpoint",
)
# The hydromet line's own loops, recorded by its runner: impurity removal, the two solvent
# extraction circuits and the Li2CO3 carbonation (drivers/sim/hydromet.py).
HYDROMET_TAGS = (
    "purification.ph",
    "sx_mn.ph",
    "sx_co.ph",
    "carbonation.temp_c",
    "carbonation.bleed_pct",
)
RECORDED_TAGS = PROCESS_TAGS + HYDROMET_TAGS


@dataclass(frozen=True)
class Bucket:
    """One point of a trend: min/max/mean (and spread) of the samples in [start, start+width)."""

    start: datetime
    width_s: int
    n: int
    min: float
    max: float
    mean: float
    sd: float

    def as_json(self) -> dict[str, Any]:
        return {
            "t": self.start.isoformat(),
            "width_s": self.width_s,
            "n": self.n,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "sd": self.sd,
        }


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _epoch(ts: datetime) -> int:
    return math.floor(_utc(ts).timestamp())


class Historian:
    """Record one line's samples and answer downsampled trend queries over them."""

    def __init__(
        self,
        store: Store,
        line: str,
        *,
        writes: Sequence[str] = (),
        resolutions: tuple[int, ...] = RESOLUTIONS_S,
    ) -> None:
        """`writes`: the tags this writer owns (one writer per tag); empty for a reader."""
        self.store = store
        self.line = line
        self.writes = frozenset(writes)
        self.resolutions = tuple(sorted(resolutions))
        self._dialect = store.engine.dialect.name

    def record(self, samples: Iterable[tuple[str, datetime, float]]) -> int:
        """Store (tag, timestamp, value) samples and fold them into the roll-ups, atomically.

        A non-finite value raises ValueError naming the tag: a historian must not chart a NaN as
        a number, and the caller (the poller) must know its source is bad. A tag this writer
        does not own raises ValueError too: two sources of one tag interleave on a chart.
        """
        raw: list[dict[str, Any]] = []
        agg: dict[tuple[str, int, int], list[float]] = {}
        for tag, ts, value in samples:
            if tag not in self.writes:
                raise ValueError(
                    f"historian: {tag} is not written by this writer of {self.line}"
                    f" (it writes {', '.join(sorted(self.writes)) or 'nothing'})"
                )
            v = float(value)
            if not math.isfinite(v):
                raise ValueError(f"historian: {tag} at {ts.isoformat()} is {value!r}, not a number")
            when = _utc(ts)
            raw.append({"line": self.line, "tag": tag, "ts": when, "value": v})
            sec = _epoch(when)
            for res in self.resolutions:
                key = (tag, res, sec - sec % res)
                a = agg.get(key)
                if a is None:
                    agg[key] = [1.0, v, v, v, v * v]
                else:
                    a[0] += 1
                    a[1] = min(a[1], v)
                    a[2] = max(a[2], v)
                    a[3] += v
                    a[4] += v * v
        if not raw:
            return 0
        rows = [
            {"line": self.line, "tag": t, "res_s": r, "bucket": b, "n": int(a[0]), "vmin": a[1],
             "vmax": a[2], "vsum": a[3], "vsumsq": a[4]}
            for (t, r, b), a in sorted(agg.items())
        ]  # fmt: skip
        with self.store.begin() as s:
            s.execute(insert(ProcessValueRow), raw)
            s.execute(self._upsert(), rows)
        return len(raw)

    def _upsert(self) -> Any:
        """INSERT ... ON CONFLICT DO UPDATE merging a bucket's partial aggregate into the row."""
        table: Any = RollupRow.__table__
        lo: Any
        hi: Any
        if self._dialect == "postgresql":
            ins: Any = postgresql.insert(table)
            lo, hi = func.least, func.greatest
        elif self._dialect == "sqlite":
            ins = sqlite.insert(table)
            lo, hi = func.min, func.max
        else:
            raise NotImplementedError(f"historian roll-ups on {self._dialect}")
        ex = ins.excluded
        return ins.on_conflict_do_update(
            index_elements=["line", "tag", "res_s", "bucket"],
            set_={
                "n": table.c.n + ex.n,
                "vmin": lo(table.c.vmin, ex.vmin),
                "vmax": hi(table.c.vmax, ex.vmax),
                "vsum": table.c.vsum + ex.vsum,
                "vsumsq": table.c.vsumsq + ex.vsumsq,
            },
        )

    def resolution_for(self, span_s: float, max_points: int) -> int:
        """Coarsest stored resolution no wider than span/max_points (0 = raw samples)."""
        want = span_s / max(1, max_points)
        fits = [r for r in self.resolutions if r <= want]
        return fits[-1] if fits else 0

    def trend(
        self, tag: str, start: datetime, end: datetime, max_points: int = 1000
    ) -> list[Bucket]:
        """Downsampled series of `tag` over [start, end): about max_points buckets or fewer."""
        s0, e0 = _epoch(start), _epoch(end)
        if e0 <= s0:
            return []
        res = self.resolution_for(e0 - s0, max_points)
        step = max(1, res)
        width = max(step, math.ceil((e0 - s0) / max(1, max_points) / step) * step)
        origin = s0 - s0 % step
        if res:
            k = (RollupRow.bucket - origin) // width
            q = (
                select(
                    k,
                    func.sum(RollupRow.n),
                    func.min(RollupRow.vmin),
                    func.max(RollupRow.vmax),
                    func.sum(RollupRow.vsum),
                    func.sum(RollupRow.vsumsq),
                )
                .where(
                    RollupRow.line == self.line,
                    RollupRow.tag == tag,
                    RollupRow.res_s == res,
                    RollupRow.bucket >= origin,
                    RollupRow.bucket < e0,
                )
                .group_by(k)
                .order_by(k)
            )
        else:
            k = (self._raw_epoch() - origin) // width
            v = ProcessValueRow.value
            q = (
                select(k, func.count(v), func.min(v), func.max(v), func.sum(v), func.sum(v * v))
                .where(
                    ProcessValueRow.line == self.line,
                    ProcessValueRow.tag == tag,
                    ProcessValueRow.ts >= datetime.fromtimestamp(origin, UTC),
                    ProcessValueRow.ts < _utc(end),
                )
                .group_by(k)
                .order_by(k)
            )
        with self.store.session() as s:
            rows = s.execute(q).all()
        out = []
        for idx, n, vmin, vmax, vsum, vsumsq in rows:
            n = int(n)
            mean = float(vsum) / n
            var = max(0.0, float(vsumsq) / n - mean * mean)
            start_ts = datetime.fromtimestamp(origin + int(idx) * width, UTC)
            out.append(Bucket(start_ts, width, n, float(vmin), float(vmax), mean, math.sqrt(var)))
        return out

    def _raw_epoch(self) -> ColumnElement[int]:
        """Whole epoch seconds of a raw sample's timestamp, in this database's dialect."""
        if self._dialect == "postgresql":
            return cast(func.floor(func.extract("epoch", ProcessValueRow.ts)), BigInteger)
        return cast(func.strftime("%s", ProcessValueRow.ts), Integer)


def lines_recording(store: Store, tag: str) -> list[str]:
    """The lines with samples of `tag` (from the daily roll-ups: a few rows per line and day)."""
    day = RESOLUTIONS_S[-1]
    with store.session() as s:
        q = select(RollupRow.line).where(RollupRow.tag == tag, RollupRow.res_s == day).distinct()
        return sorted(s.scalars(q))
