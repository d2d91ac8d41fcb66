"""SPC on process variables (plant/process_spc.py): subgroup means of the historian's samples
charted with the product charts' rules; a drifting leach pH raises an `spc` alarm and a pH back
at its centre clears it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from plant.alarms import Alarms
from plant.config import ConfigError, ProcessSpcSection, load_file
from plant.historian import PROCESS_TAGS, Historian
from plant.process_spc import LiveProcessSpc, ProcessSpcWatch
from plant.store import Store, upgrade

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def test_the_watch_alarms_on_a_shift_either_way_and_clears_when_it_is_back() -> None:
    cfg = ProcessSpcSection(tags=["leach.ph"], baseline_points=10)
    watch = ProcessSpcWatch(cfg)
    rng = np.random.default_rng(3)
    at = T0
    for _ in range(10):
        assert watch.add("leach.ph", at, 1.5 + float(rng.normal(0, 0.005))) == []
        at += timedelta(minutes=1)
    assert watch.add("leach.ph", at, 1.50) == []
    low = watch.add("leach.ph", at, 1.40)  # a pH falling is as bad as one rising
    assert [e.transition for e in low] == ["raise"] and low[0].code == "process/leach.ph"
    assert "WE1" in low[0].message and "pH" in low[0].message and "LCL" in low[0].message
    # Back at the centre: the EWMA remembers the low point for a while, then the alarm clears.
    back = [watch.add("leach.ph", at, 1.5 + float(rng.normal(0, 0.005))) for _ in range(15)]
    assert [e.transition for events in back for e in events][-1] == "clear"
    assert back[-1] == []
    # The sigma floor (0.01 pH) keeps a quiet baseline from flagging a wobble of 0.02.
    assert watch.chart("leach.ph").limits.sigma >= 0.01  # type: ignore[union-attr]
    assert watch.add("leach.ph", at, 1.52) == []


def test_bad_settings_are_refused_naming_them(tmp_path: Path) -> None:
    bad = {
        'tags = ["leach.nope"]': "leach.nope",
        "subgroup_s = 90": "whole minutes",
        'rules = ["WE9"]': "WE9",
    }
    for line, word in bad.items():
        (tmp_path / "plant.toml").write_text(f"[process_spc]\n{line}\n")
        with pytest.raises(ConfigError, match=word):
            from plant.config import PlantConfig

            load_file(tmp_path / "plant.toml", PlantConfig)


def test_live_spc_reads_completed_subgroups_of_its_line_and_raises_then_clears(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    upgrade(url)
    store = Store(url)
    try:
        cfg = ProcessSpcSection(tags=["leach.ph"], subgroup_s=2, baseline_points=10)
        live = LiveProcessSpc(store, "L1", None, cfg)
        mine, other = (
            Historian(store, "L1", writes=PROCESS_TAGS),
            Historian(store, "L2", writes=PROCESS_TAGS),
        )
        rng = np.random.default_rng(1)

        def run(seconds: int, ph: float, start: datetime) -> datetime:
            t = start
            for _ in range(seconds):
                mine.record([("leach.ph", t, ph + float(rng.normal(0, 0.01)))])
                other.record([("leach.ph", t, 3.0)])  # another line's pen: not this chart's
                t += timedelta(seconds=1)
                live.check(t)
            return t

        t = run(30, 1.5, T0)
        assert Alarms(store, "L1").active() == []
        t = run(6, 1.8, t)  # the dosing falls behind: the pH steps up
        active = Alarms(store, "L1").active()
        assert [(a.source, a.code) for a in active] == [("spc", "process/leach.ph")]
        assert "leach.ph 1.8" in active[0].message
        run(40, 1.5, t)  # back: the alarm returns to normal once the EWMA has forgotten
        (row,) = Alarms(store, "L1").active()
        assert row.cleared_at is not None and row.state == "rtn_unacked"
        assert Alarms(store, "L2").active() == []
    finally:
        store.close()
