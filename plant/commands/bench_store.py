"""`plant bench store`: the store at plant scale, synthetic cells, beside issue #26's budgets.

Loads N cells at the simulated infeed's mix (drivers/sim/cells.py) with their passports, lots,
hydromet campaigns and batches and the kept share of their spectra (compressed as
plant/spectrum_archive.py keeps them) through bulk Core inserts, then times the queries the
line and the HMI really make: plant/passports.py `find_passport`, plant/cell_view.py
`search_cells` for each filter the HMI offers, plant/genealogy.py traces, then times
`plant db maintain` (plant/partitions.py) archiving the loaded month and the cell page reading
spectra back from the archive; last, the line itself (`plant bench`'s line runs) writing into the
loaded store and into an empty database beside it, alternated. docs/bench.md says how each
figure is measured.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from rich.progress import Progress
from sqlalchemy import Connection, Table, bindparam, create_engine, insert, select, text, update
from sqlalchemy.engine import make_url

from drivers.sim.cells import DEFAULT_CHEMISTRY_MIX, CellFormat, CellStream, CellTruth
from drivers.sim.passports import passport_document
from drivers.sim.profiles import PROFILES
from drivers.sim.xrf import DEFAULT_PROFILE
from drivers.sim.xrfphysics import simulate_cell
from plant.cell_view import CellQuery, cell_spectrum, search_cells
from plant.commands.bench_harness import (
    BenchError,
    Budget,
    LineRun,
    Say,
    figure,
    git_commit,
    line_runs,
    load_avg,
    machine_info,
    run_figures,
)
from plant.domain import CellState, DecisionSource, Route
from plant.genealogy import trace_batch, trace_passport
from plant.partitions import MONTHS_AHEAD, ensure_months, maintain, month_of
from plant.passports import find_passport
from plant.routing import DEFAULT_ROUTES
from plant.spectrum_archive import spectrum_values
from plant.store import (
    BatchRow,
    CampaignLotRow,
    CampaignRow,
    CellRow,
    CellSpectrumRow,
    LotRow,
    PassportRow,
    Store,
    table_of,
    upgrade,
)

CHUNK = 10_000  # rows per bulk insert
CELLS_PER_S = 6.3  # a 10 kt/yr plant: 200 million 46 g cells a year
PASSPORT_SHARE = 0.7  # Li-ion cells whose label carries a passport (drivers/sim/cells.py)
IMPORTED_SHARE = 0.95  # of those, passports imported before the cell arrives; the rest miss
QUARANTINE_SHARE = 0.02
LIVE_TIME_S = 0.05  # config/plant.toml xrf_live_time_s
LOT_CELLS = 330  # [lots] lot_close_kg = 20 at ~60 g a cell
LOTS_PER_CAMPAIGN = 2  # hydromet [campaign] max_lots
PRODUCTS = ("NiSO4", "CoSO4", "MnSO4", "Li2CO3")
SPECTRUM_POOL = 64  # distinct simulated spectra, reused: sizes are what matter here
PASSPORT_POOL = 64
SEARCH_SAMPLES = 100
LOOKUP_SAMPLES = 2000
TRACE_SAMPLES = 20
SAMPLE_MAX_S = 30.0  # per figure: fewer samples of a slow query (its p99 is then its max)
LINES = ("L1", "L2")
ARCHIVE_BEFORE_DAYS = 30.0  # the loaded months (from START) are older: maintain archives them
ARCHIVE_READS = 50
START = datetime(2026, 1, 1, tzinfo=UTC)

# Issue #26 "Budgets" (10^7 cells on PostgreSQL, this 2-core machine)
STORE_BUDGETS = (
    Budget("passport_lookup_ms.p99", 10.0, at_most=True),
    Budget("search_first_page_ms.worst_p99", 100.0, at_most=True),
    Budget("trace_batch_ms.p99", 1000.0, at_most=True),
    Budget("trace_passport_ms.p99", 1000.0, at_most=True),
    Budget("bytes_per_cell", 300.0, at_most=True),
    Budget("bytes_per_spectrum", 2048.0, at_most=True),
    # the line's figures with the store loaded within 20 % of an empty store's
    Budget("line_vs_empty.throughput_ratio", 0.8, at_most=False),
    Budget("line_vs_empty.decision_latency_p99_ratio", 1.2, at_most=True),
)
T = TypeVar("T")


def store_budgets_met(result: dict[str, Any]) -> dict[str, bool | None]:
    """Each budget: met, missed, or None when its figure is missing (no spectra kept ...)."""
    return {b.key: b.met(figure(result, b.key)) for b in STORE_BUDGETS}


def percentiles_ms(times: list[float]) -> dict[str, float]:
    """p50/p99/max of durations in ms (p99: the sample below which 99 % fall)."""
    times = sorted(times)
    return {
        "p50": round(statistics.median(times), 3),
        "p99": round(times[max(0, int(0.99 * len(times)) - 1)], 3),
        "max": round(times[-1], 3),
        "n": len(times),
    }


def timed_calls(
    n: int, make: Callable[[], T], call: Callable[[T], object], max_s: float = SAMPLE_MAX_S
) -> list[float]:
    """Durations in ms of `call(make())`, n times or until `max_s` has passed (a slow query at
    10^7 cells would otherwise take the bench's hour); only the call is timed."""
    times: list[float] = []
    deadline = time.monotonic() + max_s
    while len(times) < n and (len(times) < 5 or time.monotonic() < deadline):
        arg = make()
        t0 = time.perf_counter()
        call(arg)
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


# -- synthetic plant ---------------------------------------------------------------------------
def passport_id(i: int) -> str:
    """Deterministic UUID URN of the i-th passport (as labels carry them)."""
    return f"urn:uuid:{uuid.UUID(int=(0xB5 << 120) | i, version=4)}"


@dataclass
class Pools:
    """Encoded spectra and passport documents reused across the load."""

    spectra: dict[str, list[dict[str, Any]]]
    passports: list[dict[str, Any]]

    @classmethod
    def build(cls, seed: int) -> Pools:
        rng = np.random.default_rng(seed)
        profile = PROFILES[DEFAULT_PROFILE]
        now = datetime.now(UTC)
        spectra: dict[str, list[dict[str, Any]]] = {}
        per = max(1, SPECTRUM_POOL // len(DEFAULT_CHEMISTRY_MIX))
        for chem in DEFAULT_CHEMISTRY_MIX:
            spectra[chem] = [
                spectrum_values(
                    0,
                    simulate_cell(
                        CellTruth.bare(chem, list(CellFormat)[k % 3]), profile, LIVE_TIME_S, rng
                    ),
                    now,
                )
                for k in range(per)
            ]
        stream = CellStream(seed)
        docs: list[dict[str, Any]] = []
        seq = 0
        while len(docs) < PASSPORT_POOL:
            truth = stream.truth(seq)
            seq += 1
            if truth.passport_id is not None:
                docs.append(passport_document(truth))
        return cls(spectra, docs)


@dataclass
class Plant:
    """State of the synthetic load across chunks: lots filling per line and route."""

    seed: int
    n: int
    spectrum_share: float
    start: datetime
    pools: Pools
    lot_fill: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    lots: dict[str, dict[str, Any]] = field(default_factory=dict)
    passports: int = 0
    spectra: int = 0

    def chunk(self, lo: int, hi: int) -> tuple[list[dict[str, Any]], ...]:
        """Rows (new lots, passports, cells, spectra) of cells lo..hi-1 (ids lo+1..hi)."""
        rng = np.random.default_rng([self.seed, lo])
        k = hi - lo
        chems = list(DEFAULT_CHEMISTRY_MIX)
        weights = np.array([DEFAULT_CHEMISTRY_MIX[c] for c in chems])
        chem_idx = rng.choice(len(chems), size=k, p=weights / weights.sum())
        u = rng.random((k, 4))
        mass = np.maximum(5.0, rng.normal(60.0, 15.0, k)).round(1)
        confidence = (0.9 + 0.1 * u[:, 3]).round(4)
        new_lots: list[dict[str, Any]] = []
        passports: list[dict[str, Any]] = []
        cells: list[dict[str, Any]] = []
        spectra: list[dict[str, Any]] = []
        for j in range(k):
            i = lo + j
            chem = chems[int(chem_idx[j])]
            route = DEFAULT_ROUTES[chem].value  # type: ignore[index]
            quarantined = u[j, 0] < QUARANTINE_SHARE
            if quarantined:
                route = Route.quarantine.value
            line = LINES[i % len(LINES)]
            ts = self.start + timedelta(seconds=i / CELLS_PER_S)
            pid = None
            if route != Route.reject.value and u[j, 1] < PASSPORT_SHARE:
                pid = passport_id(i)
                if u[j, 2] < IMPORTED_SHARE:
                    doc = self.pools.passports[i % len(self.pools.passports)]
                    passports.append(self._passport(pid, chem, float(mass[j]), doc, ts))
            lot_id = None if quarantined else self._lot(line, route, i, ts, new_lots)
            kept = u[j, 3] < self.spectrum_share
            cells.append(
                {
                    "id": i + 1,
                    "line": line,
                    "epoch": 1,
                    "seq": i // len(LINES) + 1,
                    "passport_id": pid,
                    "mass_g": float(mass[j]),
                    "spectrum_ref": f"xrf:{line}:{i + 1}" if kept else None,
                    "chemistry": chem,
                    "confidence": float(confidence[j]),
                    "decision_source": (
                        DecisionSource.fused if pid else DecisionSource.spectrum
                    ).value,
                    "route": route,
                    "reason": (
                        "confidence below the route's threshold"
                        if quarantined
                        else f"{chem} p={confidence[j]:.2f}"
                    ),
                    "model_version": "rf-2026.11.3",
                    "state": (CellState.quarantined if quarantined else CellState.confirmed).value,
                    "lot_id": lot_id,
                    "created_at": ts,
                    "updated_at": ts,
                }
            )
            if kept:
                pool = self.pools.spectra[chem]
                spectra.append(pool[i % len(pool)] | {"cell_id": i + 1, "created_at": ts})
        self.passports += len(passports)
        self.spectra += len(spectra)
        return new_lots, passports, cells, spectra

    @staticmethod
    def _passport(
        pid: str, chem: str, mass: float, doc: dict[str, Any], ts: datetime
    ) -> dict[str, Any]:
        return {
            "id": pid,
            "model": "catenax-batterypass-6",
            "chemistry": chem,
            "chemistry_reason": "cathode composition",
            "manufacturer": "Example Cells Ltd",
            "mass_g": mass,
            "soh_pct": 71.5,
            "chemistry_text": chem,
            "damaged": False,
            "status": "released",
            "authenticity": "unsigned",
            "fields_used": {"chemistry": "cellChemistry.cathodeActiveMaterials"},
            "source_file": "deliveries/2026-12.jsonl",
            "payload": doc,
            "imported_at": ts - timedelta(days=3),
        }

    def _lot(self, line: str, route: str, i: int, ts: datetime, new: list[dict[str, Any]]) -> str:
        lot_id, filled = self.lot_fill.get((line, route), ("", LOT_CELLS))
        if filled >= LOT_CELLS:
            lot_id = f"{line}-{route}-{i + 1:010d}"
            filled = 0
            row = {"id": lot_id, "line": line, "route": route, "state": "open", "opened_at": ts}
            new.append(row)
            self.lots[lot_id] = dict(row, mass_g=0.0, cell_count=0, closed_at=None)
        self.lot_fill[(line, route)] = (lot_id, filled + 1)
        lot = self.lots[lot_id]
        lot["cell_count"] += 1
        lot["mass_g"] += 60.0
        lot["closed_at"] = ts
        return lot_id

    def closing(self) -> tuple[list[dict[str, Any]], ...]:
        """Closed lots' totals, and hydromet campaigns with their batches over closed lots."""
        open_ids = {lot_id for lot_id, _ in self.lot_fill.values()}
        closed = [lot for lot_id, lot in self.lots.items() if lot_id not in open_ids]
        lot_updates = [
            {
                "b_id": lot["id"],
                "state": "closed",
                "mass_g": lot["mass_g"],
                "cell_count": lot["cell_count"],
                "closed_at": lot["closed_at"],
            }
            for lot in closed
        ]
        hydro = [lot for lot in closed if lot["route"] == Route.hydromet.value]
        campaigns, batches, links = [], [], []
        for c in range(len(hydro) // LOTS_PER_CAMPAIGN):
            feed = hydro[c * LOTS_PER_CAMPAIGN : (c + 1) * LOTS_PER_CAMPAIGN]
            cid = f"HC-{c + 1:07d}"
            at = feed[-1]["closed_at"] + timedelta(hours=2)
            campaigns.append(
                {
                    "id": cid,
                    "line": "H1",
                    "started_at": at,
                    "ph_mean": 1.5,
                    "ph_sd": 0.05,
                    "feed_g": {"Ni": 2400.0, "Co": 600.0, "Mn": 500.0, "Li": 380.0},
                    "residues_g": {"graphite": 9000.0},
                }
            )
            links += [{"campaign_id": cid, "lot_id": lot["id"]} for lot in feed]
            batches += [
                {
                    "id": f"B-{p}-{c + 1:07d}",
                    "product": p,
                    "mass_kg": 10.0,
                    "state": "closed",
                    "created_at": at,
                    "campaign_id": cid,
                }
                for p in PRODUCTS
            ]
        return lot_updates, campaigns, batches, links


# -- load --------------------------------------------------------------------------------------
def _insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), CHUNK):
        if rows[i : i + CHUNK]:
            conn.execute(insert(table), rows[i : i + CHUNK])


def load(store: Store, plant: Plant, progress: Progress) -> float:
    """Insert the whole synthetic plant; the seconds it took."""
    tables = {row: table_of(row) for row in (LotRow, PassportRow, CellRow, CellSpectrumRow)}
    task = progress.add_task(f"loading {plant.n:,} cells", total=plant.n)
    t0 = time.perf_counter()
    for lo in range(0, plant.n, CHUNK):
        hi = min(plant.n, lo + CHUNK)
        lots, passports, cells, spectra = plant.chunk(lo, hi)
        with store.engine.begin() as conn:
            _insert(conn, tables[LotRow], lots)
            _insert(conn, tables[PassportRow], passports)
            _insert(conn, tables[CellRow], cells)
            _insert(conn, tables[CellSpectrumRow], spectra)
        progress.update(task, completed=hi)
    lot_updates, campaigns, batches, links = plant.closing()
    lot_table = tables[LotRow]
    with store.engine.begin() as conn:
        if lot_updates:
            conn.execute(
                update(lot_table)
                .where(lot_table.c.id == bindparam("b_id"))
                .values(
                    state=bindparam("state"),
                    mass_g=bindparam("mass_g"),
                    cell_count=bindparam("cell_count"),
                    closed_at=bindparam("closed_at"),
                ),
                lot_updates,
            )
        _insert(conn, table_of(CampaignRow), campaigns)
        _insert(conn, table_of(BatchRow), batches)
        _insert(conn, table_of(CampaignLotRow), links)
        if conn.dialect.name == "postgresql":  # ids were given: move the sequence past them
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence('cells', 'id'), :n)"), {"n": plant.n}
            )
    elapsed = time.perf_counter() - t0
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))  # as autovacuum would soon after a day of cells
    return elapsed


# -- measurements ------------------------------------------------------------------------------
def lookups(store: Store, plant: Plant, rng: random.Random) -> dict[str, Any]:
    """`find_passport` of label ids at the line's mix: imported ones and the few not imported."""
    with store.engine.connect() as conn:
        ids = [
            str(p)
            for p in conn.scalars(
                select(CellRow.passport_id).where(
                    CellRow.passport_id.is_not(None), CellRow.id.in_(_sample_ids(plant, rng))
                )
            )
        ]
    if not ids:
        raise BenchError("no cell with a passport id to look up: load more cells")
    times: list[float] = []
    misses: list[float] = []
    deadline = time.monotonic() + SAMPLE_MAX_S
    for k in range(LOOKUP_SAMPLES):
        if k >= 100 and time.monotonic() > deadline:
            break
        pid = ids[k % len(ids)]
        t0 = time.perf_counter()
        found = find_passport(store, pid)
        ms = (time.perf_counter() - t0) * 1000.0
        (times if found is not None else misses).append(ms)
    out: dict[str, Any] = percentiles_ms(times + misses)
    return out | {
        "miss_p99": percentiles_ms(misses)["p99"] if misses else None,
        "misses": len(misses),
    }


def _sample_ids(plant: Plant, rng: random.Random, k: int = LOOKUP_SAMPLES) -> list[int]:
    return [rng.randrange(1, plant.n + 1) for _ in range(k)]


def searches(store: Store, plant: Plant, rng: random.Random) -> dict[str, Any]:
    """First page (100 rows, newest first) of the HMI's cell search, one filter at a time."""
    end = plant.start + timedelta(seconds=plant.n / CELLS_PER_S)

    def when(rng: random.Random) -> datetime:
        return plant.start + (end - plant.start) * rng.random()

    with store.engine.connect() as conn:
        pids = [
            str(p)
            for p in conn.scalars(
                select(CellRow.passport_id).where(
                    CellRow.passport_id.is_not(None), CellRow.id.in_(_sample_ids(plant, rng, 200))
                )
            )
        ] or ["urn:uuid:none"]
    filters: dict[str, Callable[[random.Random], CellQuery]] = {
        "none": lambda r: CellQuery(),
        "passport_id": lambda r: CellQuery(passport_id=r.choice(pids)),
        "chemistry": lambda r: CellQuery(chemistry=r.choice(list(DEFAULT_CHEMISTRY_MIX))),
        "route": lambda r: CellQuery(route=r.choice([x.value for x in Route])),
        "state": lambda r: CellQuery(state=r.choice(["confirmed", "quarantined"])),
        "line": lambda r: CellQuery(line=r.choice(LINES)),
        "since": lambda r: CellQuery(since=when(r)),
        "until": lambda r: CellQuery(until=when(r)),
        "since_until_hour": lambda r: (lambda t: CellQuery(since=t, until=t + timedelta(hours=1)))(
            when(r)
        ),
    }
    out: dict[str, Any] = {}
    for name, make in filters.items():
        out[name] = percentiles_ms(
            timed_calls(SEARCH_SAMPLES, partial(make, rng), partial(search_cells, store))
        )
    out["worst_p99"] = max(v["p99"] for v in out.values())
    out["worst_filter"] = max(filters, key=lambda f: out[f]["p99"])
    return out


def traces(store: Store, rng: random.Random) -> dict[str, Any]:
    """Batch -> lots -> cells -> passports, and passport -> cells -> batches."""
    with store.engine.connect() as conn:
        batch_ids = list(conn.scalars(select(BatchRow.id)))
        traced_pids = [
            str(p)
            for p in conn.scalars(
                select(CellRow.passport_id)
                .join(CampaignLotRow, CampaignLotRow.lot_id == CellRow.lot_id)
                .where(CellRow.passport_id.is_not(None))
                .limit(500)
            )
        ]
    result: dict[str, Any] = {"batches": len(batch_ids)}
    if batch_ids:
        cells = []

        def one_batch(b: str) -> None:
            cells.append(len(trace_batch(store, b).passport_ids))

        result["batch"] = percentiles_ms(
            timed_calls(TRACE_SAMPLES, lambda: rng.choice(batch_ids), one_batch)
        )
        result["passports_per_batch"] = round(statistics.mean(cells), 1)
    if traced_pids:
        result["passport"] = percentiles_ms(
            timed_calls(
                TRACE_SAMPLES * 10,
                lambda: rng.choice(traced_pids),
                lambda p: trace_passport(store, p),
            )
        )
    return result


TABLES = ("cells", "cell_spectra", "passports", "lots", "batches", "hydromet_campaigns")


def disk_bytes(store: Store) -> dict[str, int]:
    """Bytes on disk per table, its indexes (and PostgreSQL's TOAST) included; a partitioned
    table's are its partitions'."""
    with store.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            size = text(
                "SELECT CASE WHEN c.relkind = 'p' THEN (SELECT sum(pg_total_relation_size(relid)) "
                "FROM pg_partition_tree(c.oid) WHERE isleaf) ELSE pg_total_relation_size(c.oid) "
                "END FROM pg_class c WHERE c.oid = to_regclass(:t)"
            )
            return {t: int(conn.scalar(size, {"t": t}) or 0) for t in TABLES}
        rows = conn.execute(
            text(
                "SELECT m.tbl_name, SUM(d.pgsize) FROM dbstat d "
                "JOIN sqlite_master m ON m.name = d.name GROUP BY m.tbl_name"
            )
        )
        sizes = {str(t): int(b) for t, b in rows}
    return {t: sizes.get(t, 0) for t in TABLES}


def cell_bytes(store: Store) -> dict[str, int]:
    """Bytes of the cell table: `heap` (PostgreSQL: with TOAST) and each index, summed over the
    partitions (a partition's copy of an index is named after the partition)."""
    with store.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            heap = conn.scalar(
                text(
                    "SELECT sum(pg_table_size(relid)) FROM pg_partition_tree('cells') WHERE isleaf"
                )
            )
            rows = conn.execute(
                text(
                    "SELECT regexp_replace(i.relname, '^cells_(y[0-9]{4}m[0-9]{2}|default)_', ''), "
                    "sum(pg_relation_size(i.oid)) FROM pg_partition_tree('cells') t "
                    "JOIN pg_index x ON x.indrelid = t.relid JOIN pg_class i "
                    "ON i.oid = x.indexrelid WHERE t.isleaf GROUP BY 1"
                )
            )
        else:
            heap = conn.scalar(text("SELECT SUM(pgsize) FROM dbstat WHERE name = 'cells'"))
            rows = conn.execute(
                text(
                    "SELECT d.name, SUM(d.pgsize) FROM dbstat d JOIN sqlite_master m "
                    "ON m.name = d.name WHERE m.tbl_name = 'cells' AND m.type = 'index' "
                    "GROUP BY d.name"
                )
            )
        return {"heap": int(heap or 0)} | {str(n): int(b) for n, b in rows}


def maintained(store: Store, plant: Plant, rng: random.Random) -> dict[str, Any]:
    """`plant db maintain` over the loaded store (months ahead, the loaded months archived),
    then the cell page's spectrum of archived cells (Parquet, plant/spectrum_archive.py)."""
    archive = Path(tempfile.mkdtemp(prefix="plant-bench-archive-"))
    try:
        t0 = time.perf_counter()
        report = maintain(
            store,
            months_ahead=MONTHS_AHEAD,
            archive_before_days=ARCHIVE_BEFORE_DAYS,
            archive_dir=archive,
        )
        seconds = time.perf_counter() - t0
        with store.engine.connect() as conn:
            kept = list(
                conn.scalars(
                    select(CellRow.id).where(
                        CellRow.spectrum_ref.is_not(None),
                        CellRow.id.in_(_sample_ids(plant, rng)),
                    )
                )
            )
        reads: dict[str, Any] | None = None
        if kept and report.spectra_archived:

            def read(cell_id: int) -> None:
                if cell_spectrum(store, cell_id, archive, 0, archive, wait_s=0) is None:
                    raise BenchError(f"archived spectrum of cell {cell_id} not found")

            reads = percentiles_ms(timed_calls(ARCHIVE_READS, lambda: rng.choice(kept), read))
    finally:
        shutil.rmtree(archive, ignore_errors=True)
    return {
        "seconds": round(seconds, 2),
        "report": report.json(),
        "bytes_per_archived_spectrum": (
            round(report.archive_bytes / report.spectra_archived, 1)
            if report.spectra_archived
            else None
        ),
        "archived_spectrum_read_ms": reads,
    }


# -- the line on the loaded store ---------------------------------------------------------------
@contextlib.contextmanager
def empty_database(url: str) -> Iterator[str]:
    """A new, empty database beside the one at `url` (same PostgreSQL server, or a SQLite file
    in a temporary directory), dropped afterwards."""
    if _backend(url) == "sqlite":
        with tempfile.TemporaryDirectory(prefix="plant-bench-empty-") as tmp:
            yield f"sqlite:///{tmp}/empty.db"
        return
    name = f"plant_bench_empty_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _maintain_now(url: str) -> None:
    """`plant db maintain`'s partitions (this month and the months ahead) in the database at
    `url`, archiving nothing: the loaded store has had them made by `maintained`."""
    store = Store(url)
    try:
        with tempfile.TemporaryDirectory(prefix="plant-bench-archive-") as archive:
            maintain(
                store,
                months_ahead=MONTHS_AHEAD,
                archive_before_days=None,
                archive_dir=Path(archive),
            )
    finally:
        store.close()


def _mean(values: list[float | None], digits: int) -> float | None:
    """The mean, or None if a run gave no figure."""
    known = [v for v in values if v is not None]
    return round(statistics.fmean(known), digits) if known and len(known) == len(values) else None


def _side(measured: list[tuple[LineRun, LineRun]]) -> dict[str, Any]:
    """Mean throughput and decision-latency p99 of one store's line measurements, and each."""
    p99 = [p.summary["decision_latency_ms"]["p99"] if p.summary else None for _, p in measured]
    return {
        "throughput_cells_per_s": _mean([full.throughput for full, _ in measured], 1),
        "decision_latency_ms_p99": _mean(p99, 2),
        "runs": [
            {"full_speed": run_figures(full), "latency": run_figures(paced)}
            for full, paced in measured
        ],
    }


def line_vs_empty(
    url: str, config_dir: Path, data_dir: Path, *, cells: int, pairs: int, say: Say
) -> dict[str, Any]:
    """`plant bench`'s two line runs (full speed; paced, for decision latency) writing into the
    loaded store at `url` and into an empty database beside it, alternated loaded, empty,
    empty, loaded ... so a drift of the machine's load weighs on both alike. Every paced run
    feeds at the rate the first full-speed run set."""
    measured: dict[str, list[tuple[LineRun, LineRun]]] = {"loaded": [], "empty": []}
    order = [
        kind for k in range(pairs) for kind in (("loaded", "empty"), ("empty", "loaded"))[k % 2]
    ]
    rate: float | None = None
    with (
        empty_database(url) as empty_url,
        tempfile.TemporaryDirectory(prefix="plant-bench-") as tmp,
    ):
        upgrade(empty_url)
        _maintain_now(empty_url)
        for k, kind in enumerate(order):
            say(f"line on the {kind} store ({k + 1} of {len(order)})")
            full, paced, _, _ = line_runs(
                config_dir,
                Path(tmp) / f"{k}-{kind}",
                data_dir,
                cells=cells,
                say=say,
                latency_rate=rate,
                database=url if kind == "loaded" else empty_url,
            )
            rate = paced.rate
            measured[kind].append((full, paced))
    loaded, empty = _side(measured["loaded"]), _side(measured["empty"])

    def ratio(key: str) -> float | None:
        a, b = loaded[key], empty[key]
        return round(a / b, 3) if a is not None and b else None

    every = [run for side in measured.values() for pair in side for run in pair]
    return {
        "pairs": pairs,
        "cells": cells,
        "latency_rate": rate,
        "order": order,
        "loaded": loaded,
        "empty": empty,
        "throughput_ratio": ratio("throughput_cells_per_s"),
        "decision_latency_p99_ratio": ratio("decision_latency_ms_p99"),
        "loaded_cells_written": sum(r.stored for pair in measured["loaded"] for r in pair),
        "lost_records": sum(r.sent - r.stored for r in every),
        "errors": [r.error for r in every if r.error],
    }


def _backend(url: str) -> str:
    return make_url(url).get_backend_name()


def run_store_bench(
    url: str,
    cells: int,
    *,
    spectrum_share: float,
    seed: int,
    progress: Progress,
    line: tuple[Path, Path] | None = None,
    line_cells: int = 2000,
    line_pairs: int = 2,
) -> dict[str, Any]:
    """Load `cells` into the empty database at `url` and measure it (one JSON-ready object);
    with `line` (config and data directories), the line on it too: `line_pairs` measurements
    of `line_cells` a run on each store (`line_vs_empty`)."""
    upgrade(url)
    store = Store(url)
    try:
        if store.count_cells():
            raise BenchError(
                f"database {store.safe_url} already holds cells: give an empty database"
            )
        started = load_avg()
        commit = git_commit()  # before the run: files edited meanwhile are not what ran
        pools = Pools.build(seed)
        plant = Plant(seed, cells, spectrum_share, START, pools)
        if store.engine.dialect.name == "postgresql":  # the loaded months' partitions
            last = month_of(START + timedelta(seconds=cells / CELLS_PER_S))
            with store.engine.begin() as conn:
                ensure_months(conn, START.date(), last)
        load_s = load(store, plant, progress)
        rng = random.Random(seed)
        task = progress.add_task("measuring", total=5 if line else 4)
        lookup = lookups(store, plant, rng)
        progress.advance(task)
        search = searches(store, plant, rng)
        progress.advance(task)
        trace = traces(store, rng)
        progress.advance(task)
        sizes = disk_bytes(store)
        cell_sizes = cell_bytes(store)
        stored = store.count_cells()
        maintenance = maintained(store, plant, rng)
        progress.advance(task)
        line_figures = None
        if line is not None:

            def say(message: str) -> None:
                progress.console.print(message, markup=False, highlight=False)

            line_figures = line_vs_empty(url, *line, cells=line_cells, pairs=line_pairs, say=say)
            progress.advance(task)
    finally:
        store.close()
    result: dict[str, Any] = {
        "bench": "store",
        **commit,
        "machine": machine_info(),
        "backend": _backend(url),
        "cells": stored,
        "passports": plant.passports,
        "spectra": plant.spectra,
        "lots": len(plant.lots),
        "spectrum_share": spectrum_share,
        "load_s": round(load_s, 1),
        "insert_cells_per_s": round(cells / load_s, 1),
        "passport_lookup_ms": lookup,
        "search_first_page_ms": search,
        "trace_batch_ms": trace.get("batch"),
        "trace_passport_ms": trace.get("passport"),
        "batches": trace["batches"],
        "passports_per_batch": trace.get("passports_per_batch"),
        "disk_bytes": sizes,
        "bytes_per_cell": round(sizes["cells"] / stored, 1) if stored else None,
        "cell_bytes_per_cell": {
            k: round(v / stored, 1) if stored else None for k, v in cell_sizes.items()
        },
        "bytes_per_spectrum": (
            round(sizes["cell_spectra"] / plant.spectra, 1) if plant.spectra else None
        ),
        "bytes_per_passport": (
            round(sizes["passports"] / plant.passports, 1) if plant.passports else None
        ),
        "maintain": maintenance,
        "line_vs_empty": line_figures,
        "load_avg_1min_start": started,
        "load_avg_1min_end": load_avg(),
        "budgets": {b.key: b.limit for b in STORE_BUDGETS},
        "budget_words": {b.key: b.words() for b in STORE_BUDGETS},
    }
    result["budgets_met"] = store_budgets_met(result)
    return result
