"""The alarm journal: every occurrence of an alarm and every action on it, in order, on a real
store (SQLite, and PostgreSQL when configured) migrated to head."""

from __future__ import annotations

from datetime import timedelta

from plant.alarms import Alarms, alarm_journal
from plant.store import Store

HOUR = timedelta(hours=1)


def kinds(store: Store, alarm_id: int) -> list[tuple[str, str | None]]:
    return [(j["kind"], j["user"]) for j in reversed(alarm_journal(store, alarm_id=alarm_id))]


def test_a_recurring_alarm_journals_each_occurrence_and_action(store: Store) -> None:
    alarms = Alarms(store, "L1")
    a = alarms.raise_("process", "leach.ph.high", "leach.ph 1.5 pH above 1.2 pH")
    alarms.clear("process", "leach.ph.high")  # returns, unacknowledged
    again = alarms.raise_("process", "leach.ph.high", "leach.ph 1.6 pH above 1.2 pH")
    assert again.id == a.id and again.raised_at > a.raised_at  # standing list: when it came back
    alarms.ack(a.id, "olga", "probe checked")
    alarms.shelve(a.id, "olga", "recalibration", HOUR, max_duration=8 * HOUR)
    alarms.unshelve(a.id, "olga")
    alarms.suppress(a.id, "eve", "probe out of service")
    assert kinds(store, a.id) == [
        ("raised", None),
        ("returned", None),
        ("raised", None),
        ("acknowledged", "olga"),
        ("shelved", "olga"),
        ("unshelved", "olga"),
        ("suppressed", "eve"),
    ]
    entries = alarm_journal(store, alarm_id=a.id)
    assert entries[0]["note"] == "probe out of service"
    assert entries[3]["note"] == "probe checked"
    assert entries[-1]["note"] == "leach.ph 1.5 pH above 1.2 pH"
    assert all(e["source"] == "process" and e["code"] == "leach.ph.high" for e in entries)


def test_acknowledging_a_returned_alarm_journals_its_clearing(store: Store) -> None:
    alarms = Alarms(store, "L1")
    a = alarms.raise_("plc", "comm_lost", "PLC unreachable")
    alarms.clear("plc", "comm_lost")
    alarms.ack(a.id, "olga")
    assert kinds(store, a.id) == [
        ("raised", None),
        ("returned", None),
        ("acknowledged", "olga"),
        ("cleared", "olga"),
    ]
    b = alarms.raise_("xrf", "fault", "XRF check standard failed")
    alarms.ack(b.id, "olga")
    alarms.clear("xrf", "fault")  # acknowledged, then its condition goes: cleared at once
    assert kinds(store, b.id)[-1] == ("cleared", None)
    assert [j["alarm_id"] for j in alarm_journal(store, limit=2)] == [b.id, b.id]
