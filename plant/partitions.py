"""Monthly partitions of the cells and their kept spectra on PostgreSQL, and `plant db maintain`.

On PostgreSQL `cells` and `cell_spectra` are partitioned by range of `created_at`, one partition
per calendar month (UTC), plus a default partition that takes any row no month partition holds
yet, so no cell is ever refused for want of a partition (migration 0009, docs/spectra.md). A
spectrum's `created_at` is its cell's, so a cell and its spectrum live in the same month.
`maintain` creates the months ahead (moving rows the default partition holds for them) and moves
the spectra of months older than the archive age to Parquet files (zstd) that
`plant/spectrum_archive.py` reads back for the cell page. SQLite stays one table: there
`maintain` only archives, deleting the archived rows.

Every step takes only short locks, so lines keep writing: a new month is built beside the table
and attached (SHARE UPDATE EXCLUSIVE on the table), an archived month is locked against writes
while it is copied (nothing writes months-old spectra) and then detached and dropped under a
lock timeout, retried.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, func, select, text
from sqlalchemy.exc import OperationalError

from plant.spectrum_archive import archive_file, write_archive
from plant.store import CellSpectrumRow, Store, db_error_line, table_of, utcnow

_SPECTRA = table_of(CellSpectrumRow)

PARTITIONED = ("cells", "cell_spectra")
MONTHS_AHEAD = 3
LOCK_TIMEOUT = "2s"  # a line's transaction lasts milliseconds: waiting longer means trouble
DETACH_TRIES = 5


class MaintainError(RuntimeError):
    """A maintenance step cannot be done; the message names the table or file and why."""


def month_of(t: datetime | date) -> date:
    return date(t.year, t.month, 1)


def next_month(m: date) -> date:
    return date(m.year + m.month // 12, m.month % 12 + 1, 1)


def months(first: date, last: date) -> Iterator[date]:
    """The months from `first` to `last`, both included."""
    m = month_of(first)
    while m <= last:
        yield m
        m = next_month(m)


def months_after(m: date, n: int) -> date:
    for _ in range(n):
        m = next_month(m)
    return m


def partition_name(table: str, month: date) -> str:
    return f"{table}_y{month.year}m{month.month:02d}"


def _bound(m: date) -> str:
    return f"{m.isoformat()} 00:00:00+00"


_PARTITION = re.compile(rf"^({'|'.join(PARTITIONED)})_(y\d{{4}}m\d{{2}}|default)$")


def not_a_partition(name: str | None, type_: str, _parents: Any) -> bool:
    """Alembic's `include_name`: the schema is the tables', their partitions follow them."""
    return not (type_ == "table" and name is not None and _PARTITION.match(name))


def is_partitioned(conn: Connection, table: str = "cells") -> bool:
    kind = conn.scalar(
        text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}
    )
    return kind == "p"


def month_partitions(conn: Connection, table: str) -> dict[date, str]:
    """The table's month partitions by month (the default partition left out)."""
    rows = conn.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:t)"
        ),
        {"t": table},
    )
    out: dict[date, str] = {}
    for name, bound in rows:
        if "FROM ('" in bound:  # FOR VALUES FROM ('2026-12-01 00:00:00+00') TO (...)
            lo = datetime.fromisoformat(bound.split("FROM ('")[1].split("'")[0])
            out[month_of(lo.astimezone(UTC))] = str(name)
    return out


def create_default(conn: Connection) -> None:
    """The default partition of each partitioned table: rows of months not created yet."""
    for table in PARTITIONED:
        conn.execute(text(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT"))
    _unique_seq(conn, "cells_default")


def _unique_seq(conn: Connection, partition: str) -> None:
    """(line, epoch, seq) unique within one partition of `cells`: a partitioned table's own
    unique keys must hold `created_at`, which would make this one meaningless."""
    conn.execute(
        text(f"CREATE UNIQUE INDEX {partition}_line_epoch_seq ON {partition} (line, epoch, seq)")
    )


def create_month(conn: Connection, table: str, month: date) -> bool:
    """Give `table` the partition of `month` (False: it has one). Rows the default partition
    holds for that month move into it in the same transaction."""
    if month in month_partitions(conn, table):
        return False
    name, lo, hi = partition_name(table, month), _bound(month), _bound(next_month(month))
    conn.execute(text(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)"))
    conn.execute(
        text(
            f"WITH moved AS (DELETE FROM {table}_default WHERE created_at >= :lo "
            f"AND created_at < :hi RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        ),
        {"lo": lo, "hi": hi},
    )
    # The check lets ATTACH skip scanning the new table; it is redundant once attached.
    conn.execute(
        text(
            f"ALTER TABLE {name} ADD CONSTRAINT {name}_month "
            f"CHECK (created_at >= '{lo}' AND created_at < '{hi}')"
        )
    )
    conn.execute(
        text(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}')")
    )
    conn.execute(text(f"ALTER TABLE {name} DROP CONSTRAINT {name}_month"))
    if table == "cells":
        _unique_seq(conn, name)
    return True


def ensure_months(conn: Connection, first: date, last: date) -> list[str]:
    """Month partitions of every partitioned table from `first` to `last`; the new ones' names."""
    made = []
    for m in months(first, last):
        for table in PARTITIONED:
            if create_month(conn, table, m):
                made.append(partition_name(table, m))
    return made


def default_months(conn: Connection) -> list[date]:
    """Months that have rows in a default partition (written before their month existed)."""
    found: set[date] = set()
    for table in PARTITIONED:
        rows = conn.scalars(
            text(
                f"SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC') "
                f"FROM {table}_default"
            )
        )
        found.update(month_of(t) for t in rows)
    return sorted(found)


@dataclass
class MaintainReport:
    """What one `plant db maintain` did, as its JSON line says."""

    backend: str
    partitions_created: list[str] = field(default_factory=list)
    months_archived: list[str] = field(default_factory=list)
    spectra_archived: int = 0
    archive_files: list[str] = field(default_factory=list)
    archive_bytes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return asdict(self)


def maintain(
    store: Store, *, months_ahead: int, archive_before_days: float | None, archive_dir: Path
) -> MaintainReport:
    """Create the month partitions up to `months_ahead` after this one (and those rows in a
    default partition need), then archive the spectra of every month that ended more than
    `archive_before_days` ago (None: archive nothing)."""
    backend = store.engine.dialect.name
    report = MaintainReport(backend)
    t0 = time.perf_counter()
    if backend == "postgresql":
        now = month_of(utcnow())
        last = months_after(now, months_ahead)
        with store.engine.begin() as conn:
            if not is_partitioned(conn):
                raise MaintainError("table cells is not partitioned: run `plant db upgrade` first")
            _lock_timeout(conn)
            wanted = sorted({*months(now, last), *default_months(conn)})
            for m in wanted:
                report.partitions_created += ensure_months(conn, m, m)
    report.seconds["partitions"] = round(time.perf_counter() - t0, 3)
    t1 = time.perf_counter()
    if archive_before_days is not None:
        cutoff = utcnow() - timedelta(days=archive_before_days)
        for m in _archivable(store, cutoff):
            n, path = _archive_month(store, m, archive_dir)
            report.months_archived.append(m.strftime("%Y-%m"))
            report.spectra_archived += n
            report.archive_files.append(path.name)
            report.archive_bytes += path.stat().st_size
    report.seconds["archive"] = round(time.perf_counter() - t1, 3)
    return report


def _lock_timeout(conn: Connection) -> None:
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))


def _archivable(store: Store, cutoff: datetime) -> list[date]:
    """Months that ended by `cutoff` and still have spectra in the database."""
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "postgresql":
            found = list(month_partitions(conn, "cell_spectra"))
        else:  # SQLite stores times as text, 'YYYY-MM-DD ...'
            t = _SPECTRA.c.created_at
            keys = conn.scalars(select(func.substr(t, 1, 7)).where(t < cutoff).distinct())
            found = [date(int(k[:4]), int(k[5:7]), 1) for k in keys]
    return sorted(m for m in found if _start(next_month(m)) <= cutoff)


def _start(m: date) -> datetime:
    return datetime(m.year, m.month, 1, tzinfo=UTC)


def _archive_month(store: Store, month: date, archive_dir: Path) -> tuple[int, Path]:
    """Write the month's spectra to its Parquet file, then remove them from the database."""
    path = archive_file(archive_dir, month)
    if store.engine.dialect.name != "postgresql":
        t = _SPECTRA.c.created_at
        within = (t >= _start(month), t < _start(next_month(month)))
        with store.engine.begin() as conn:
            n = write_archive(
                conn, select(_SPECTRA).where(*within).order_by(_SPECTRA.c.cell_id), path
            )
            conn.execute(delete(_SPECTRA).where(*within))
        return n, path
    with store.engine.connect() as conn:
        name = month_partitions(conn, "cell_spectra").get(month)
    if name is None:
        raise MaintainError(f"cell_spectra has no partition for {month:%Y-%m}")
    with store.engine.begin() as conn:
        _lock_timeout(conn)
        conn.execute(text(f"LOCK TABLE {name} IN SHARE MODE"))  # no write slips in meanwhile
        cols = ", ".join(c.name for c in _SPECTRA.columns)
        rows = text(f"SELECT {cols} FROM {name} ORDER BY cell_id").columns(*_SPECTRA.columns)
        n = write_archive(conn, rows, path)
        for attempt in range(DETACH_TRIES):
            try:
                with conn.begin_nested():
                    conn.execute(text(f"ALTER TABLE cell_spectra DETACH PARTITION {name}"))
                break
            except OperationalError as exc:  # lock timeout: lines were busy, try again
                if attempt == DETACH_TRIES - 1:
                    raise MaintainError(
                        f"cannot detach {name}: {db_error_line(exc)}; its archive {path.name} "
                        "is written, the spectra stay in the database until the next run"
                    ) from None
                time.sleep(0.5)
        conn.execute(text(f"DROP TABLE {name}"))
    return n, path
