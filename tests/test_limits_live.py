"""Alarm limits on live process values (plant/limits.py) and routing-file versions."""

from __future__ import annotations

from pathlib import Path

from plant.alarms import Alarms
from plant.domain import AlarmState
from plant.limits import LimitEvent, LimitSpec, LimitWatch, LiveLimits
from plant.routing_live import file_version
from plant.store import Store

PH_HIGH = LimitSpec("leach.ph", "high", 2.0, deadband=0.1, on_delay_s=5.0, unit="pH")


def test_raises_after_the_on_delay_and_clears_outside_the_deadband() -> None:
    watch = LimitWatch()
    assert watch.configure([PH_HIGH]) == []
    assert watch.update({"leach.ph": 2.3}, 0.0) == []
    assert watch.update({"leach.ph": 2.3}, 4.0) == []
    [raised] = watch.update({"leach.ph": 2.4}, 5.0)
    assert (raised.code, raised.transition) == ("leach.ph.high", "raise")
    assert raised.message == "leach.ph 2.4 pH above its high limit 2 pH"
    assert watch.update({"leach.ph": 1.95}, 6.0) == []  # inside the deadband: still active
    assert watch.update({"leach.ph": 1.85}, 7.0) == [LimitEvent("leach.ph.high", "clear")]


def test_other_tags_and_missing_values_change_nothing() -> None:
    watch = LimitWatch()
    watch.configure([PH_HIGH])
    assert watch.update({"leach.temp_c": 99.0}, 0.0) == []
    assert watch.update({}, 10.0) == []


def test_a_changed_limit_keeps_the_alarm_until_the_value_is_inside_the_new_one() -> None:
    watch = LimitWatch()
    watch.configure([PH_HIGH])
    watch.update({"leach.ph": 2.5}, 0.0)
    assert [e.transition for e in watch.update({"leach.ph": 2.5}, 5.0)] == ["raise"]
    higher = LimitSpec("leach.ph", "high", 2.45, deadband=0.0)
    assert watch.configure([higher]) == []
    assert watch.update({"leach.ph": 2.5}, 6.0) == []  # no second raise
    assert [e.transition for e in watch.update({"leach.ph": 2.4}, 7.0)] == ["clear"]


def test_a_deleted_or_disabled_limit_clears_its_alarm() -> None:
    watch = LimitWatch()
    now = LimitSpec("leach.ph", "high", 0.05)
    watch.configure([now])
    assert [e.transition for e in watch.update({"leach.ph": 1.5}, 0.0)] == ["raise"]
    assert watch.configure([]) == [LimitEvent("leach.ph.high", "clear")]
    assert watch.update({"leach.ph": 1.5}, 1.0) == []


def test_alarms_standing_from_an_earlier_run_are_re_evaluated() -> None:
    gone = LimitWatch(["leach.temp_c.high"])  # its limit was deleted meanwhile
    assert gone.configure([PH_HIGH]) == [LimitEvent("leach.temp_c.high", "clear")]
    still = LimitWatch(["leach.ph.high"])
    assert still.configure([PH_HIGH]) == []
    assert still.update({"leach.ph": 2.5}, 0.0) == []  # already raised: not raised again
    assert [e.transition for e in still.update({"leach.ph": 1.0}, 1.0)] == ["clear"]


def test_live_limits_clear_a_standing_alarm_whose_condition_is_gone_at_start(
    tmp_path: Path,
) -> None:
    from plant.store import upgrade

    url = f"sqlite:///{tmp_path / 'plant.db'}"
    upgrade(url)
    store = Store(url)
    try:
        old = Alarms(store, "L1").raise_("process", "leach.ph.high", "leach.ph 1.5 above 0.05")
        LiveLimits(store, "L1", None).check({"leach.ph": 1.5}, 0.0)  # no limit configured now
        [row] = Alarms(store, "L1").active()
        assert row.id == old.id and row.state == AlarmState.rtn_unacked
    finally:
        store.close()


def test_file_version_follows_the_content(tmp_path: Path) -> None:
    f = tmp_path / "routing.toml"
    assert file_version(f) is None
    f.write_text("[thresholds]\nhydromet_min_confidence = 0.9\n")
    v1 = file_version(f)
    f.write_text("[thresholds]\nhydromet_min_confidence = 1.0\n")
    assert file_version(f) not in (None, v1)
