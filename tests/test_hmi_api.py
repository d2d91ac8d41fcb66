"""HMI JSON API against a real migrated store: roles, audit, CSRF, throttling, live data."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from starlette.websockets import WebSocketDisconnect

from drivers.spectra import Spectrum, write_msa
from hmi.app import create_app
from plant.alarms import Alarms
from plant.domain import AlarmState
from plant.events import Event, EventBus
from plant.metrics import DECISION_LATENCY
from plant.status import LineStatus, write_status
from plant.store import AuditRow, PassportRow, Store, upgrade
from plant.users import add_user, use_hash_cost

REPO = Path(__file__).resolve().parent.parent

PASSWORD = "correct horse battery"
ROLES = ("viewer", "operator", "engineer", "admin")
ROUTING_TOML = (REPO / "config" / "routing.toml").read_text()


@dataclass
class Hmi:
    client: TestClient
    store: Store
    bus: EventBus
    config_dir: Path

    def token(self, name: str) -> dict[str, str]:
        r = self.client.post("/api/login", json={"name": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def audit_count(self, user: str | None = None) -> int:
        q = select(func.count(AuditRow.id))
        if user:
            q = q.where(AuditRow.user == user)
        with self.store.session() as s:
            return int(s.scalar(q) or 0)

    def last_audit(self) -> AuditRow:
        with self.store.session() as s:
            row = s.scalars(select(AuditRow).order_by(AuditRow.id.desc()).limit(1)).first()
        assert row is not None
        return row


# The least argon2 cost keeps the many logins of these tests fast; production uses the default.
CHEAP_HASH = "[auth]\nargon2_time_cost = 1\nargon2_memory_kib = 64\n"


def make_hmi(
    url: str,
    tmp_path: Path,
    auth_toml: str = "",
    *,
    hmi_toml: str = "",
    client: tuple[str, int] = ("testclient", 50000),
) -> Iterator[Hmi]:
    """The HMI on a migrated store with one user per role; `client`: the peer address seen."""
    upgrade(url)
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "plant.toml").write_text(
        f'[database]\nurl = "{url}"\n\n[plant]\ndata_dir = "{tmp_path}"\n\n[hmi]\n{hmi_toml}'
    )
    (cfg / "routing.toml").write_text(ROUTING_TOML)
    (cfg / "users.toml").write_text(CHEAP_HASH + auth_toml)
    use_hash_cost(1, 64)
    store = Store(url)
    for role in ROLES:
        add_user(store, role, role, PASSWORD)
    bus = EventBus()
    with TestClient(create_app(cfg, bus=bus, store=store), client=client) as tc:
        yield Hmi(tc, store, bus, cfg)
    store.close()


@pytest.fixture
def hmi(sqlite_url: str, tmp_path: Path) -> Iterator[Hmi]:
    yield from make_hmi(sqlite_url, tmp_path)


@pytest.fixture
def hmi_both(db_url: str, tmp_path: Path) -> Iterator[Hmi]:
    """The HMI on SQLite and on PostgreSQL."""
    yield from make_hmi(db_url, tmp_path)


def quarantined_cell(store: Store) -> int:
    store.add_cells(
        [
            {
                "line": "L1",
                "seq": store.count_cells() + 1,
                "passport_id": "BP-1",
                "chemistry": "UNKNOWN",
                "confidence": 0.4,
                "route": "quarantine",
                "reason": "confidence 0.40 below 0.90",
                "state": "confirmed",
            }
        ]
    )
    with store.session() as s:
        from plant.store import CellRow

        return int(s.scalar(select(func.max(CellRow.id))) or 0)


def alarm(store: Store, state: str = "standing") -> int:
    alarms = Alarms(store, "L1")
    row = alarms.raise_("plc", f"code{store.count_cells()}-{id(object())}", "PLC unreachable")
    if state == "shelved":
        from datetime import timedelta

        alarms.shelve(row.id, "setup", "test", timedelta(minutes=5), max_duration=timedelta(1))
    return row.id


@dataclass(frozen=True)
class Write:
    """One write endpoint: the least role allowed, how to make its target, and a valid body."""

    method: str
    path: str
    role: str
    setup: Callable[[Store], Any] | None
    body: dict[str, Any] | None


WRITES = [
    Write("POST", "/api/cells/{}/release", "operator", quarantined_cell,
          {"route": "hydromet", "reason": "label re-read: NMC"}),
    Write("POST", "/api/alarms/{}/ack", "operator", alarm, {"note": "seen"}),
    Write("POST", "/api/alarms/{}/shelve", "operator", alarm,
          {"reason": "sensor swap", "minutes": 30}),
    Write("POST", "/api/alarms/{}/unshelve", "operator", lambda s: alarm(s, "shelved"), None),
    Write("POST", "/api/alarms/{}/suppress", "engineer", alarm, {"reason": "out of service"}),
    Write("PUT", "/api/alarm-limits", "engineer", None,
          {"tag": "leach.ph", "kind": "high", "limit": 1.5, "deadband": 0.1, "unit": "pH"}),
    Write("POST", "/api/setpoints", "engineer", None,
          {"name": "leach.ph", "value": 1.2, "confirm": True}),
    Write("POST", "/api/routing/thresholds", "engineer", None,
          {"name": "hydromet_min_confidence", "value": 0.92, "confirm": True}),
    Write("POST", "/api/users", "admin", None,
          {"name": "newbie", "role": "operator", "password": "long enough pw"}),
    Write("POST", "/api/classifier/activate", "engineer", None, {"version": "default"}),
    Write("POST", "/api/logout", "viewer", None, None),
]  # fmt: skip


@pytest.mark.parametrize("w", WRITES, ids=lambda w: f"{w.method} {w.path}")
def test_write_endpoint_refuses_wrong_role_and_audits_success(hmi_both: Hmi, w: Write) -> None:
    h = hmi_both
    target = w.setup(h.store) if w.setup else None
    path = w.path.format(target)
    kwargs: dict[str, Any] = {"json": w.body} if w.body is not None else {}

    assert h.client.request(w.method, path, **kwargs).status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert h.client.request(w.method, path, headers=bad, **kwargs).status_code == 401
    below = ROLES[ROLES.index(w.role) - 1] if w.role != "viewer" else None
    if below:
        r = h.client.request(w.method, path, headers=h.token(below), **kwargs)
        assert r.status_code == 403, r.text
    assert h.audit_count(w.role) == 0 or w.role == "viewer"
    before = h.audit_count(w.role)
    r = h.client.request(w.method, path, headers=h.token(w.role), **kwargs)
    assert r.status_code in (200, 201), r.text
    assert h.audit_count(w.role) >= before + 2  # the login and the write itself
    last = h.last_audit()
    assert last.user == w.role and last.action != "login"


def test_write_results_are_visible_with_old_and_new(hmi: Hmi) -> None:
    h = hmi
    eng = h.token("engineer")
    r = h.client.post(
        "/api/setpoints", headers=eng, json={"name": "leach.ph", "value": 9, "confirm": True}
    )
    assert r.status_code == 422 and "outside 0-2 pH" in r.json()["detail"]
    r = h.client.post("/api/setpoints", headers=eng, json={"name": "leach.ph", "value": 1.4})
    assert r.status_code == 428  # not confirmed
    r = h.client.post(
        "/api/setpoints", headers=eng, json={"name": "leach.ph", "value": 1.4, "confirm": True}
    )
    assert r.json() == {"name": "leach.ph", "old": 1.0, "new": 1.4}
    last = h.last_audit()
    assert (last.action, last.old, last.new) == ("setpoint", "1", "1.4")

    r = h.client.post(
        "/api/routing/thresholds",
        headers=eng,
        json={"name": "hydromet_min_confidence", "value": 0.95, "confirm": True},
    )
    assert r.json()["old"] == 0.9
    text = (h.config_dir / "routing.toml").read_text()
    assert "hydromet_min_confidence = 0.95\n" in text
    assert "reuse_soh_pct = 80.0    # passport state of health" in text
    r = h.client.post(
        "/api/routing/thresholds",
        headers=eng,
        json={"name": "reuse_soh_pct", "value": 101, "confirm": True},
    )
    assert r.status_code == 422 and "outside 0-100" in r.json()["detail"]

    cell_id = quarantined_cell(h.store)
    op = h.token("operator")
    r = h.client.post(f"/api/cells/{cell_id}/release", headers=op, json={"route": "hydromet"})
    assert r.status_code == 422  # reason required
    r = h.client.post(
        f"/api/cells/{cell_id}/release", headers=op, json={"route": "reject", "reason": "NiCd"}
    )
    assert (
        r.json()["route"] == "reject"
        and "released from quarantine by operator" in (r.json()["reason"])
    )
    r = h.client.post(
        f"/api/cells/{cell_id}/release", headers=op, json={"route": "hydromet", "reason": "x"}
    )
    assert r.status_code == 409  # no longer in quarantine

    a = alarm(h.store)
    r = h.client.post(f"/api/alarms/{a}/shelve", headers=op, json={"reason": "x", "minutes": 600})
    assert r.status_code == 409 and "capped at 8 h" in r.json()["detail"]
    r = h.client.post(f"/api/alarms/{a}/ack", headers=op, json={"note": "on it"})
    assert r.json()["state"] == AlarmState.active_acked and r.json()["acked_by"] == "operator"
    assert h.client.post(f"/api/alarms/{a}/ack", headers=op).status_code == 409
    listed = h.client.get("/api/alarms", headers=op).json()
    assert [x["id"] for x in listed["alarms"]] == [a] and listed["flood"]["active"] is False


def test_cookie_session_needs_csrf_token_and_pages_check_role(hmi: Hmi) -> None:
    c = hmi.client
    r = c.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/"
    form_csrf = re.search(r"name=csrf value='([^']+)'", c.get("/login").text)
    assert form_csrf
    r = c.post(
        "/login",
        data={"name": "operator", "password": PASSWORD, "next": "/alarms"}
        | {"csrf": form_csrf.group(1)},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/alarms"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    a = alarm(hmi.store)
    r = c.post(f"/api/alarms/{a}/ack", json={})
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    csrf = c.get("/api/me").json()["csrf"]
    assert c.post(f"/api/alarms/{a}/ack", json={}, headers={"X-CSRF-Token": csrf}).is_success
    page = c.get("/setpoints")
    assert page.status_code == 403 and "needs the role <b>engineer</b>" in page.text
    assert c.get("/alarms").status_code == 200
    form_csrf = re.search(r"name=csrf value='([^']+)'", c.get("/login").text)
    assert form_csrf
    r = c.post(
        "/login",
        data={"name": "x", "password": "y", "next": "//evil.example/", "csrf": form_csrf.group(1)},
    )
    assert r.status_code == 401 and "wrong user name or password" in r.text


def test_login_is_rate_limited_per_client(sqlite_url: str, tmp_path: Path) -> None:
    for h in make_hmi(sqlite_url, tmp_path, "login_max_failures = 3\n"):
        bad = {"name": "operator", "password": "wrong"}
        codes = [h.client.post("/api/login", json=bad).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        r = h.client.post("/api/login", json={"name": "operator", "password": PASSWORD})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert h.last_audit().action == "login.failed"


def test_cells_search_detail_and_spectrum(hmi_both: Hmi, tmp_path: Path) -> None:
    h = hmi_both
    e = 0.01 * np.arange(2048)
    counts = 5 + 900 * np.exp(-0.5 * ((e - 7.478) / 0.07) ** 2)  # a Ni Kα peak
    msa = write_msa(Spectrum(counts, 0.0, 0.01, 2.0, source="t"), tmp_path / "c1.msa")
    with h.store.begin() as s:
        s.add(PassportRow(id="BP-77", model="batterypass", chemistry="NMC", payload={}))
    h.store.add_cells(
        [
            {"line": "L1", "seq": 1, "passport_id": "BP-77", "chemistry": "NMC811",
             "confidence": 0.99, "route": "hydromet", "state": "confirmed",
             "reason": "NMC811 from spectrum 0.99, passport agrees", "spectrum_ref": str(msa),
             "model_version": "clf-3"},
            {"line": "L1", "seq": 2, "passport_id": "BP-78", "chemistry": "LFP",
             "confidence": 0.97, "route": "black_mass", "state": "confirmed",
             "reason": "LFP from spectrum 0.97", "spectrum_ref": None, "model_version": None},
        ]
    )  # fmt: skip
    v = h.token("viewer")
    found = h.client.get("/api/cells?passport_id=BP-77", headers=v).json()["cells"]
    assert [c["seq"] for c in found] == [1]
    assert [
        c["seq"] for c in h.client.get("/api/cells?route=black_mass", headers=v).json()["cells"]
    ] == [2]
    d = h.client.get(f"/api/cells/{found[0]['id']}", headers=v).json()
    assert d["passport"]["chemistry"] == "NMC" and d["model_version"] == "clf-3"
    sp = h.client.get(f"/api/cells/{found[0]['id']}/spectrum", headers=v).json()
    peak = sp["energy_kev"][int(np.argmax(sp["counts"]))]
    assert abs(peak - 7.478) < 0.02
    assert {"element": "Ni", "line": "Ka", "kev": 7.478} in sp["lines"]
    other = h.client.get("/api/cells?passport_id=BP-78", headers=v).json()["cells"][0]["id"]
    r = h.client.get(f"/api/cells/{other}/spectrum", headers=v)
    assert r.status_code == 404 and "has no spectrum" in r.json()["detail"]
    assert h.client.get("/api/cells/999999", headers=v).status_code == 404


def test_lines_metrics_and_websocket_show_the_line(hmi: Hmi) -> None:
    h = hmi
    write_status(
        h.store,
        LineStatus("L1", True, "ok", "degraded", 600.0, 0.05, {"hydromet": 42, "quarantine": 3}),
    )
    DECISION_LATENCY.labels("L1").observe(0.004)
    v = h.token("viewer")
    (line,) = h.client.get("/api/lines", headers=v).json()
    assert line["counts"] == {"hydromet": 42, "quarantine": 3} and line["stale"] is False
    metrics = h.client.get("/metrics").text
    assert 'plant_cells_total{line="L1",route="hydromet"} 42.0' in metrics
    assert 'plant_plc_healthy{line="L1"} 1.0' in metrics
    assert 'plant_xrf_healthy{line="L1"} 0.0' in metrics
    assert "plant_decision_latency_seconds_bucket" in metrics

    with pytest.raises(WebSocketDisconnect), h.client.websocket_connect("/ws") as ws:
        ws.receive_json()
    with h.client.websocket_connect("/ws", headers=v) as ws:
        snap = ws.receive_json()
        assert snap["topic"] == "snapshot"
        assert snap["data"]["lines"][0]["counts"]["hydromet"] == 42
        h.bus.publish_threadsafe(Event("cell", "L1", {"seq": 7, "route": "hydromet"}))
        msg = ws.receive_json()
        while msg["topic"] != "cell":
            msg = ws.receive_json()
        assert msg["data"] == {"seq": 7, "route": "hydromet"}


def test_openapi_lists_the_documented_endpoints(hmi: Hmi) -> None:
    paths = hmi.client.get("/openapi.json").json()["paths"]
    for p in (
        "/api/health",
        "/api/login",
        "/api/cells",
        "/api/cells/{cell_id}",
        "/api/cells/{cell_id}/release",
        "/api/alarms",
        "/api/alarms/{alarm_id}/ack",
        "/api/alarms/{alarm_id}/shelve",
        "/api/purity/batches",
        "/api/lines",
    ):
        assert p in paths, p
    assert hmi.client.get("/api/health").json()["status"] == "ok"


def test_classifier_page_lists_models_and_activation_is_refused_for_unknown(
    hmi: Hmi,
) -> None:
    h = hmi
    d = h.client.get("/api/classifier", headers=h.token("viewer")).json()
    models = d["models"]
    assert models["available"] and models["active"] == "default"
    assert [m["name"] for m in models["models"]] == ["default"]
    assert models["models"][0]["metrics"]  # the evaluation figures travel with the model
    r = h.client.post(
        "/api/classifier/activate", json={"version": "nope"}, headers=h.token("engineer")
    )
    assert r.status_code == 404 and "nope" in r.text
