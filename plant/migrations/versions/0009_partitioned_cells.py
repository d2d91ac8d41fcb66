"""cells and cell_spectra: monthly partitions on PostgreSQL, keyset index, smaller cell rows

PostgreSQL: both tables are rebuilt partitioned by range of created_at, one partition per month
(UTC) of the rows they hold and up to 3 months ahead, plus a default partition
(plant/partitions.py). cells: primary key (created_at, id), the HMI's newest-first key and the
line's update key (plant/cell_records.py); `id` alone has a block-range (BRIN) index; the
passport index is a hash index of the cells that have one; (line, epoch, seq) is unique per
partition (a partitioned table's unique keys must hold created_at); the state and route indexes
give way to one of the unfinished cells only; route, state and decision source are stored as
one-character codes (plant/store.py `Code`); columns ordered widest first (no alignment
padding). cell_spectra: dated as their cells, primary key (cell_id, created_at), no foreign key.
SQLite: the same codes, keyset index (created_at, id) in place of the created_at index,
unfinished-cells index in place of the state and route indexes, and cell_spectra without its
foreign key. docs/bench.md has the figures.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 22:40:00
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from plant.partitions import MONTHS_AHEAD, create_default, ensure_months, month_of, months_after
from plant.store import CELL_CODES, UNFINISHED

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

CELL_COLUMNS = (
    "id bigint NOT NULL DEFAULT nextval('cells_id_seq'::regclass), seq bigint NOT NULL, "
    "mass_g double precision, confidence double precision, "
    "created_at timestamp with time zone NOT NULL, updated_at timestamp with time zone NOT NULL, "
    "epoch integer NOT NULL DEFAULT 1, line varchar(32) NOT NULL, state varchar(16) NOT NULL, "
    "route varchar(16), chemistry varchar(16), decision_source varchar(16), "
    "passport_id varchar(200), lot_id varchar(64) REFERENCES lots (id), "
    "model_version varchar(100), reason text, spectrum_ref varchar(300)"
)
CELL_NAMES = (
    "id, seq, mass_g, confidence, created_at, updated_at, epoch, line, state, route, chemistry, "
    "decision_source, passport_id, lot_id, model_version, reason, spectrum_ref"
)
SPECTRUM_COLUMNS = (
    "cell_id bigint NOT NULL, created_at timestamp with time zone NOT NULL, "
    "kev_per_channel double precision NOT NULL, offset_kev double precision NOT NULL, "
    "live_time_s double precision NOT NULL, real_time_s double precision, "
    "tube_kv double precision, channels integer NOT NULL, source varchar(300) NOT NULL, "
    "instrument varchar(200), encoding varchar(32) NOT NULL, counts bytea NOT NULL"
)
SPECTRUM_NAMES = (
    "cell_id, created_at, kev_per_channel, offset_kev, live_time_s, real_time_s, tube_kv, "
    "channels, source, instrument, encoding, counts"
)


def _case(name: str, *, words: bool = False) -> str:
    """SQL of a route, state or decision source column as its code (`words`: back to words);
    any other column as it is."""
    code = CELL_CODES.get(name)
    if code is None:
        return name
    pairs = zip(code.words, code.codes, strict=True)
    whens = " ".join(f"WHEN '{c if words else w}' THEN '{w if words else c}'" for w, c in pairs)
    return f"CASE {name} {whens} ELSE {name} END"


def _coded(names: str, *, words: bool = False) -> str:
    return ", ".join(_case(n, words=words) for n in names.split(", "))


def _recode_sqlite(*, words: bool = False) -> None:
    op.execute(
        "UPDATE cells SET " + ", ".join(f"{n} = {_case(n, words=words)}" for n in CELL_CODES)
    )


def _dated_as_cells() -> str:
    """The spectra's columns from `s`, dated as their cells `c` (the partition key they share)."""
    return ", ".join(
        "c.created_at" if n == "created_at" else f"s.{n}" for n in SPECTRUM_NAMES.split(", ")
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _partition()
        return
    _recode_sqlite()
    with op.batch_alter_table("cells") as batch:
        batch.drop_index("ix_cells_created_at")
        batch.drop_index("ix_cells_state")
        batch.drop_index("ix_cells_route")
        batch.create_index("ix_cells_created_id", ["created_at", "id"])
        batch.create_index(
            "ix_cells_unfinished", ["line", "epoch", "seq"], sqlite_where=sa.text(UNFINISHED)
        )
    _sqlite_spectra_without_fk()


def _sqlite_spectra_without_fk() -> None:
    op.execute(
        "CREATE TABLE cell_spectra_new (cell_id INTEGER NOT NULL PRIMARY KEY, "
        "channels INTEGER NOT NULL, kev_per_channel FLOAT NOT NULL, offset_kev FLOAT NOT NULL, "
        "live_time_s FLOAT NOT NULL, real_time_s FLOAT, tube_kv FLOAT, "
        "source VARCHAR(300) NOT NULL, instrument VARCHAR(200), encoding VARCHAR(32) NOT NULL, "
        "counts BLOB NOT NULL, created_at DATETIME NOT NULL)"
    )
    op.execute(
        f"INSERT INTO cell_spectra_new ({SPECTRUM_NAMES}) SELECT {_dated_as_cells()} "
        "FROM cell_spectra s JOIN cells c ON c.id = s.cell_id"
    )
    op.execute("DROP TABLE cell_spectra")
    op.execute("ALTER TABLE cell_spectra_new RENAME TO cell_spectra")
    op.create_index("ix_cell_spectra_created_at", "cell_spectra", ["created_at"])


def _partition() -> None:
    conn = op.get_bind()
    # Free the old tables' names (constraints and indexes are named per schema).
    op.execute("ALTER TABLE cell_spectra RENAME TO cell_spectra_v8")
    op.execute("ALTER TABLE cell_spectra_v8 DROP CONSTRAINT IF EXISTS cell_spectra_cell_id_fkey")
    op.execute("ALTER TABLE cell_spectra_v8 DROP CONSTRAINT cell_spectra_pkey")
    op.execute("DROP INDEX ix_cell_spectra_created_at")
    op.execute("ALTER TABLE cells RENAME TO cells_v8")
    op.execute("ALTER TABLE cells_v8 DROP CONSTRAINT cells_pkey")
    op.execute("ALTER TABLE cells_v8 DROP CONSTRAINT uq_cells_line_epoch_seq")
    op.execute("ALTER TABLE cells_v8 DROP CONSTRAINT IF EXISTS cells_lot_id_fkey")
    for ix in ("created_at", "lot_id", "passport_id", "route", "state"):
        op.execute(f"DROP INDEX ix_cells_{ix}")
    op.execute("ALTER TABLE cells_v8 ALTER COLUMN id DROP DEFAULT")
    op.execute("ALTER SEQUENCE cells_id_seq OWNED BY NONE")

    op.execute(f"CREATE TABLE cells ({CELL_COLUMNS}) PARTITION BY RANGE (created_at)")
    op.execute("ALTER SEQUENCE cells_id_seq OWNED BY cells.id")
    op.execute(f"CREATE TABLE cell_spectra ({SPECTRUM_COLUMNS}) PARTITION BY RANGE (created_at)")
    create_default(conn)
    oldest = conn.scalar(sa.text("SELECT min(created_at) FROM cells_v8"))
    now = month_of(datetime.now(UTC))
    ensure_months(
        conn, month_of(oldest) if oldest is not None else now, months_after(now, MONTHS_AHEAD)
    )

    op.execute(f"INSERT INTO cells ({CELL_NAMES}) SELECT {_coded(CELL_NAMES)} FROM cells_v8")
    op.execute(
        f"INSERT INTO cell_spectra ({SPECTRUM_NAMES}) SELECT {_dated_as_cells()} "
        "FROM cell_spectra_v8 s JOIN cells_v8 c ON c.id = s.cell_id"
    )
    op.execute("DROP TABLE cell_spectra_v8")
    op.execute("DROP TABLE cells_v8")

    op.execute("ALTER TABLE cells ADD CONSTRAINT cells_pkey PRIMARY KEY (created_at, id)")
    op.execute(  # ids grow with the rows' order on disk: block ranges find one in a few pages
        "CREATE INDEX ix_cells_id ON cells USING brin (id) "
        "WITH (pages_per_range = 16, autosummarize = on)"
    )
    op.execute(
        "CREATE INDEX ix_cells_passport_id ON cells USING hash (passport_id) "
        "WHERE passport_id IS NOT NULL"
    )
    op.execute("CREATE INDEX ix_cells_lot_id ON cells (lot_id)")
    op.execute(f"CREATE INDEX ix_cells_unfinished ON cells (line, epoch, seq) WHERE {UNFINISHED}")
    op.execute("ALTER TABLE cell_spectra ADD PRIMARY KEY (cell_id, created_at)")
    op.execute("CREATE INDEX ix_cell_spectra_created_at ON cell_spectra (created_at)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        with op.batch_alter_table("cells") as batch:
            batch.drop_index("ix_cells_unfinished")
            batch.drop_index("ix_cells_created_id")
            batch.create_index("ix_cells_route", ["route"])
            batch.create_index("ix_cells_state", ["state"])
            batch.create_index("ix_cells_created_at", ["created_at"])
        _recode_sqlite(words=True)
        return  # cell_spectra keeps no foreign key: the code of 0008 does not need it
    op.execute("ALTER TABLE cells RENAME TO cells_v9")
    op.execute("ALTER TABLE cell_spectra RENAME TO cell_spectra_v9")
    for ix in ("id", "passport_id", "lot_id", "unfinished"):
        op.execute(f"DROP INDEX ix_cells_{ix}")
    op.execute("ALTER TABLE cells_v9 DROP CONSTRAINT cells_pkey")
    op.execute("ALTER TABLE cell_spectra_v9 DROP CONSTRAINT cell_spectra_pkey")
    op.execute("DROP INDEX ix_cell_spectra_created_at")
    op.execute("ALTER TABLE cells_v9 ALTER COLUMN id DROP DEFAULT")
    op.execute("ALTER SEQUENCE cells_id_seq OWNED BY NONE")
    op.execute(
        f"CREATE TABLE cells ({CELL_COLUMNS}, CONSTRAINT cells_pkey PRIMARY KEY (id), "
        "CONSTRAINT uq_cells_line_epoch_seq UNIQUE (line, epoch, seq))"
    )
    op.execute("ALTER SEQUENCE cells_id_seq OWNED BY cells.id")
    op.execute(
        f"INSERT INTO cells ({CELL_NAMES}) SELECT {_coded(CELL_NAMES, words=True)} FROM cells_v9"
    )
    op.execute(
        f"CREATE TABLE cell_spectra ({SPECTRUM_COLUMNS}, CONSTRAINT cell_spectra_pkey "
        "PRIMARY KEY (cell_id), CONSTRAINT cell_spectra_cell_id_fkey FOREIGN KEY (cell_id) "
        "REFERENCES cells (id))"
    )
    op.execute(
        f"INSERT INTO cell_spectra ({SPECTRUM_NAMES}) SELECT {SPECTRUM_NAMES} FROM cell_spectra_v9"
    )
    op.execute("DROP TABLE cell_spectra_v9")
    op.execute("DROP TABLE cells_v9")
    for ix in ("created_at", "lot_id", "passport_id", "route", "state"):
        op.execute(f"CREATE INDEX ix_cells_{ix} ON cells ({ix})")
    op.execute("CREATE INDEX ix_cell_spectra_created_at ON cell_spectra (created_at)")
