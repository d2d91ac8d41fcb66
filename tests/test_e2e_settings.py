"""Settings of config/plant.toml act on the running plant: one `plant run --simulate` with
non-default values, checked in what the run leaves in its database (docs/settings.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from linerig import config_copy, run_cells
from sqlalchemy import select

from plant.spectrum_archive import stored_spectrum
from plant.store import AlarmRow, CellRow, LotRow, Store, upgrade

pytestmark = pytest.mark.e2e


def test_line_and_camera_settings_act_on_a_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    upgrade(url)
    cfg = config_copy(
        tmp_path,
        db_url=url,
        heads=2,
        xrf_live_time_s=0.02,  # each spectrum's acquisition
        lot_close_kg=0.3,  # lots close at 300 g
        quarantine_rate_alarm=0.01,  # a quarantined cell in the window alarms
        quarantine_rate_window=20,
    )
    toml = cfg / "plant.toml"
    camera = r'(\[camera\][^\[]*?)kind = "\w+"'
    toml.write_text(re.sub(camera, r'\1kind = "none"', toml.read_text()))  # no labels
    summary = run_cells(cfg, tmp_path, 150, 50, "--no-hmi", timeout=240)
    assert summary["final"] == 150
    store = Store(url)
    with store.session() as s:
        cells = list(s.scalars(select(CellRow)))
        lots = [lot for lot in s.scalars(select(LotRow)) if lot.state != "open"]
        alarms = {(a.source, a.code) for a in s.scalars(select(AlarmRow))}
        spectrum = next(sp for c in cells if (sp := stored_spectrum(s, c.id)) is not None)
    store.close()
    # [camera] kind = "none": no label is read, the spectrum alone decides.
    assert all(c.passport_id is None for c in cells)
    assert all(c.decision_source in ("spectrum", "none") for c in cells)
    # [line] xrf_live_time_s: the heads acquire for that long (a DP5's preset accumulation
    # time; its live time is that less the dead time, docs/xrf.md).
    real = spectrum.real_time_s
    assert real == pytest.approx(0.02, rel=0.05)
    assert real is not None and 0.5 * 0.02 < spectrum.live_time_s <= real
    # [line] lot_close_kg: lots close once they reach 300 g.
    assert lots and all(lot.mass_g >= 300.0 for lot in lots)
    assert max(lot.mass_g for lot in lots) < 300.0 + 200.0  # not long after
    # [line] quarantine_rate_alarm / _window: the alarm once the window of 20 cells is full.
    assert ("line", "quarantine_rate") in alarms
