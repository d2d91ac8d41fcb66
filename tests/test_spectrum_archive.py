"""Spectra kept with their cells: the codec (exact, small) and its rows on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from drivers.sim.cells import CellStream
from drivers.sim.profiles import PROFILES
from drivers.sim.xrfphysics import simulate_cell
from drivers.spectra import Spectrum, write_msa
from plant.cell_view import CellError, cell_spectrum
from plant.config import ConfigError, load_plant
from plant.partitions import not_a_partition
from plant.spectrum_archive import (
    COUNTS,
    DELTAS,
    FLOATS,
    ArchiveError,
    decided_with_spectra,
    decode_counts,
    encode_counts,
    keep_spectrum,
    purge_before,
    stored_spectrum,
)
from plant.store import Base, CellRow, CellSpectrumRow, Store, utcnow

LINE_LIVE_TIME_S = 0.05  # config/plant.toml [line] xrf_live_time_s
TYPICAL_MAX_BYTES = 2048


def _line_spectra(live_time_s: float, n: int = 12) -> list[Spectrum]:
    """What the simulated line measures: the default inline 4096-channel head, real cells."""
    stream, rng = CellStream(7), np.random.default_rng(7)
    return [
        simulate_cell(stream.truth(seq), PROFILES["inline_sdd_4096"], live_time_s, rng)
        for seq in range(1, n + 1)
    ]


def _round_trip(counts: np.ndarray) -> tuple[str, bytes]:
    encoding, blob = encode_counts(counts)
    back = decode_counts(encoding, blob, counts.size)
    assert back.dtype == np.float64
    assert np.array_equal(back, counts), encoding
    return encoding, blob


def test_line_spectra_round_trip_exactly_in_at_most_2_kb() -> None:
    for spectrum in _line_spectra(LINE_LIVE_TIME_S):
        assert spectrum.n_channels == 4096
        encoding, blob = _round_trip(spectrum.counts)
        assert encoding == COUNTS
        assert len(blob) <= TYPICAL_MAX_BYTES, (len(blob), spectrum.total_counts())


def test_dense_high_count_spectrum_round_trips_as_deltas_smaller_than_raw() -> None:
    (dense,) = _line_spectra(10.0, n=1)
    assert dense.total_counts() > 5e5  # ~200 counts per channel
    encoding, blob = _round_trip(dense.counts)
    assert encoding == DELTAS
    assert len(blob) < 4096 * 2  # fewer bytes than 16-bit counts, though Poisson noise is dense


def test_whole_counts_up_to_2_53_and_empty_spectra_round_trip() -> None:
    _round_trip(np.zeros(4096))
    _round_trip(np.array([0.0, 1.0, 255.0, 256.0, 65535.0, 65536.0, 2.0**32, 2.0**53 - 1] * 8))


def test_counts_that_are_not_whole_numbers_round_trip_bit_for_bit() -> None:
    counts = np.array([0.1, 1 / 3, 2.5e-300, 1.7e300, 2.0**53 + 2, 7.0] * 700)
    encoding, _ = _round_trip(counts)
    assert encoding == FLOATS


def test_unusable_counts_and_corrupt_blobs_are_refused_by_name() -> None:
    with pytest.raises(ArchiveError, match="finite and not negative"):
        encode_counts(np.array([1.0, -1.0]))
    with pytest.raises(ArchiveError, match="finite and not negative"):
        encode_counts(np.array([1.0, np.nan]))
    encoding, blob = encode_counts(np.arange(100.0))
    with pytest.raises(ArchiveError, match="not 99 channels"):
        decode_counts(encoding, blob, 99)
    with pytest.raises(ArchiveError, match="corrupt"):
        decode_counts(encoding, b"\xff" + blob, 100)
    with pytest.raises(ArchiveError, match="unknown spectrum encoding 'gzip'"):
        decode_counts("gzip", blob, 100)


# ----------------------------------------------------------------------------- in the database


def _cell(store: Store, line: str, seq: int, **fields: object) -> int:
    with store.begin() as s:
        row = CellRow(line=line, seq=seq, state="confirmed", **fields)
        s.add(row)
        s.flush()
        return row.id


def test_migration_creates_the_table_the_code_maps(store: Store) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": not_a_partition})
        diff = compare_metadata(context, Base.metadata)
    assert [d for d in diff if "cell_spectra" in repr(d)] == []


def test_spectrum_kept_with_its_cell_reads_back_exactly(store: Store) -> None:
    (spectrum,) = _line_spectra(LINE_LIVE_TIME_S, n=1)
    spectrum.metadata["instrument"] = "PlantSim,XRF-inline_sdd_4096,xrf0,1.0"
    cell_id = _cell(store, "L1", 1, chemistry="NMC811", spectrum_ref="xrf0:CELL:1")
    with store.begin() as s:
        keep_spectrum(s, cell_id, spectrum)
    with store.begin() as s:  # decided again (after an unsure take): replaced, not refused
        keep_spectrum(s, cell_id, spectrum)
    with store.session() as s:
        back = stored_spectrum(s, cell_id)
        row = s.get(CellSpectrumRow, cell_id)
        assert row is not None and row.instrument == spectrum.metadata["instrument"]
        assert len(row.counts) <= TYPICAL_MAX_BYTES
    assert back is not None
    assert np.array_equal(back.counts, spectrum.counts)
    assert back.kev_per_channel == spectrum.kev_per_channel
    assert back.offset_kev == spectrum.offset_kev
    assert back.live_time_s == spectrum.live_time_s
    assert back.real_time_s == spectrum.real_time_s
    assert back.tube_kv == spectrum.tube_kv
    assert back.source == spectrum.source


def test_cell_page_spectrum_stored_file_missing_and_expired(store: Store, tmp_path: Path) -> None:
    (spectrum,) = _line_spectra(LINE_LIVE_TIME_S, n=1)
    spectrum.source = "xrf0:CELL:1"  # as drivers/xrf.py labels it
    live = _cell(store, "L1", 1, chemistry="NMC811", spectrum_ref="xrf0:CELL:1")
    with store.begin() as s:
        keep_spectrum(s, live, spectrum)
    plot = cell_spectrum(store, live, tmp_path, 365, tmp_path / "archive")
    assert plot is not None and plot["source"] == "xrf0:CELL:1" and plot["channels"] == 4096
    assert sum(plot["counts"]) == spectrum.total_counts()
    assert plot["energy_kev"][0] == pytest.approx(spectrum.offset_kev, abs=0.01)
    assert {"element": "Ni", "line": "Ka", "kev": 7.478} in plot["lines"]

    write_msa(spectrum, tmp_path / "imported.msa")
    imported = _cell(store, "L1", 2, spectrum_ref="imported.msa")
    plot = cell_spectrum(store, imported, tmp_path, 365, tmp_path / "archive")
    assert plot is not None and plot["source"] == "imported.msa"

    (tmp_path / "broken.msa").write_text("#FORMAT : EMSA/MAS\n")
    broken = _cell(store, "L1", 3, spectrum_ref=str(tmp_path / "broken.msa"))
    with pytest.raises(CellError, match=r"broken\.msa") as exc:
        cell_spectrum(store, broken, tmp_path, 365, tmp_path / "archive")
    assert str(tmp_path) not in str(exc.value)

    unmeasured = _cell(store, "L1", 4, spectrum_ref=None)
    with pytest.raises(CellError, match=r"cell \d+ has no spectrum: no XRF spectrum was measured"):
        cell_spectrum(store, unmeasured, tmp_path, 365, tmp_path / "archive")

    old = _cell(store, "L1", 5, spectrum_ref="xrf1:CELL:5", created_at=utcnow() - timedelta(days=2))
    with pytest.raises(CellError, match="deleted after the retention period of 1 day "):
        cell_spectrum(store, old, tmp_path, 1, tmp_path / "archive")
    assert cell_spectrum(store, 10**9, tmp_path, 1, tmp_path / "archive") is None


def test_retention_deletes_old_spectra_of_its_line_in_batches(store: Store) -> None:
    (spectrum,) = _line_spectra(LINE_LIVE_TIME_S, n=1)
    ids = {
        (line, seq): _cell(store, line, seq, chemistry="LFP")
        for line in ("L1", "L2")
        for seq in range(1, 6)
    }
    with store.begin() as s:
        for cell_id in ids.values():
            keep_spectrum(s, cell_id, spectrum)
    cutoff = utcnow()
    with store.begin() as s:
        keep_spectrum(s, _cell(store, "L1", 6, chemistry="LFP"), spectrum)  # newer: kept
    assert purge_before(store, "L1", cutoff, limit=2) == 2
    assert purge_before(store, "L1", cutoff, limit=2) == 2
    assert purge_before(store, "L1", cutoff, limit=2) == 1
    assert purge_before(store, "L1", cutoff, limit=2) == 0
    with store.session() as s:
        left = {
            (c.line, c.seq)
            for c in s.query(CellRow).join(CellSpectrumRow, CellSpectrumRow.cell_id == CellRow.id)
        }
    assert left == {("L1", 6)} | {("L2", seq) for seq in range(1, 6)}  # L2 purges its own
    exported = list(decided_with_spectra(store, cutoff - timedelta(hours=1), line="L2", page=2))
    assert [k.cell.seq for k in exported] == [1, 2, 3, 4, 5]
    assert all(np.array_equal(k.spectrum.counts, spectrum.counts) for k in exported)


def test_retention_setting_is_validated_at_load(tmp_path: Path) -> None:
    (tmp_path / "plant.toml").write_text("[spectra]\nretention_days = 0.0001\n")
    assert load_plant(tmp_path).spectra.retention_days == 0.0001
    (tmp_path / "plant.toml").write_text("[spectra]\nretention_days = -1\n")
    with pytest.raises(ConfigError, match=r"spectra.retention_days: .*greater than or equal"):
        load_plant(tmp_path)
    (tmp_path / "plant.toml").write_text("[spectra]\nretention_dayz = 3\n")
    with pytest.raises(ConfigError, match=r"spectra\.retention_dayz: unknown key"):
        load_plant(tmp_path)
