"""Alarm life cycle after ISA-18.2 on a real store, limit alarms without chatter, flood."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from sqlalchemy import select

from plant.alarms import (
    AlarmError,
    Alarms,
    LimitAlarm,
    alarm_limits,
    flood_status,
    search_alarms,
    set_alarm_limit,
)
from plant.domain import AlarmPriority, AlarmState
from plant.store import AlarmRow, AuditRow, Store, utcnow

CAP = timedelta(hours=8)


def cleared(alarms: Alarms, source: str, code: str) -> AlarmRow:
    """`Alarms.clear` on an alarm the test raised: there is a row to return."""
    row = alarms.clear(source, code)
    assert row is not None
    return row


def audit_actions(store: Store) -> list[tuple[str, str, str | None, str | None]]:
    with store.session() as s:
        return [(r.user, r.action, r.old, r.new) for r in s.scalars(select(AuditRow))]


def test_ack_before_and_after_return_to_normal(store: Store) -> None:
    alarms = Alarms(store, "L1")
    a = alarms.raise_("plc", "comm_lost", "PLC unreachable", AlarmPriority.critical)
    assert alarms.raise_("plc", "comm_lost", "again").id == a.id  # one occurrence, not two
    assert alarms.ack(a.id, "olga", "called maintenance").state == AlarmState.active_acked
    assert cleared(alarms, "plc", "comm_lost").state == AlarmState.cleared

    b = alarms.raise_("xrf", "timeout", "XRF head 2 timeout")
    assert cleared(alarms, "xrf", "timeout").state == AlarmState.rtn_unacked
    acked = alarms.ack(b.id, "olga")
    assert (acked.state, acked.acked_by) == (AlarmState.cleared, "olga")
    with pytest.raises(AlarmError, match="nothing to acknowledge"):
        alarms.ack(b.id, "olga")
    with pytest.raises(AlarmError, match="no alarm"):
        alarms.ack(99999, "olga")
    assert ("olga", "alarm.ack", "active_unacked", "active_acked: called maintenance") in (
        audit_actions(store)
    )


def test_shelve_is_capped_needs_reason_and_returns_when_expired(store: Store) -> None:
    alarms = Alarms(store, "L1")
    a = alarms.raise_("line", "quarantine_rate", "Quarantine rate 14 % > 10 %")
    with pytest.raises(AlarmError, match="capped at 8 h"):
        alarms.shelve(a.id, "olga", "sensor swap", timedelta(hours=9), max_duration=CAP)
    with pytest.raises(AlarmError, match="reason"):
        alarms.shelve(a.id, "olga", "  ", timedelta(hours=1), max_duration=CAP)
    shelved = alarms.shelve(a.id, "olga", "sensor swap", timedelta(hours=1), max_duration=CAP)
    assert shelved.state == AlarmState.shelved
    # While shelved the alarm is hidden from the standing list but not lost.
    standing = search_alarms(store, states=(AlarmState.active_unacked, AlarmState.active_acked))
    assert a.id not in [r.id for r in standing]
    # Still active when the shelve runs out: it comes back unacknowledged.
    back = alarms.expire_shelves(now=utcnow() + timedelta(hours=2))
    assert [(r.id, r.state) for r in back] == [(a.id, AlarmState.active_unacked)]


def test_condition_clearing_while_shelved_or_suppressed_is_remembered(store: Store) -> None:
    alarms = Alarms(store, "L1")
    a = alarms.raise_("xrf", "drift", "XRF gain drift")
    alarms.shelve(a.id, "olga", "recalibrating", timedelta(minutes=30), max_duration=CAP)
    assert cleared(alarms, "xrf", "drift").state == AlarmState.shelved
    assert alarms.unshelve(a.id, "olga").state == AlarmState.cleared

    b = alarms.raise_("camera", "dirty_lens", "Label read rate low", AlarmPriority.low)
    assert alarms.suppress(b.id, "erik", "camera out of service").state == AlarmState.suppressed
    # Raising again while suppressed does not make a second, visible occurrence.
    assert alarms.raise_("camera", "dirty_lens", "Label read rate low").id == b.id
    assert alarms.unshelve(b.id, "erik").state == AlarmState.active_unacked
    actions = [x[1] for x in audit_actions(store)]
    assert actions.count("alarm.shelve") == 1 and "alarm.suppress" in actions
    assert "alarm.unsuppressed" in actions


def test_flood_is_more_than_ten_in_ten_minutes(store: Store) -> None:
    alarms = Alarms(store, "L1")
    for i in range(10):
        alarms.raise_("sim", f"a{i}", f"alarm {i}")
    assert not flood_status(store).active
    alarms.raise_("sim", "a10", "alarm 10")
    flood = flood_status(store)
    assert flood.active and flood.raised == 11
    assert not flood_status(store, now=utcnow() + timedelta(minutes=11)).active


def test_limit_alarm_on_delay_and_deadband_stop_chatter() -> None:
    hi = LimitAlarm("high", limit=4.5, deadband=0.2, on_delay_s=5.0)
    # A value hovering around the limit, briefly over it, never raises.
    samples = [(t, 4.5 + (0.05 if t % 2 else -0.05)) for t in range(21)]
    assert [hi.update(v, t) for t, v in samples] == [None] * 21
    # Over the limit for the on-delay: raises once.
    events = [hi.update(4.8, 100 + t) for t in range(8)]
    assert events.count("raise") == 1 and events.index("raise") == 5
    # Back just under the limit but within the deadband: stays active; below it: clears.
    assert hi.update(4.4, 110) is None and hi.active
    assert hi.update(float("nan"), 111) is None and hi.active
    assert hi.update(4.2, 112) == "clear"

    lo = LimitAlarm("low", limit=1.0, deadband=0.1)
    assert [lo.update(v, 0) for v in (0.9, 1.05, 1.2)] == ["raise", None, "clear"]
    with pytest.raises(ValueError, match="finite"):
        LimitAlarm("high", math.inf)


def test_a_line_s_own_limit_acts_on_it_and_the_every_line_limit_on_the_others(
    store: Store,
) -> None:
    from plant.limits import LiveLimits

    set_alarm_limit(store, "erik", tag="leach.ph", kind="high", limit=2.5)
    set_alarm_limit(store, "erik", tag="leach.ph", kind="high", limit=1.0, line="L2")
    with pytest.raises(AlarmError, match="line 'L 2'"):
        set_alarm_limit(store, "erik", tag="leach.ph", kind="high", limit=1.0, line="L 2")
    assert [(r.line, r.limit) for r in alarm_limits(store, "L1")] == [("*", 2.5)]
    assert [(r.line, r.limit) for r in alarm_limits(store, "L2")] == [("L2", 1.0)]
    assert len(alarm_limits(store)) == 2
    for line in ("L1", "L2"):
        LiveLimits(store, line, None).check({"leach.ph": 1.5}, 0.0)
    assert [a.code for a in Alarms(store, "L2").active()] == ["leach.ph.high"]
    assert Alarms(store, "L1").active() == []


def test_alarm_limits_are_validated_and_audited(store: Store) -> None:
    set_alarm_limit(store, "erik", tag="leach.ph", kind="high", limit=2.0, deadband=0.1, unit="pH")
    set_alarm_limit(store, "erik", tag="leach.ph", kind="high", limit=1.8, deadband=0.1, unit="pH")
    with pytest.raises(AlarmError, match="deadband"):
        set_alarm_limit(store, "erik", tag="leach.ph", kind="high", limit=1.8, deadband=-1)
    (row,) = alarm_limits(store)
    assert (row.limit, row.updated_by) == (1.8, "erik")
    old, new = next((o, n) for u, a, o, n in audit_actions(store)[1:] if a == "alarm.limit")
    assert old is not None and old.startswith("high 2 pH") and new is not None
    assert new.startswith("high 1.8 pH")
    assert LimitAlarm.from_row(row).update(1.9, 0) == "raise"
