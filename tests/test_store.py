"""The store on SQLite and PostgreSQL: migrations, bulk cells, passport lookups, audit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from plant.store import AuditRow, CellRow, Store, StoreError, schema_status, upgrade


def _cells(n: int, line: str = "L1") -> list[dict[str, object]]:
    now = datetime.now(UTC)
    return [
        {
            "line": line,
            "seq": i,
            "passport_id": f"urn:uuid:pp-{i:07d}",
            "mass_g": 45.0 + (i % 7),
            "chemistry": "NMC811" if i % 3 else "LFP",
            "confidence": 0.99,
            "decision_source": "fused",
            "route": "hydromet" if i % 3 else "black_mass",
            "reason": "test",
            "state": "confirmed",
            "created_at": now,
            "updated_at": now,
        }
        for i in range(n)
    ]


def test_migrate_empty_database_to_head(db_url: str) -> None:
    store = Store(db_url)
    with pytest.raises(StoreError, match="plant db upgrade"):
        store.require_current_schema()
    upgrade(db_url)
    current, head = schema_status(store.engine)
    assert current == head
    store.require_current_schema()
    upgrade(db_url)  # idempotent
    store.close()


@pytest.mark.slow
def test_100k_cells_roundtrip_and_lookup(store: Store) -> None:
    rows = _cells(100_000)
    for start in range(0, len(rows), 20_000):
        store.add_cells(rows[start : start + 20_000])
    assert store.count_cells() == 100_000
    found = store.cells_by_passport("urn:uuid:pp-0054321")
    assert [(c.seq, c.chemistry, c.route) for c in found] == [(54321, "LFP", "black_mass")]
    assert store.cells_by_passport("urn:uuid:nope") == []


def test_line_and_seq_are_unique(store: Store) -> None:
    store.add_cells(_cells(3))
    with pytest.raises(IntegrityError):
        store.add_cells(_cells(1))
    store.add_cells(_cells(1, line="L2"))
    assert store.count_cells("L2") == 1


def test_audit_commits_with_the_change(store: Store) -> None:
    store.add_cells(_cells(1))
    with store.begin() as s:
        cell = s.scalars(select(CellRow)).one()
        store.audit(s, "alice", "cell.release", f"cell:{cell.id}", cell.route, "hydromet")
        cell.route = "hydromet"
    with store.session() as s:
        entry = s.scalars(select(AuditRow)).one()
    assert (entry.user, entry.old, entry.new) == ("alice", "black_mass", "hydromet")
