"""Passport store: import passport files into the `passports` table and look them up by id.

The plant has no guarantee of internet access (docs/architecture.md), so passports are imported
ahead of time and the line looks them up locally by the id read from the label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from models.passport import (
    Passport,
    PassportError,
    load_document,
    passport_from_document,
)
from plant.store import PassportRow, Store, table_of, utcnow

CHUNK = 1000  # rows per INSERT ... ON CONFLICT statement


@dataclass(frozen=True)
class ImportFailure:
    """One file that could not be imported, and why (the message names file and field)."""

    path: Path
    error: str


@dataclass
class ImportReport:
    """What an import did: new passports, replaced passports, files that failed."""

    imported: int = 0
    updated: int = 0
    failed: list[ImportFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "updated": self.updated,
            "failed": [{"file": str(f.path), "error": f.error} for f in self.failed],
        }


def _row(passport: Passport, payload: dict[str, Any], source_file: str | None) -> dict[str, Any]:
    return {
        "id": passport.passport_id,
        "model": passport.model.value,
        "chemistry": passport.chemistry,
        "chemistry_reason": passport.chemistry_reason,
        "chemistry_text": passport.chemistry_text,
        "manufacturer": passport.manufacturer,
        "mass_g": passport.mass_g,
        "soh_pct": passport.soh_pct,
        "damaged": passport.damaged,
        "fields_used": dict(passport.fields_used),
        "source_file": source_file,
        "payload": payload,
        "imported_at": utcnow(),
    }


def _upsert_chunk(store: Store, rows: list[dict[str, Any]]) -> tuple[int, int]:
    """Insert or replace rows in one statement; (new, replaced). Later rows win on equal ids."""
    unique = list({r["id"]: r for r in rows}.values())
    dialect = postgresql if store.engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(PassportRow)
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={c: stmt.excluded[c] for c in unique[0] if c != "id"},
    )
    with store.begin() as s:
        ids = [r["id"] for r in unique]
        existing = set(s.scalars(select(PassportRow.id).where(PassportRow.id.in_(ids))))
        s.connection().execute(stmt, unique)
    new = len(unique) - len(existing)
    return new, len(rows) - new


def upsert_passports(
    store: Store, items: Iterable[tuple[Passport, dict[str, Any], str | None]]
) -> tuple[int, int]:
    """Bulk insert-or-replace (passport, raw document, source file) in chunks; (new, replaced)."""
    new = replaced = 0
    it = iter(items)
    while chunk := [_row(*item) for item in islice(it, CHUNK)]:
        n, r = _upsert_chunk(store, chunk)
        new += n
        replaced += r
    return new, replaced


def _read(path: Path) -> tuple[Passport, dict[str, Any], str]:
    """Parse one file for import; PassportError when it cannot become a stored passport."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PassportError(f"{source}: cannot read the file: {exc.strerror}") from None
    doc = load_document(raw, source=source)
    passport = passport_from_document(doc, source=source)
    if passport.passport_id is None:
        raise PassportError(
            f"{source}: passport id: missing; this {passport.model.value} aspect file carries no "
            "passport id, so it cannot be looked up (import the passport that names the id)"
        )
    return passport, doc, source


def import_passports(
    store: Store, paths: Iterable[Path], progress: Callable[[Path], None] | None = None
) -> ImportReport:
    """Import passport files; good files are stored even when others fail, each failure kept."""
    report = ImportReport()

    def parsed() -> Iterator[tuple[Passport, dict[str, Any], str]]:
        for path in paths:
            try:
                yield _read(path)
            except PassportError as exc:
                report.failed.append(ImportFailure(path, str(exc)))
            finally:
                if progress is not None:
                    progress(path)

    report.imported, report.updated = upsert_passports(store, parsed())
    return report


def lookup_passport(store: Store, passport_id: str) -> PassportRow | None:
    """The stored passport with this id (primary-key lookup), or None."""
    with store.session() as s:
        return s.get(PassportRow, passport_id)


_PASSPORTS = table_of(PassportRow)
# The line's per-cell lookup: the columns `passport_of` reads, in Core (as the line's writes).
_FIND_PASSPORT = select(
    *(
        _PASSPORTS.c[name]
        for name in (
            "id",
            "source_file",
            "model",
            "manufacturer",
            "chemistry",
            "chemistry_reason",
            "chemistry_text",
            "mass_g",
            "soh_pct",
            "damaged",
            "fields_used",
        )
    )
).where(_PASSPORTS.c.id == bindparam("b_id"))


def find_passport(store: Store, passport_id: str) -> Passport | None:
    """The stored passport with this id, parsed for fusion: the line's lookup per cell."""
    with store.engine.connect() as conn:
        row = conn.execute(_FIND_PASSPORT, {"b_id": passport_id}).first()
    return passport_of(row) if row is not None else None


def passport_of(row: Any) -> Passport:
    """The stored passport (ORM or Core row) as the parsed `Passport` fusion takes."""
    return Passport(
        source=row.source_file or f"store:{row.id}",
        passport_id=row.id,
        model=row.model,  # type: ignore[arg-type]
        manufacturer=row.manufacturer,
        chemistry=row.chemistry,  # type: ignore[arg-type]
        chemistry_reason=row.chemistry_reason or "",
        chemistry_text=row.chemistry_text or "",
        mass_g=row.mass_g,
        soh_pct=row.soh_pct,
        damaged=row.damaged,
        fields_used={str(k): str(v) for k, v in (row.fields_used or {}).items()},
    )
