"""Month partitions and `maintain`: months created ahead, stray rows moved out of the default
partition, old months' spectra archived to Parquet and still shown on the cell page; the cell
search pages newest first by (created_at, id) on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from alembic import command
from sqlalchemy import func, select, text
from storefill import confirmed_cells, spectrum_of

from plant import cell_records
from plant.cell_view import CellQuery, cell_spectrum, search_cells
from plant.partitions import maintain, month_of, month_partitions, months_after
from plant.spectrum_archive import archive_file, spectrum_values, stored_spectrum
from plant.store import (
    CellRow,
    CellSpectrumRow,
    Store,
    StoreError,
    _alembic_config,
    upgrade,
    utcnow,
)


def test_maintain_creates_months_ahead_and_archives_old_spectra(store: Store, tmp_path: Path):
    now = utcnow()
    old = datetime(2026, 1, 10, tzinfo=UTC)  # months before now: archived at 30 days
    archive = tmp_path / "archive"
    old_ids = confirmed_cells(store, "L1", old, 30)
    new_ids = confirmed_cells(store, "L2", now - timedelta(minutes=5), 5)
    pg = store.engine.dialect.name == "postgresql"
    if pg:
        with store.engine.connect() as conn:
            default = conn.scalar(text("SELECT count(*) FROM cells_default"))
        assert default == 30  # January had no partition: its cells wait in the default one

    report = maintain(store, months_ahead=5, archive_before_days=30, archive_dir=archive)

    assert report.months_archived == ["2026-01"] and report.spectra_archived == 30
    assert archive_file(archive, month_of(old)).is_file()
    assert pq.read_metadata(archive_file(archive, month_of(old))).num_rows == 30
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(CellRow)) == 35  # cells all kept
        in_db = set(s.scalars(select(CellSpectrumRow.cell_id)))
    assert in_db == set(new_ids)
    if pg:
        with store.engine.connect() as conn:
            months = month_partitions(conn, "cells")
            spectra_months = month_partitions(conn, "cell_spectra")
            default = conn.scalar(text("SELECT count(*) FROM cells_default"))
        ahead = months_after(month_of(now), 5)
        assert {month_of(old), month_of(now), ahead} <= set(months)
        assert month_of(old) not in spectra_months and ahead in spectra_months
        assert default == 0
        assert f"cells_y{ahead.year}m{ahead.month:02d}" in report.partitions_created
    else:
        assert report.partitions_created == []

    for cell_id in (old_ids[0], old_ids[-1], new_ids[0]):  # archived and stored alike
        plot = cell_spectrum(store, cell_id, tmp_path, 0, archive)
        assert plot is not None and plot["source"] == f"xrf0:CELL:{cell_id}"
        assert sum(plot["counts"]) == spectrum_of(cell_id).counts.sum()

    again = maintain(store, months_ahead=5, archive_before_days=30, archive_dir=archive)
    assert again.partitions_created == [] and again.spectra_archived == 0


def test_cell_search_pages_newest_first_by_time(store: Store) -> None:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    late = confirmed_cells(store, "L1", t0 + timedelta(hours=1), 150, spectra=False)
    early = confirmed_cells(store, "L2", t0, 150, spectra=False)  # inserted later, created earlier
    pages, before = [], None
    while True:
        page = search_cells(store, CellQuery(before_id=before, limit=40))
        pages.append([c.id for c in page])
        if len(page) < 40:
            break
        before = page[-1].id
    seen = [i for p in pages for i in p]
    assert seen == late[::-1] + early[::-1]  # by time, not by id; nothing twice, none missed
    until = t0 + timedelta(seconds=99)
    window = search_cells(store, CellQuery(until=until, limit=500))
    assert [c.id for c in window] == early[:100][::-1]
    assert search_cells(store, CellQuery(before_id=10**9)) == []


def test_a_cell_is_updated_by_id_and_created_at_or_not_silently(store: Store) -> None:
    with store.begin() as s:
        row_id, state, created = cell_records.detected(s, "L1", 1, 1, 61.0, may_exist=False)
    assert state == "detected"
    with store.begin() as s:
        cell_records.mark_final(s, row_id, created, "quarantined", "quarantine", "manual", None)
    late = created + timedelta(seconds=1)
    with (
        pytest.raises(StoreError, match=f"cell row {row_id} created at .* not found"),
        store.begin() as s,
    ):
        cell_records.mark_final(s, row_id, late, "confirmed", "reject", None, None)
    with store.begin() as s:  # a take in doubt finds the row and its key again
        assert cell_records.detected(s, "L1", 1, 1, 61.0, may_exist=True) == (
            row_id, "quarantined", created if pg(store) else created.replace(tzinfo=None)
        )  # fmt: skip
    (row,) = search_cells(store, CellQuery(route="quarantine"))
    assert (row.state, row.route, row.reason) == ("quarantined", "quarantine", "manual")
    assert search_cells(store, CellQuery(route="no-such-route")) == []


def pg(store: Store) -> bool:
    return store.engine.dialect.name == "postgresql"


def test_upgrade_keeps_the_cells_and_spectra_of_a_0008_store(db_url: str) -> None:
    upgrade(db_url, "0008")
    at = datetime(2026, 6, 30, 23, 59, 59, tzinfo=UTC)
    spectrum = spectrum_of(1)
    store = Store(db_url)
    with store.engine.begin() as conn:
        for seq, (state, route, source) in enumerate(
            [("confirmed", "hydromet", "fused"), ("quarantined", "quarantine", "spectrum"),
             ("detected", None, None)], start=1,
        ):  # fmt: skip
            conn.execute(
                text(
                    "INSERT INTO cells (line, epoch, seq, state, route, decision_source, "
                    "created_at, updated_at) VALUES ('L1', 1, :seq, :state, :route, :source, "
                    ":at, :at)"
                ),
                {"seq": seq, "state": state, "route": route, "source": source, "at": at},
            )
        first = conn.scalar(text("SELECT min(id) FROM cells"))
        values = spectrum_values(first, spectrum, at + timedelta(seconds=2))  # stored later
        conn.execute(text(
            "INSERT INTO cell_spectra (cell_id, channels, kev_per_channel, offset_kev, "
            "live_time_s, real_time_s, tube_kv, source, instrument, encoding, counts, created_at) "
            "VALUES (:cell_id, :channels, :kev_per_channel, :offset_kev, :live_time_s, "
            ":real_time_s, :tube_kv, :source, :instrument, :encoding, :counts, :created_at)"
        ), values)  # fmt: skip
    upgrade(db_url)
    rows = search_cells(store, CellQuery())
    assert [(r.seq, r.state, r.route, r.decision_source) for r in rows] == [
        (3, "detected", None, None),
        (2, "quarantined", "quarantine", "spectrum"),
        (1, "confirmed", "hydromet", "fused"),
    ]
    with store.session() as s:
        kept = stored_spectrum(s, first)
        assert kept is not None and np.array_equal(kept.counts, spectrum.counts)
        dated = s.scalar(select(CellSpectrumRow.created_at).where(CellSpectrumRow.cell_id == first))
        assert dated is not None and dated.replace(tzinfo=UTC) == at  # dated as its cell
    if pg(store):
        with store.engine.connect() as conn:
            assert month_of(at) in month_partitions(conn, "cells")  # the month it held

    command.downgrade(_alembic_config(db_url), "0008")  # and back: words again, one table
    with store.engine.connect() as conn:
        back = conn.execute(text("SELECT seq, state, route FROM cells ORDER BY seq")).all()
        assert [tuple(r) for r in back] == [
            (1, "confirmed", "hydromet"), (2, "quarantined", "quarantine"), (3, "detected", None)
        ]  # fmt: skip
        assert conn.scalar(text("SELECT count(*) FROM cell_spectra")) == 1
    upgrade(db_url)
    assert len(search_cells(store, CellQuery())) == 3
    store.close()
