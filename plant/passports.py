"""Passport store: import passport files into the `passports` table and look them up by id.

The plant has no guarantee of internet access (docs/architecture.md), so passports are imported
ahead of time and the line looks them up locally by the id read from the label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite

from models.credentials import Authenticity, TrustList, Verdict
from models.passport import (
    Passport,
    PassportError,
    PassportModel,
    passport_from_document,
    routing_problem,
)
from plant.store import PassportRow, Store, table_of, update_by_id, utcnow
from plant.trust import read_passport, reverify

CHUNK = 1000  # rows per INSERT ... ON CONFLICT statement


@dataclass(frozen=True)
class ImportFailure:
    """One file that could not be imported, and why (the message names file and field)."""

    path: Path
    error: str


@dataclass
class ImportReport:
    """What an import did: new passports, replaced passports, files that failed, and passports
    stored that may not route a cell on their own (draft, expired, implausible: `notes`)."""

    imported: int = 0
    updated: int = 0
    failed: list[ImportFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    authenticity: dict[str, str] = field(default_factory=dict)  # source -> verdict

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "updated": self.updated,
            "failed": [{"file": str(f.path), "error": f.error} for f in self.failed],
            "not_routing_evidence": self.notes,
            "authenticity": self.authenticity,
        }


@dataclass(frozen=True)
class Signature:
    """The signed credential a passport came in, and its verdict (None: unsigned)."""

    credential: str
    authenticity: Authenticity


def _row(
    passport: Passport,
    payload: dict[str, Any],
    source_file: str | None,
    signature: Signature | None = None,
) -> dict[str, Any]:
    auth = signature.authenticity if signature is not None else None
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
        "status": passport.status,
        "expires_on": passport.expires_on,
        "implausible": passport.implausible,
        "authenticity": passport.authenticity,
        "authenticity_reason": passport.authenticity_reason,
        "credential": signature.credential if signature is not None else None,
        "credential_valid_until": auth.valid_until if auth is not None else None,
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


_Item = (
    tuple[Passport, dict[str, Any], str | None]
    | tuple[Passport, dict[str, Any], str | None, Signature | None]
)


def upsert_passports(store: Store, items: Iterable[_Item]) -> tuple[int, int]:
    """Bulk insert-or-replace (passport, raw document, source file[, signature]) in chunks;
    (new, replaced)."""
    new = replaced = 0
    it = iter(items)
    while chunk := [_row(*item) for item in islice(it, CHUNK)]:
        n, r = _upsert_chunk(store, chunk)
        new += n
        replaced += r
    return new, replaced


# Models whose files are aspects (parts) of one passport: joined per folder (`_join_aspects`).
_ASPECT_MODELS = frozenset(
    {PassportModel.batterypass_1_0, PassportModel.batterypass_1_2, PassportModel.idta}
)

_Parsed = tuple[Passport, dict[str, Any], str, Signature | None]


def _read(path: Path, trust: TrustList) -> _Parsed:
    """Parse (and verify, when signed) one file for import; PassportError when it cannot be
    read as a passport."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PassportError(f"{source}: cannot read the file: {exc.strerror}") from None
    read = read_passport(raw, source=source, trust=trust)
    signature = (
        Signature(read.credential, read.authenticity) if read.credential is not None else None
    )
    return read.passport, read.document, source, signature


def _join_aspects(
    folder: Path, aspects: list[tuple[Path, Passport, dict[str, Any]]]
) -> Iterator[_Parsed | ImportFailure]:
    """The aspect files of one folder as passports: the files naming one id are joined, and the
    files naming none join them when the folder holds exactly one id (one battery)."""
    ids = list(dict.fromkeys(p.passport_id for _, p, _ in aspects if p.passport_id))
    loose = [path for path, p, _ in aspects if p.passport_id is None]
    for pid in ids:
        paths = [path for path, p, _ in aspects if p.passport_id == pid]
        joined = paths + (loose if len(ids) == 1 else [])
        doc: dict[str, Any] = {}
        for path, _, d in sorted(aspects, key=lambda a: a[1].passport_id is not None):
            if path in joined:
                doc.update(d)
        others = ", ".join(p.name for p in joined[1:])
        source = (f"{paths[0]} + {others}" if others else str(paths[0]))[:500]
        try:
            yield passport_from_document(doc, source=source), doc, source, None
        except PassportError as exc:
            yield ImportFailure(paths[0], str(exc))
    if loose and len(ids) != 1:
        why = (
            f"the folder holds {len(ids)} passport ids ({', '.join(ids)}): which battery is it?"
            if ids
            else "no file in the folder names one (add the aspect with the passport id, e.g. "
            "GeneralProductInformation or the battery nameplate)"
        )
        for path in loose:
            yield ImportFailure(
                path, f"{path}: passport id: missing; this aspect file carries none and {why}"
            )


def import_passports(
    store: Store,
    paths: Iterable[Path],
    progress: Callable[[Path], None] | None = None,
    trust: TrustList | None = None,
) -> ImportReport:
    """Import passport files; good files are stored even when others fail, each failure kept.

    Signed passports (vc+jwt) are verified against `trust` and stored with their verdict and
    credential. Aspect files of one battery (BatteryPass, IDTA value-only submodels) are joined
    per folder.
    """
    trust = trust or TrustList()
    report = ImportReport()
    aspects: dict[Path, list[tuple[Path, Passport, dict[str, Any]]]] = {}
    today = date.today()

    def noted(item: _Parsed) -> _Parsed:
        problem = routing_problem(item[0], today)
        if problem:
            report.notes.append(f"{item[2]}: not routing evidence: {problem}")
        signature = item[3]
        if signature is not None and signature.authenticity.verdict is not Verdict.verified:
            auth = signature.authenticity
            report.notes.append(f"{item[2]}: {auth.verdict.value}: {auth.reason}")
        report.authenticity[item[2]] = item[0].authenticity
        return item

    def parsed() -> Iterator[_Parsed]:
        for path in paths:
            try:
                passport, doc, source, signature = _read(path, trust)
                if passport.model in _ASPECT_MODELS and signature is None:
                    aspects.setdefault(path.parent, []).append((path, passport, doc))
                else:
                    yield noted((passport, doc, source, signature))
            except PassportError as exc:
                report.failed.append(ImportFailure(path, str(exc)))
            finally:
                if progress is not None:
                    progress(path)
        for folder, found in aspects.items():
            for item in _join_aspects(folder, found):
                if isinstance(item, ImportFailure):
                    report.failed.append(item)
                else:
                    yield noted(item)

    report.imported, report.updated = upsert_passports(store, parsed())
    return report


def _is_uuid_urn(passport_id: str) -> bool:
    return passport_id[:9].lower() == "urn:uuid:"


def lookup_passport(store: Store, passport_id: str) -> PassportRow | None:
    """The stored passport with this id (primary key), or None; a urn:uuid in any case."""
    with store.session() as s:
        row = s.get(PassportRow, passport_id)
        if row is None and _is_uuid_urn(passport_id):
            row = s.scalars(
                select(PassportRow).where(func.lower(PassportRow.id) == passport_id.lower())
            ).first()
        return row


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
            "status",
            "expires_on",
            "implausible",
            "authenticity",
            "authenticity_reason",
            "credential_valid_until",
            "fields_used",
        )
    )
)
_FIND_EXACT = _FIND_PASSPORT.where(_PASSPORTS.c.id == bindparam("b_id"))
# UUIDs compare case-insensitively (RFC 9562): `urn:uuid:ABC...` on a label finds the passport
# stored as imported (`urn:uuid:abc...` or mixed case), whose id stays as it was written.
_FIND_UUID = _FIND_PASSPORT.where(func.lower(_PASSPORTS.c.id) == bindparam("b_id"))


def find_passport(store: Store, passport_id: str) -> Passport | None:
    """The stored passport with this id, parsed for fusion: the line's lookup per cell."""
    with store.engine.connect() as conn:
        row = conn.execute(_FIND_EXACT, {"b_id": passport_id}).first()
        if row is None and _is_uuid_urn(passport_id):
            row = conn.execute(_FIND_UUID, {"b_id": passport_id.lower()}).first()
    return passport_of(row) if row is not None else None


def authenticity_now(row: Any, now: datetime) -> tuple[str, str]:
    """The stored (verdict, reason) of a passport row, `expired` once its credential is."""
    verdict = row.authenticity or Verdict.unsigned.value
    until = row.credential_valid_until
    if verdict == Verdict.verified and until is not None:
        until = until if until.tzinfo else until.replace(tzinfo=now.tzinfo)
        if now >= until:
            return Verdict.expired.value, f"credential expired on {until.isoformat()}"
    return verdict, row.authenticity_reason or ""


def passport_of(row: Any) -> Passport:
    """The stored passport (ORM or Core row) as the parsed `Passport` fusion takes."""
    authenticity, authenticity_reason = authenticity_now(row, utcnow())
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
        status=row.status,
        expires_on=row.expires_on,
        implausible=row.implausible,
        authenticity=authenticity,
        authenticity_reason=authenticity_reason,
        fields_used={str(k): str(v) for k, v in (row.fields_used or {}).items()},
    )


_SET_AUTHENTICITY = update_by_id(
    _PASSPORTS,
    authenticity=bindparam("b_authenticity"),
    authenticity_reason=bindparam("b_authenticity_reason"),
    credential_valid_until=bindparam("b_credential_valid_until"),
)


def reverify_stored(store: Store, trust: TrustList) -> dict[str, tuple[str, str]]:
    """Verify every stored signed passport again (after a status list or trust list change)
    and store the new verdicts; {passport id: (old verdict, new verdict)} of those changed."""
    changed: dict[str, tuple[str, str]] = {}
    now = utcnow()
    with store.begin() as s:
        conn = s.connection()
        rows = conn.execute(
            select(_PASSPORTS.c.id, _PASSPORTS.c.authenticity, _PASSPORTS.c.credential).where(
                _PASSPORTS.c.credential.is_not(None)
            )
        ).all()
        for pid, old, token in rows:
            auth = reverify(token, trust, now)
            if auth.verdict != old:
                changed[pid] = (old or "", auth.verdict.value)
            conn.execute(
                _SET_AUTHENTICITY,
                {
                    "b_id": pid,
                    "b_authenticity": auth.verdict.value,
                    "b_authenticity_reason": auth.reason,
                    "b_credential_valid_until": auth.valid_until,
                },
            )
    return changed
