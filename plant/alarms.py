"""Alarms after ISA-18.2: raise/clear by (source, code), acknowledge, shelve; stored and published.

One active occurrence per (line, source, code): raising an alarm that is already active does not
create a second row, so a condition that persists for an hour is one alarm, not thousands.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from plant.domain import AlarmPriority, AlarmState
from plant.events import Event, EventBus
from plant.store import AlarmRow, Store, utcnow

ACTIVE_STATES = (AlarmState.active_unacked, AlarmState.active_acked, AlarmState.shelved)
OPEN_STATES = (*ACTIVE_STATES, AlarmState.rtn_unacked)


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
    """Raise and clear alarms for one line; the store is the truth, the bus tells the HMI."""

    def __init__(self, store: Store, line: str | None, bus: EventBus | None = None) -> None:
        self.store = store
        self.line = line
        self.bus = bus

    def _publish(self, row: AlarmRow) -> None:
        if self.bus is not None:
            self.bus.publish(Event("alarm", self.line or "", alarm_json(row)))

    def _open(self, s: object, source: str, code: str, states: tuple[str, ...]) -> AlarmRow | None:
        from sqlalchemy.orm import Session

        assert isinstance(s, Session)
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

    def raise_(
        self, source: str, code: str, message: str, priority: AlarmPriority = AlarmPriority.high
    ) -> AlarmRow:
        """Raise (or keep) the alarm; a returned-to-normal unacked one becomes active again."""
        with self.store.begin() as s:
            row = self._open(s, source, code, OPEN_STATES)
            if row is not None and row.state != AlarmState.rtn_unacked:
                return row
            if row is not None:
                row.state = AlarmState.active_unacked
                row.message = message
                row.cleared_at = None
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
        self._publish(row)
        return row

    def clear(self, source: str, code: str) -> AlarmRow | None:
        """The condition returned to normal: acked alarms clear, unacked ones await an ack."""
        with self.store.begin() as s:
            row = self._open(s, source, code, ACTIVE_STATES)
            if row is None:
                return None
            row.state = (
                AlarmState.cleared
                if row.state == AlarmState.active_acked
                else AlarmState.rtn_unacked
            )
            row.cleared_at = utcnow()
        self._publish(row)
        return row

    def active(self) -> list[AlarmRow]:
        with self.store.session() as s:
            return list(
                s.scalars(
                    select(AlarmRow)
                    .where(AlarmRow.line == self.line, AlarmRow.state.in_(list(OPEN_STATES)))
                    .order_by(AlarmRow.raised_at.desc())
                )
            )
