"""Alarms after ISA-18.2 / IEC 62682: raise/clear, acknowledge, shelve, suppress; flood; limits.

One active occurrence per (line, source, code): raising an alarm that is already active does not
create a second row, so a condition that persists for an hour is one alarm, not thousands.

State model (AlarmState):
  raise            -> active_unacked
  ack              active_unacked -> active_acked;  rtn_unacked -> cleared
  condition clears active_acked -> cleared;  active_unacked -> rtn_unacked
  shelve/suppress  any open state -> shelved / suppressed (hidden from operators, still recorded)
  unshelve/unsuppress, or shelve expiry -> active_unacked if the condition is still there,
                   else cleared
Analog limits use `LimitAlarm` (deadband + on-delay) so a value hovering at its limit does not
chatter. Every operator action is written with `Store.audit` in the same transaction.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from plant.domain import AlarmPriority, AlarmState
from plant.events import Event, EventBus
from plant.historian import PROCESS_TAGS
from plant.store import AlarmEventRow, AlarmLimitRow, AlarmRow, Store, utcnow

ACTIVE_STATES = (
    AlarmState.active_unacked,
    AlarmState.active_acked,
    AlarmState.shelved,
    AlarmState.suppressed,
)
OPEN_STATES = (*ACTIVE_STATES, AlarmState.rtn_unacked)
# What operators see as standing alarms (shelved and suppressed ones are hidden on purpose).
ANNUNCIATED_STATES = (AlarmState.active_unacked, AlarmState.active_acked, AlarmState.rtn_unacked)
FLOOD_COUNT = 10
FLOOD_WINDOW = timedelta(minutes=10)


class AlarmError(ValueError):
    """An alarm action is not possible (unknown id, wrong state, bad shelve time)."""


def alarm_json(row: AlarmRow) -> dict[str, object]:
    """The alarm as the API and events show it."""
    return {
        "id": row.id,
        "line": row.line,
        "source": row.source,
        "code": row.code,
        "message": row.message,
        "priority": row.priority,
        "state": row.state,
        "raised_at": _iso(row.raised_at),
        "acked_at": _iso(row.acked_at),
        "acked_by": row.acked_by,
        "ack_note": row.ack_note,
        "cleared_at": _iso(row.cleared_at),
        "shelved_until": _iso(row.shelved_until),
        "shelve_reason": row.shelve_reason,
    }


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None


class Alarms:
    """Raise, clear and handle alarms; the store is the truth, the bus tells the HMI.

    `line` scopes raise/clear/active; the operator actions (ack, shelve, ...) take an alarm id
    and work on any line, so the HMI uses `Alarms(store, None, bus)`.
    """

    def __init__(self, store: Store, line: str | None, bus: EventBus | None = None) -> None:
        self.store = store
        self.line = line
        self.bus = bus

    def publish(self, row: AlarmRow) -> None:
        if self.bus is None:
            return
        event = Event("alarm", row.line or "", alarm_json(row))
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # called from a worker thread (e.g. an HMI request handler)
            self.bus.publish_threadsafe(event)
        else:
            self.bus.publish(event)

    def _open(self, s: Session, source: str, code: str, states: tuple[str, ...]) -> AlarmRow | None:
        return s.scalars(
            select(AlarmRow)
            .where(
                AlarmRow.line == self.line,
                AlarmRow.source == source,
                AlarmRow.code == code,
                AlarmRow.state.in_([str(x) for x in states]),
            )
            .order_by(AlarmRow.id.desc())
            .limit(1)
        ).first()

    # -- condition side (line engine, purity SPC) ---------------------------------------------
    def raise_(
        self, source: str, code: str, message: str, priority: AlarmPriority = AlarmPriority.high
    ) -> AlarmRow:
        """Raise (or keep) the alarm; a returned-to-normal unacked one becomes active again."""
        with self.store.begin() as s:
            row = self.raise_in(s, source, code, message, priority)
        self.publish(row)
        return row

    def raise_in(
        self,
        s: Session,
        source: str,
        code: str,
        message: str,
        priority: AlarmPriority = AlarmPriority.high,
    ) -> AlarmRow:
        """`raise_` inside the caller's transaction (the line's database worker); the caller
        publishes the row once it has committed."""
        row = self._open(s, source, code, OPEN_STATES)
        if row is not None and row.state in (AlarmState.shelved, AlarmState.suppressed):
            if row.cleared_at is not None:
                _journal(s, row, "raised", note=message)
            row.cleared_at = None  # condition back while hidden: stays hidden, now active
            return row
        if row is not None and row.state != AlarmState.rtn_unacked:
            return row
        if row is not None:  # it came back before anyone acknowledged its return: a new raise
            row.state = AlarmState.active_unacked
            row.message = message
            row.raised_at = utcnow()
            row.cleared_at = None
            _journal(s, row, "raised", note=message)
        else:
            row = AlarmRow(
                line=self.line,
                source=source,
                code=code,
                message=message,
                priority=str(priority),
                state=AlarmState.active_unacked,
                raised_at=utcnow(),
            )
            s.add(row)
            s.flush()
            _journal(s, row, "raised", note=message)
        s.flush()
        return row

    def clear(self, source: str, code: str) -> AlarmRow | None:
        """The condition returned to normal: acked alarms clear, unacked ones await an ack."""
        with self.store.begin() as s:
            row = self.clear_in(s, source, code)
        if row is not None:
            self.publish(row)
        return row

    def clear_in(self, s: Session, source: str, code: str) -> AlarmRow | None:
        """`clear` inside the caller's transaction; the caller publishes the row."""
        row = self._open(s, source, code, ACTIVE_STATES)
        if row is None:
            return None
        if row.state in (AlarmState.shelved, AlarmState.suppressed):
            if row.cleared_at is None:
                row.cleared_at = utcnow()
                _journal(s, row, "returned")
            return row
        row.state = (
            AlarmState.cleared if row.state == AlarmState.active_acked else AlarmState.rtn_unacked
        )
        row.cleared_at = utcnow()
        _journal(s, row, "cleared" if row.state == AlarmState.cleared else "returned")
        return row

    def active_in(self, s: Session) -> list[tuple[str, str]]:
        """(source, code) of this line's alarms whose condition is active."""
        rows = s.execute(
            select(AlarmRow.source, AlarmRow.code).where(
                AlarmRow.line == self.line,
                AlarmRow.state.in_([str(x) for x in ACTIVE_STATES]),
                AlarmRow.cleared_at.is_(None),
            )
        ).all()
        return [(str(a), str(b)) for a, b in rows]

    def active(self) -> list[AlarmRow]:
        """This line's open alarms (including shelved and suppressed), newest first."""
        with self.store.session() as s:
            return list(
                s.scalars(
                    select(AlarmRow)
                    .where(AlarmRow.line == self.line, AlarmRow.state.in_(list(OPEN_STATES)))
                    .order_by(AlarmRow.raised_at.desc())
                )
            )

    # -- operator side (HMI) ------------------------------------------------------------------
    def _act(self, s: Session, alarm_id: int) -> AlarmRow:
        row = s.get(AlarmRow, alarm_id, with_for_update=True)
        if row is None:
            raise AlarmError(f"no alarm with id {alarm_id}")
        return row

    def ack(self, alarm_id: int, user: str, note: str | None = None) -> AlarmRow:
        """Acknowledge: who, when and an optional note are recorded and audited."""
        with self.store.begin() as s:
            row = self._act(s, alarm_id)
            old = row.state
            if old == AlarmState.active_unacked:
                row.state = AlarmState.active_acked
            elif old == AlarmState.rtn_unacked:
                row.state = AlarmState.cleared
            else:
                raise AlarmError(f"alarm {alarm_id} is {old}: nothing to acknowledge")
            row.acked_at = utcnow()
            row.acked_by = user
            row.ack_note = (note or "").strip() or None
            _journal(s, row, "acknowledged", user, row.ack_note)
            if row.state == AlarmState.cleared:
                _journal(s, row, "cleared", user)
            self.store.audit(s, user, "alarm.ack", f"alarm:{alarm_id}", old, _with(row, note))
        self.publish(row)
        return row

    def shelve(
        self,
        alarm_id: int,
        user: str,
        reason: str,
        duration: timedelta,
        *,
        max_duration: timedelta,
    ) -> AlarmRow:
        """Hide a standing alarm for a while (reason required, duration capped by config)."""
        if not reason.strip():
            raise AlarmError("shelving needs a reason")
        if duration <= timedelta(0):
            raise AlarmError("shelve duration must be positive")
        if duration > max_duration:
            hours = max_duration.total_seconds() / 3600
            raise AlarmError(f"shelve duration is capped at {hours:g} h by config/users.toml")
        with self.store.begin() as s:
            row = self._act(s, alarm_id)
            old = row.state
            if old not in (
                AlarmState.active_unacked,
                AlarmState.active_acked,
                AlarmState.rtn_unacked,
                AlarmState.shelved,
            ):
                raise AlarmError(f"alarm {alarm_id} is {old}: only standing alarms can be shelved")
            if old == AlarmState.rtn_unacked and row.cleared_at is None:
                row.cleared_at = utcnow()
            row.state = AlarmState.shelved
            row.shelved_until = utcnow() + duration
            row.shelve_reason = reason.strip()
            until = f"{row.shelved_until:%Y-%m-%d %H:%M:%S} UTC"
            _journal(s, row, "shelved", user, f"until {until}: {row.shelve_reason}")
            self.store.audit(
                s,
                user,
                "alarm.shelve",
                f"alarm:{alarm_id}",
                old,
                f"shelved until {row.shelved_until.isoformat()}: {row.shelve_reason}",
            )
        self.publish(row)
        return row

    def suppress(self, alarm_id: int, user: str, reason: str) -> AlarmRow:
        """Suppress by design or out of service (engineers): hidden until unsuppressed."""
        if not reason.strip():
            raise AlarmError("suppressing needs a reason")
        with self.store.begin() as s:
            row = self._act(s, alarm_id)
            old = row.state
            if old not in OPEN_STATES or old == AlarmState.suppressed:
                raise AlarmError(f"alarm {alarm_id} is {old}: cannot be suppressed")
            row.state = AlarmState.suppressed
            row.shelved_until = None
            row.shelve_reason = reason.strip()
            _journal(s, row, "suppressed", user, row.shelve_reason)
            self.store.audit(s, user, "alarm.suppress", f"alarm:{alarm_id}", old, reason.strip())
        self.publish(row)
        return row

    def unshelve(self, alarm_id: int, user: str) -> AlarmRow:
        """Return a shelved or suppressed alarm to service; a standing condition re-annunciates."""
        with self.store.begin() as s:
            row = self._act(s, alarm_id)
            if row.state not in (AlarmState.shelved, AlarmState.suppressed):
                raise AlarmError(f"alarm {alarm_id} is {row.state}: not shelved or suppressed")
            old = row.state
            self._return_to_service(row)
            _journal(s, row, "unshelved", user, f"from {old}")
            self.store.audit(s, user, f"alarm.un{old}", f"alarm:{alarm_id}", old, row.state)
        self.publish(row)
        return row

    @staticmethod
    def _return_to_service(row: AlarmRow) -> None:
        row.state = AlarmState.cleared if row.cleared_at else AlarmState.active_unacked
        row.shelved_until = None

    def expire_shelves(self, now: datetime | None = None) -> list[AlarmRow]:
        """Unshelve every alarm whose shelve time has run out (call periodically)."""
        now = now or utcnow()
        with self.store.begin() as s:
            rows = list(
                s.scalars(
                    select(AlarmRow).where(
                        AlarmRow.state == AlarmState.shelved, AlarmRow.shelved_until <= now
                    )
                )
            )
            for row in rows:
                self._return_to_service(row)
                _journal(s, row, "unshelved", None, "shelve time ran out")
                self.store.audit(
                    s, "system", "alarm.shelve_expired", f"alarm:{row.id}", "shelved", row.state
                )
        for row in rows:
            self.publish(row)
        return rows


JOURNAL_KINDS = (
    "raised",
    "acknowledged",
    "returned",
    "cleared",
    "shelved",
    "unshelved",
    "suppressed",
)


def _journal(
    s: Session, row: AlarmRow, kind: str, user: str | None = None, note: str | None = None
) -> None:
    """One journal entry for the alarm, in the caller's transaction (with the state change)."""
    s.add(AlarmEventRow(alarm_id=row.id, ts=utcnow(), kind=kind, user=user, note=note))


def alarm_journal(
    store: Store,
    *,
    alarm_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Journal entries, newest first, each with its alarm's source, code, line and priority."""
    q = select(AlarmEventRow, AlarmRow).join(AlarmRow, AlarmRow.id == AlarmEventRow.alarm_id)
    if alarm_id is not None:
        q = q.where(AlarmEventRow.alarm_id == alarm_id)
    if since is not None:
        q = q.where(AlarmEventRow.ts >= since)
    if until is not None:
        q = q.where(AlarmEventRow.ts < until)
    with store.session() as s:
        rows = s.execute(q.order_by(AlarmEventRow.id.desc()).limit(limit)).all()
    return [
        {
            "id": e.id,
            "alarm_id": e.alarm_id,
            "ts": _iso(e.ts),
            "kind": e.kind,
            "user": e.user,
            "note": e.note,
            "line": a.line,
            "source": a.source,
            "code": a.code,
            "priority": a.priority,
        }
        for e, a in rows
    ]


def _with(row: AlarmRow, note: str | None) -> str:
    return f"{row.state}: {note.strip()}" if note and note.strip() else str(row.state)


# -- queries ----------------------------------------------------------------------------------
def search_alarms(
    store: Store,
    *,
    states: tuple[str, ...] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    priority: str | None = None,
    source: str | None = None,
    line: str | None = None,
    limit: int = 200,
) -> list[AlarmRow]:
    """Alarm history filtered by state, time raised, priority, source (substring) and line."""
    q = select(AlarmRow)
    if states:
        q = q.where(AlarmRow.state.in_([str(x) for x in states]))
    if since:
        q = q.where(AlarmRow.raised_at >= since)
    if until:
        q = q.where(AlarmRow.raised_at <= until)
    if priority:
        q = q.where(AlarmRow.priority == priority)
    if source:
        q = q.where(AlarmRow.source.contains(source))
    if line:
        q = q.where(AlarmRow.line == line)
    with store.session() as s:
        return list(
            s.scalars(q.order_by(AlarmRow.raised_at.desc(), AlarmRow.id.desc()).limit(limit))
        )


@dataclass(frozen=True, slots=True)
class Flood:
    """Alarm flood per ISA-18.2: more than `threshold` alarms raised within `window`."""

    active: bool
    raised: int
    threshold: int
    window_min: float

    def as_json(self) -> dict[str, object]:
        return {
            "active": self.active,
            "raised": self.raised,
            "threshold": self.threshold,
            "window_min": self.window_min,
        }


def flood_status(
    store: Store,
    *,
    threshold: int = FLOOD_COUNT,
    window: timedelta = FLOOD_WINDOW,
    now: datetime | None = None,
) -> Flood:
    """Count alarms raised in the last `window`; more than `threshold` is a flood."""
    since = (now or utcnow()) - window
    with store.session() as s:
        n = int(s.scalar(select(func.count(AlarmRow.id)).where(AlarmRow.raised_at >= since)) or 0)
    return Flood(n > threshold, n, threshold, window.total_seconds() / 60)


# -- analog limit alarms ----------------------------------------------------------------------
Transition = Literal["raise", "clear"]


@dataclass(slots=True)
class LimitAlarm:
    """A high or low limit with deadband and on-delay; pure: feed it (value, time) samples.

    Raises after the value has stayed beyond the limit for `on_delay_s`; clears only once the
    value is back inside by more than `deadband`. NaN samples are ignored (no raise, no clear).
    """

    kind: Literal["high", "low"]
    limit: float
    deadband: float = 0.0
    on_delay_s: float = 0.0
    active: bool = False
    _beyond_since: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("high", "low"):
            raise ValueError(f"LimitAlarm.kind={self.kind!r}: expected 'high' or 'low'")
        if not math.isfinite(self.limit):
            raise ValueError(f"LimitAlarm.limit={self.limit!r}: must be a finite number")
        if self.deadband < 0 or self.on_delay_s < 0:
            raise ValueError("LimitAlarm deadband and on_delay_s must not be negative")

    def _beyond(self, value: float) -> bool:
        return value > self.limit if self.kind == "high" else value < self.limit

    def _back_inside(self, value: float) -> bool:
        if self.kind == "high":
            return value < self.limit - self.deadband
        return value > self.limit + self.deadband

    def update(self, value: float, t: float) -> Transition | None:
        """Feed one sample at time `t` (seconds); returns "raise", "clear" or None."""
        if math.isnan(value):
            return None
        if self.active:
            if self._back_inside(value):
                self.active = False
                self._beyond_since = None
                return "clear"
            return None
        if not self._beyond(value):
            self._beyond_since = None
            return None
        if self._beyond_since is None:
            self._beyond_since = t
        if t - self._beyond_since >= self.on_delay_s:
            self.active = True
            return "raise"
        return None

    @classmethod
    def from_row(cls, row: AlarmLimitRow) -> LimitAlarm:
        kind: Literal["high", "low"] = "high" if row.kind == "high" else "low"
        return cls(kind, row.limit, row.deadband, row.on_delay_s)


ALL_LINES = "*"  # the `line` of a limit that acts on every line without one of its own


def alarm_limits(store: Store, line: str | None = None) -> list[AlarmLimitRow]:
    """The analog limits by tag and kind: every one configured (`line` None), or those acting on
    `line`: its own, and each every-line limit whose tag and kind it has none of."""
    with store.session() as s:
        rows = list(
            s.scalars(
                select(AlarmLimitRow).order_by(
                    AlarmLimitRow.tag, AlarmLimitRow.kind, AlarmLimitRow.line
                )
            )
        )
    if line is None:
        return rows
    own = {(r.tag, r.kind) for r in rows if r.line == line}
    return [
        r for r in rows if r.line == line or (r.line == ALL_LINES and (r.tag, r.kind) not in own)
    ]


def check_line(line: str) -> str:
    """`line` if it names a line (or ALL_LINES); else AlarmError naming the problem."""
    if line != ALL_LINES and not (
        0 < len(line) <= 32 and all(c.isalnum() or c in "-_" for c in line)
    ):
        raise AlarmError(
            f"line {line!r}: give a line id (letters, digits, - and _, up to 32) or "
            f"{ALL_LINES!r} for every line"
        )
    return line


def limit_json(row: AlarmLimitRow) -> dict[str, object]:
    return {
        "line": row.line,
        "tag": row.tag,
        "kind": row.kind,
        "limit": row.limit,
        "deadband": row.deadband,
        "on_delay_s": row.on_delay_s,
        "priority": row.priority,
        "unit": row.unit,
        "enabled": row.enabled,
        "updated_at": _iso(row.updated_at),
        "updated_by": row.updated_by,
    }


def set_alarm_limit(
    store: Store,
    user: str,
    *,
    tag: str,
    kind: str,
    limit: float,
    deadband: float = 0.0,
    on_delay_s: float = 0.0,
    priority: str = AlarmPriority.medium.value,
    unit: str = "",
    enabled: bool = True,
    line: str = ALL_LINES,
) -> AlarmLimitRow:
    """Create or change one limit of `line` (ALL_LINES: of every line without its own);
    validated like `LimitAlarm`, audited with old and new."""
    check_line(line)
    if kind not in ("high", "low"):
        raise AlarmError(f"limit kind {kind!r}: expected 'high' or 'low'")
    if tag not in PROCESS_TAGS:
        raise AlarmError(
            f"tag {tag!r} is not a process value the plant records; one of {list(PROCESS_TAGS)}"
        )
    if priority not in {p.value for p in AlarmPriority}:
        raise AlarmError(f"priority {priority!r} is not one of {[p.value for p in AlarmPriority]}")
    try:
        LimitAlarm("high" if kind == "high" else "low", limit, deadband, on_delay_s)
    except ValueError as exc:
        raise AlarmError(str(exc)) from None
    with store.begin() as s:
        row = _limit_row(s, line, tag, kind)
        old = None if row is None else _limit_text(row)
        if row is None:
            row = AlarmLimitRow(line=line, tag=tag, kind=kind)
            s.add(row)
        row.limit = limit
        row.deadband = deadband
        row.on_delay_s = on_delay_s
        row.priority = priority
        row.unit = unit
        row.enabled = enabled
        row.updated_by = user
        row.updated_at = utcnow()
        store.audit(s, user, "alarm.limit", _limit_target(line, tag, kind), old, _limit_text(row))
        s.flush()
    return row


def delete_alarm_limit(
    store: Store, user: str, *, tag: str, kind: str, line: str = ALL_LINES
) -> None:
    """Remove one limit of `line` (its standing alarm clears at the controller's next check,
    or follows the every-line limit if there is one); audited."""
    check_line(line)
    with store.begin() as s:
        row = _limit_row(s, line, tag, kind)
        if row is None:
            where = "every line" if line == ALL_LINES else f"line {line}"
            raise AlarmError(f"no {kind} limit on {tag!r} for {where}")
        target = _limit_target(line, tag, kind)
        store.audit(s, user, "alarm.limit_delete", target, _limit_text(row), None)
        s.delete(row)


def _limit_row(s: Session, line: str, tag: str, kind: str) -> AlarmLimitRow | None:
    return s.scalars(
        select(AlarmLimitRow).where(
            AlarmLimitRow.line == line, AlarmLimitRow.tag == tag, AlarmLimitRow.kind == kind
        )
    ).first()


def _limit_target(line: str, tag: str, kind: str) -> str:
    """The audit target: `limit:<tag>:<kind>` for every line, as before lines had their own."""
    return f"limit:{tag}:{kind}" if line == ALL_LINES else f"limit:{line}:{tag}:{kind}"


def _limit_text(row: AlarmLimitRow) -> str:
    return (
        f"{row.kind} {row.limit:g} {row.unit} deadband {row.deadband:g} "
        f"on-delay {row.on_delay_s:g} s {row.priority}{'' if row.enabled else ' disabled'}"
    )
