"""Several lines, one PostgreSQL database, one HMI showing them all."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from linerig import config_copy, plant_cmd, plant_env
from sqlalchemy import func, select

from plant.cell_records import count_routes
from plant.domain import CellState
from plant.historian import Historian, lines_recording
from plant.store import CellRow, LotRow, ProcessValueRow, Store, upgrade
from plant.users import add_user

pytestmark = pytest.mark.e2e


def _run(cfg: Path, line: str, cells: int, cwd: Path) -> subprocess.Popen[str]:
    env = plant_env()
    return subprocess.Popen(
        plant_cmd(
            cfg,
            "run",
            "--simulate",
            "--line",
            line,
            "--cells",
            str(cells),
            "--rate",
            "150",
            "--dwell-scale",
            "0",
            "--no-hmi",
        ),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_two_lines_on_one_postgres(pg_url: str, tmp_path: Path) -> None:
    upgrade(pg_url)
    n = 400
    procs = {}
    for line, seed in (("L1", 11), ("L2", 22)):
        d = tmp_path / line
        d.mkdir()
        cfg = config_copy(d, db_url=pg_url, heads=2, seed=seed)
        procs[line] = _run(cfg, line, n, d)
    summaries = {}
    for line, proc in procs.items():
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-3000:]
        summaries[line] = json.loads(out.strip().splitlines()[-1])

    store = Store(pg_url)
    for line in ("L1", "L2"):
        s = summaries[line]
        assert s["line"] == line and s["cells"] == n and s["final"] == n
        assert count_routes(store, line) == s["plc_counters"]  # per line: store == its own PLC
    with store.session() as s:
        per_line = dict(
            s.execute(select(CellRow.line, func.count(CellRow.id)).group_by(CellRow.line)).all()
        )
        dupes = s.execute(
            select(CellRow.line, CellRow.seq)
            .group_by(CellRow.line, CellRow.seq)
            .having(func.count() > 1)
        ).all()
        open_states = s.scalar(
            select(func.count(CellRow.id)).where(
                CellRow.state.not_in([CellState.confirmed, CellState.quarantined])
            )
        )
        lot_lines = {lot_line for (lot_line,) in s.execute(select(LotRow.line)).all()}
    assert per_line == {"L1": n, "L2": n}
    assert dupes == [] and open_states == 0
    assert lot_lines == {"L1", "L2"}

    # The historian keeps each line's samples apart, and each tag has one writer: no tag of a
    # line sampled twice at one instant, the ORP only the PLC's (~561 mV at pH 1.5, not a
    # second model's ~450 mV interleaved).
    with store.session() as s:
        twice = s.execute(
            select(ProcessValueRow.line, ProcessValueRow.tag, ProcessValueRow.ts)
            .group_by(ProcessValueRow.line, ProcessValueRow.tag, ProcessValueRow.ts)
            .having(func.count() > 1)
        ).all()
        orp = dict(
            s.execute(
                select(ProcessValueRow.line, func.count())
                .where(ProcessValueRow.tag == "leach.orp_mv")
                .group_by(ProcessValueRow.line)
            ).all()
        )
        first, last = s.execute(
            select(func.min(ProcessValueRow.ts), func.max(ProcessValueRow.ts))
        ).one()
    assert twice == []
    assert set(orp) == {"L1", "L2"} and min(orp.values()) >= 3  # sampled through each run
    assert lines_recording(store, "purification.ph") == ["L1", "L2"]
    for line in ("L1", "L2"):
        pen = Historian(store, line).trend("leach.orp_mv", first, last + timedelta(seconds=1))
        assert sum(b.n for b in pen) == orp[line]
        assert min(b.min for b in pen) > 500 and max(b.max for b in pen) < 620

    # One HMI process shows both lines from the shared database.
    from hmi.app import create_app

    add_user(store, "olga", "operator", "operator-password-1")
    (tmp_path / "hmi").mkdir()
    app = create_app(config_copy(tmp_path / "hmi", db_url=pg_url), store=store)
    with TestClient(app) as client:
        token = client.post(
            "/api/login", json={"name": "olga", "password": "operator-password-1"}
        ).json()["token"]
        lines = client.get("/api/lines", headers={"Authorization": f"Bearer {token}"}).json()
    shown = {item["line"]: item for item in (lines["lines"] if isinstance(lines, dict) else lines)}
    assert set(shown) == {"L1", "L2"}
    store.close()


def test_alarm_limits_per_line_on_one_postgres(pg_url: str, tmp_path: Path) -> None:
    """Two running lines on one database, their limits set through one HMI's API: a limit of
    L2 alarms on L2 alone, the every-line limit acts on the line without its own."""
    from hmi.app import create_app

    upgrade(pg_url)
    store = Store(pg_url)
    add_user(store, "erin", "engineer", "engineer-password-1")
    (tmp_path / "hmi").mkdir()
    app = create_app(config_copy(tmp_path / "hmi", db_url=pg_url), store=store)
    with TestClient(app) as client:
        token = client.post(
            "/api/login", json={"name": "erin", "password": "engineer-password-1"}
        ).json()["token"]
        client.headers["Authorization"] = f"Bearer {token}"

        def put(limit: dict[str, object]) -> None:
            r = client.put("/api/alarm-limits", json=limit | {"tag": "leach.ph", "unit": "pH"})
            assert r.status_code == 200, r.text

        # The leach runs at pH 1.5: a high limit of 1.0 is crossed, one of 2.5 is not.
        put({"kind": "high", "limit": 2.5})  # every line
        put({"kind": "high", "limit": 1.0, "line": "L2"})
        r = client.put("/api/alarm-limits", json={"tag": "leach.ph", "kind": "high",
                                                   "limit": 1.0, "line": "L 2"})  # fmt: skip
        assert r.status_code == 422 and "line" in r.text
        acting = {
            line: [(x["line"], x["limit"]) for x in client.get(
                "/api/alarm-limits", params={"line": line}).json()]
            for line in ("L1", "L2")
        }  # fmt: skip
        assert acting == {"L1": [("*", 2.5)], "L2": [("L2", 1.0)]}

        procs = {}
        for line, seed in (("L1", 11), ("L2", 22)):
            d = tmp_path / line
            d.mkdir()
            cfg = config_copy(d, db_url=pg_url, heads=2, seed=seed)
            procs[line] = _run(cfg, line, 1500, d)
        for proc in procs.values():
            _out, err = proc.communicate(timeout=400)
            assert proc.returncode == 0, err[-3000:]

        def high(line: str) -> list[dict[str, object]]:
            r = client.get("/api/alarms", params={"view": "history", "line": line,
                                                  "source": "process"})  # fmt: skip
            assert r.status_code == 200, r.text
            return [a for a in r.json()["alarms"] if a["code"] == "leach.ph.high"]

        (l2,) = high("L2")
        assert l2["line"] == "L2" and "limit 1" in str(l2["message"])
        assert high("L1") == []
        r = client.get("/api/trends", params={"tag": "leach.ph", "line": "L2"})
        assert [x["line"] for x in r.json()["limits"]] == ["L2"]
        # Deleting L2's own limit leaves it the every-line one.
        r = client.delete("/api/alarm-limits/leach.ph/high", params={"line": "L2"})
        assert r.status_code == 200, r.text
        assert [x["line"] for x in client.get(
            "/api/alarm-limits", params={"line": "L2"}).json()] == ["*"]  # fmt: skip
        audit = client.get("/api/audit", params={"action": "alarm.limit"}).json()
        targets = {a["target"] for a in (audit["entries"] if isinstance(audit, dict) else audit)}
        assert {"limit:leach.ph:high", "limit:L2:leach.ph:high"} <= targets
    store.close()
