"""Persistence: SQLAlchemy 2 ORM tables, engine setup, migrations and the repository."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Update,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
    }


def table_of(row: type[Base]) -> Table:
    """The Core table of an ORM class, for statements built once and run many times."""
    return cast(Table, row.__table__)


def update_by_id(table: Table, **values: Any) -> Update:
    """UPDATE of one row by its primary key `id`, bound as `b_id`. The line's per-cell writes
    are built once like this, in Core: building ORM statements per cell cost more CPU than the
    rest of the cell (docs/line.md)."""
    return update(table).where(table.c.id == bindparam("b_id")).values(**values)


class Code(TypeDecorator[str]):
    """A word of a closed vocabulary stored as one character: the cell table's route, state and
    decision source take 6 bytes a row instead of ~27 (docs/bench.md, bytes per cell); code
    reading or writing the column sees the words. A word outside the vocabulary is refused."""

    impl = String(1)
    cache_ok = True

    def __init__(self, words: tuple[str, ...], codes: str) -> None:
        super().__init__()
        assert len(words) == len(codes) == len(set(codes)), "one distinct code per word"
        self.words = words
        self.codes = codes

    def knows(self, word: str) -> bool:
        return word in self.words

    def code(self, word: str) -> str:
        """The stored character of `word` (for SQL written by hand: migrations, indexes)."""
        return self.codes[self.words.index(word)]

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None:
            return None
        word = str(value)
        if word not in self.words:
            raise ValueError(f"{word!r} is not one of {list(self.words)}")
        return self.code(word)

    def process_result_value(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else self.words[self.codes.index(value)]


ROUTE_CODE = Code(("hydromet", "black_mass", "reject", "quarantine"), "hbrq")
STATE_CODE = Code(
    ("detected", "measured", "classified", "routed", "confirmed", "quarantined"), "dmkrcq"
)
SOURCE_CODE = Code(("passport", "spectrum", "fused", "operator", "none"), "psfon")
CELL_CODES = {"route": ROUTE_CODE, "state": STATE_CODE, "decision_source": SOURCE_CODE}
UNFINISHED = f"state NOT IN ('{STATE_CODE.code('confirmed')}', '{STATE_CODE.code('quarantined')}')"


# The columns a cell's decision fills (the line records them; exports list them).
DECISION_COLUMNS = (
    "passport_id",
    "chemistry",
    "confidence",
    "decision_source",
    "route",
    "reason",
    "model_version",
)


class CellRow(Base):
    """One physical cell; committed before its diverter command is written.

    The indexes are those of SQLite. On PostgreSQL the table is partitioned by month of
    `created_at` (plant/partitions.py, migration 0009): its primary key is (created_at, id), the
    key the HMI pages on, `id` has its own index, the passport index is a hash index, and
    (line, epoch, seq) is unique within each month's partition (a partitioned table's own unique
    keys must hold `created_at`); across months the line's own look-up before it inserts a cell
    again holds it (plant/cell_records.py `detected`).
    """

    __tablename__ = "cells"
    __table_args__ = (
        UniqueConstraint("line", "epoch", "seq", name="uq_cells_line_epoch_seq"),
        Index("ix_cells_created_id", "created_at", "id"),
        Index("ix_cells_passport_id", "passport_id"),
        Index("ix_cells_lot_id", "lot_id"),
        Index(
            "ix_cells_unfinished",
            "line",
            "epoch",
            "seq",
            sqlite_where=text(UNFINISHED),
            postgresql_where=text(UNFINISHED),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    line: Mapped[str] = mapped_column(String(32))
    epoch: Mapped[int] = mapped_column(default=1, server_default="1")  # PLC epoch (PlcEpochRow)
    seq: Mapped[int] = mapped_column(BigInteger)
    passport_id: Mapped[str | None] = mapped_column(String(200))
    mass_g: Mapped[float | None] = mapped_column(Float)
    spectrum_ref: Mapped[str | None] = mapped_column(String(300))
    chemistry: Mapped[str | None] = mapped_column(String(16))
    confidence: Mapped[float | None] = mapped_column(Float)
    decision_source: Mapped[str | None] = mapped_column(SOURCE_CODE)
    route: Mapped[str | None] = mapped_column(ROUTE_CODE)
    reason: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(STATE_CODE, default="detected")
    lot_id: Mapped[str | None] = mapped_column(ForeignKey("lots.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PlcEpochRow(Base):
    """One numbering of a line's PLC: it starts again after a PLC restart or program download."""

    __tablename__ = "plc_epochs"
    __table_args__ = (UniqueConstraint("line", "epoch", name="uq_plc_epochs_line_epoch"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    line: Mapped[str] = mapped_column(String(32))
    epoch: Mapped[int] = mapped_column()
    plc_epoch: Mapped[int | None] = mapped_column()  # the PLC's own start-up counter, if mapped
    reason: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)


class PassportRow(Base):
    """An imported battery passport, looked up by id when a label is read."""

    __tablename__ = "passports"
    # plant/passports.py finds UUID ids case-insensitively: lower(id) must be an index probe
    __table_args__ = (Index("ix_passports_id_lower", func.lower(text("id"))),)

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str] = mapped_column(String(64))
    chemistry: Mapped[str] = mapped_column(String(16))
    chemistry_reason: Mapped[str | None] = mapped_column(Text)
    manufacturer: Mapped[str | None] = mapped_column(String(200))
    mass_g: Mapped[float | None] = mapped_column(Float)
    soh_pct: Mapped[float | None] = mapped_column(Float)
    chemistry_text: Mapped[str | None] = mapped_column(Text)
    damaged: Mapped[bool] = mapped_column(default=False)
    # Lifecycle and plausibility (models.passport.routing_problem): not routing evidence when
    # draft, expired or implausible.
    status: Mapped[str | None] = mapped_column(String(32))
    expires_on: Mapped[date | None] = mapped_column()
    implausible: Mapped[str | None] = mapped_column(Text)
    # Authenticity (plant/trust.py): the verdict at import or last re-verification, why, the
    # signed credential as received (compact JWS, None when unsigned) and when it expires.
    authenticity: Mapped[str | None] = mapped_column(String(32))
    authenticity_reason: Mapped[str | None] = mapped_column(Text)
    credential: Mapped[str | None] = mapped_column(Text)
    credential_valid_until: Mapped[datetime | None] = mapped_column()
    fields_used: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source_file: Mapped[str | None] = mapped_column(String(500))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)


class LotRow(Base):
    """Cells accumulated per route; closes at a mass or age and feeds batches."""

    __tablename__ = "lots"
    __table_args__ = (Index("ix_lots_route_state", "route", "state"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    line: Mapped[str] = mapped_column(String(32))
    route: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="open")
    mass_g: Mapped[float] = mapped_column(Float, default=0.0)
    cell_count: Mapped[int] = mapped_column(Integer, default=0)
    metals_g: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"))
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column()


class BatchRow(Base):
    """A hydrometallurgy product batch (e.g. NiSO4·6H2O) made from lots."""

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_product_created", "product", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    product: Mapped[str] = mapped_column(String(32))
    mass_kg: Mapped[float | None] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    campaign_id: Mapped[str | None] = mapped_column(ForeignKey("hydromet_campaigns.id"))


class CampaignRow(Base):
    """One hydrometallurgy run over 1-2 lots: its feed, process and residues (mass balance)."""

    __tablename__ = "hydromet_campaigns"
    __table_args__ = (Index("ix_hydromet_campaigns_started", "started_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    line: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ph_mean: Mapped[float] = mapped_column(Float)
    ph_sd: Mapped[float] = mapped_column(Float)
    feed_g: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    residues_g: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the line's hold-up tank holds after this campaign (element -> g, "insolubles" g).
    tank_g: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class CampaignLotRow(Base):
    """Which lots a campaign consumed (genealogy: batch -> campaign -> lots -> cells)."""

    __tablename__ = "campaign_lots"
    __table_args__ = (Index("ix_campaign_lots_lot", "lot_id"),)

    campaign_id: Mapped[str] = mapped_column(ForeignKey("hydromet_campaigns.id"), primary_key=True)
    lot_id: Mapped[str] = mapped_column(ForeignKey("lots.id"), primary_key=True)


class RollupRow(Base):
    """Historian roll-up: min/max/sum/count of a line's tag per bucket of `res_s` seconds."""

    __tablename__ = "process_rollups"

    line: Mapped[str] = mapped_column(String(32), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    res_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch s of bucket start
    n: Mapped[int] = mapped_column(BigInteger)
    vmin: Mapped[float] = mapped_column(Float)
    vmax: Mapped[float] = mapped_column(Float)
    vsum: Mapped[float] = mapped_column(Float)
    vsumsq: Mapped[float] = mapped_column(Float)


class AssayRow(Base):
    """A measured composition of a batch or lot (inline analyser, lab or XRF)."""

    __tablename__ = "assays"
    __table_args__ = (Index("ix_assays_batch", "batch_id"), Index("ix_assays_lot", "lot_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"))
    lot_id: Mapped[str | None] = mapped_column(ForeignKey("lots.id"))
    source: Mapped[str] = mapped_column(String(16))
    purity_pct: Mapped[float | None] = mapped_column(Float)
    composition: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    taken_at: Mapped[datetime] = mapped_column(default=utcnow)


class WeighingRow(Base):
    """A weighbridge record of one output fraction of the mechanical stage (plant/weighings.py)."""

    __tablename__ = "weighings"
    __table_args__ = (Index("ix_weighings_lot", "lot_id"), Index("ix_weighings_at", "weighed_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fraction: Mapped[str] = mapped_column(String(32))
    kg: Mapped[float] = mapped_column(Float)
    lot_id: Mapped[str | None] = mapped_column(ForeignKey("lots.id"))
    weighed_at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(16))
    user: Mapped[str] = mapped_column(String(64))


class ProcessValueRow(Base):
    """Historian sample of one tag of one line."""

    __tablename__ = "process_values"
    __table_args__ = (Index("ix_process_values_line_tag_ts", "line", "tag", "ts"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    line: Mapped[str] = mapped_column(String(32))
    tag: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column()
    value: Mapped[float] = mapped_column(Float)


class AlarmRow(Base):
    """An alarm occurrence with its ISA-18.2 state history in timestamps."""

    __tablename__ = "alarms"
    __table_args__ = (
        Index("ix_alarms_state", "state"),
        Index("ix_alarms_raised_at", "raised_at"),
        Index("ix_alarms_source", "source"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    line: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    priority: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    raised_at: Mapped[datetime] = mapped_column(default=utcnow)
    acked_at: Mapped[datetime | None] = mapped_column()
    acked_by: Mapped[str | None] = mapped_column(String(64))
    ack_note: Mapped[str | None] = mapped_column(Text)
    cleared_at: Mapped[datetime | None] = mapped_column()
    shelved_until: Mapped[datetime | None] = mapped_column()
    shelve_reason: Mapped[str | None] = mapped_column(Text)


class AlarmEventRow(Base):
    """One entry of an alarm's journal: each occurrence and each operator action on it."""

    __tablename__ = "alarm_events"
    __table_args__ = (
        Index("ix_alarm_events_alarm", "alarm_id", "id"),
        Index("ix_alarm_events_ts", "ts"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id"))
    ts: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))
    user: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)


class UserRow(Base):
    """HMI user; the password is stored only as an argon2 hash."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditRow(Base):
    """Who changed what, when, from which value to which."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_ts", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[datetime] = mapped_column(default=utcnow)
    user: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    old: Mapped[str | None] = mapped_column(Text)
    new: Mapped[str | None] = mapped_column(Text)


class LineStatusRow(Base):
    """Live status of one line, upserted by its controller about once a second for the HMI."""

    __tablename__ = "line_status"

    line: Mapped[str] = mapped_column(String(32), primary_key=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    running: Mapped[bool] = mapped_column(default=False)
    plc_health: Mapped[str] = mapped_column(String(16), default="unknown")
    xrf_health: Mapped[str] = mapped_column(String(16), default="unknown")
    cells_per_min: Mapped[float] = mapped_column(Float, default=0.0)
    quarantine_rate: Mapped[float] = mapped_column(Float, default=0.0)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class SessionRow(Base):
    """An HMI login (browser cookie or API bearer token); only the token's hash is stored."""

    __tablename__ = "hmi_sessions"
    __table_args__ = (Index("ix_hmi_sessions_expires_at", "expires_at"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(64))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class AlarmLimitRow(Base):
    """An analog alarm limit (high or low) with deadband and on-delay, editable by engineers."""

    __tablename__ = "alarm_limits"
    __table_args__ = (
        UniqueConstraint("line", "tag", "kind", name="uq_alarm_limits_line_tag_kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The line it acts on; "*": every line without a limit of its own for this tag and kind.
    line: Mapped[str] = mapped_column(String(32), default="*")
    tag: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))
    limit: Mapped[float] = mapped_column(Float)
    deadband: Mapped[float] = mapped_column(Float, default=0.0)
    on_delay_s: Mapped[float] = mapped_column(Float, default=0.0)
    priority: Mapped[str] = mapped_column(String(16), default="medium")
    unit: Mapped[str] = mapped_column(String(16), default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class SetpointRow(Base):
    """A process setpoint requested from the HMI; the controller applies it and notes when."""

    __tablename__ = "setpoints"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(16), default="")
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    applied_value: Mapped[float | None] = mapped_column(Float)
    applied_at: Mapped[datetime | None] = mapped_column()


class CellSpectrumRow(Base):
    """A measured cell's XRF spectrum, kept with the cell (plant/spectrum_archive.py encodes it).

    Dated as its cell (`created_at`); on PostgreSQL partitioned by month like `cells`, with the
    primary key (cell_id, created_at) and no foreign key (a partitioned table cannot be referred
    to by `id` alone); `plant db maintain` archives whole months."""

    __tablename__ = "cell_spectra"
    __table_args__ = (Index("ix_cell_spectra_created_at", "created_at"),)

    cell_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True
    )
    channels: Mapped[int] = mapped_column(Integer)
    kev_per_channel: Mapped[float] = mapped_column(Float)
    offset_kev: Mapped[float] = mapped_column(Float)
    live_time_s: Mapped[float] = mapped_column(Float)
    real_time_s: Mapped[float | None] = mapped_column(Float)
    tube_kv: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(300))
    instrument: Mapped[str | None] = mapped_column(String(200))
    encoding: Mapped[str] = mapped_column(String(32))
    counts: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StoreError(Exception):
    """The database cannot be used as asked (unreachable, outdated schema ...)."""


def db_error_line(exc: BaseException) -> str:
    """A driver's error in one line: its first line, without SQLAlchemy's background link."""
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return lines[0] if lines else type(cause).__name__


def safe_url(url: str) -> str:
    """The URL with its password hidden, fit for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine; SQLite gets WAL mode and its parent directory created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Run the Alembic migrations up to `revision`."""
    from alembic import command

    make_engine(url).dispose()  # creates the SQLite directory
    try:
        command.upgrade(_alembic_config(url), revision)
    except OperationalError as exc:  # unreachable server, refused login, unopenable file
        raise StoreError(f"cannot open database {safe_url(url)}: {db_error_line(exc)}") from None


def schema_status(engine: Engine) -> tuple[str | None, str]:
    """(current revision in the database, newest revision in the code)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(str(engine.url))).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head or ""


class Store:
    """Repository over one database: the only place that writes SQL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo)
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def require_current_schema(self) -> None:
        """Refuse to work on a database whose schema is not the code's newest."""
        try:
            current, head = schema_status(self.engine)
        except Exception as exc:  # driver errors vary by backend
            raise StoreError(
                f"cannot open database {self.safe_url}: {db_error_line(exc)}"
            ) from None
        if current != head:
            state = "empty" if current is None else f"at revision {current}"
            raise StoreError(
                f"database {self.safe_url} is {state}, code needs {head}: "
                "run `plant db upgrade` first"
            )

    @property
    def safe_url(self) -> str:
        return safe_url(self.url)

    @contextmanager
    def begin(self) -> Iterator[Session]:
        """A session in a transaction that commits on success."""
        with self.session.begin() as s:
            yield s

    # -- cells -------------------------------------------------------------------------------
    def add_cells(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert cells in one transaction (bulk path for imports and tests)."""
        items = list(rows)
        if items:
            with self.begin() as s:
                s.execute(insert(CellRow), items)
        return len(items)

    def cells_by_passport(self, passport_id: str) -> list[CellRow]:
        with self.session() as s:
            return list(
                s.scalars(
                    select(CellRow).where(CellRow.passport_id == passport_id).order_by(CellRow.id)
                )
            )

    def count_cells(self, line: str | None = None) -> int:
        with self.session() as s:
            q = select(func.count(CellRow.id))
            if line is not None:
                q = q.where(CellRow.line == line)
            return int(s.scalar(q) or 0)

    # -- audit -------------------------------------------------------------------------------
    def audit(
        self, session: Session, user: str, action: str, target: str, old: Any, new: Any
    ) -> None:
        """Record a change inside the caller's transaction, so both commit or neither."""
        session.add(
            AuditRow(
                user=user,
                action=action,
                target=target,
                old=None if old is None else str(old),
                new=None if new is None else str(new),
            )
        )
