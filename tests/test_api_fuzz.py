"""schemathesis against the HMI's own OpenAPI schema, in process (ASGI): no request, valid or
not, gets a 500 or a status code or body the schema does not declare, and every operation refuses
callers below its role (401 without a login, 403 below the role) - run anonymously, as an
operator and as an admin (docs/robustness.md)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from schemathesis.specs.openapi.schemas import OpenApiSchema

from hmi import api as hmi_api
from hmi import weighings as hmi_weighings
from hmi.app import create_app
from hmi.auth import open_session
from plant.alarms import Alarms
from plant.domain import Role
from plant.events import EventBus
from plant.store import Store, upgrade
from plant.users import add_user, get_user, use_hash_cost

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = 12  # per operation and caller: 27 operations x 3 callers x 12 requests

# Who may call what: the contract, written down here rather than read back from the code, so a
# route whose role was lost or lowered fails this test. None = public.
ROLES: dict[tuple[str, str], Role | None] = {
    ("GET", "/api/health"): None,
    ("POST", "/api/login"): None,
    ("POST", "/api/logout"): Role.viewer,
    ("GET", "/api/me"): Role.viewer,
    ("GET", "/api/lines"): Role.viewer,
    ("GET", "/api/cells"): Role.viewer,
    ("GET", "/api/cells/{cell_id}"): Role.viewer,
    ("GET", "/api/cells/{cell_id}/spectrum"): Role.viewer,
    ("POST", "/api/cells/{cell_id}/release"): Role.operator,
    ("POST", "/api/lots/{lot_id}/assay"): Role.engineer,
    ("POST", "/api/weighings"): Role.engineer,
    ("GET", "/api/alarms"): Role.viewer,
    ("POST", "/api/alarms/{alarm_id}/ack"): Role.operator,
    ("POST", "/api/alarms/{alarm_id}/shelve"): Role.operator,
    ("POST", "/api/alarms/{alarm_id}/unshelve"): Role.operator,
    ("POST", "/api/alarms/{alarm_id}/suppress"): Role.engineer,
    ("GET", "/api/alarm-limits"): Role.viewer,
    ("PUT", "/api/alarm-limits"): Role.engineer,
    ("DELETE", "/api/alarm-limits/{tag}/{kind}"): Role.engineer,
    ("GET", "/api/purity/batches"): Role.viewer,
    ("GET", "/api/trends"): Role.viewer,
    ("GET", "/api/alarms/journal"): Role.viewer,
    ("GET", "/api/purity/overview"): Role.viewer,
    ("GET", "/api/classifier"): Role.viewer,
    ("POST", "/api/classifier/activate"): Role.engineer,
    ("GET", "/api/setpoints"): Role.engineer,
    ("POST", "/api/setpoints"): Role.engineer,
    ("POST", "/api/routing/thresholds"): Role.engineer,
    ("POST", "/api/routing/routes"): Role.engineer,
    ("GET", "/api/audit"): Role.engineer,
    ("POST", "/api/users"): Role.admin,
    ("GET", "/api/users"): Role.admin,
    ("PATCH", "/api/users/{name}"): Role.admin,
}
RANK = {Role.viewer: 0, Role.operator: 1, Role.engineer: 2, Role.admin: 3}
ROUTES = sorted(
    (method, route.path)
    for router in (hmi_api.router, hmi_weighings.router)
    for route in router.routes
    if isinstance(route, APIRoute)
    for method in route.methods or ()
)
CALLERS: dict[str, Role | None] = {
    "anonymous": None,
    "operator": Role.operator,
    "admin": Role.admin,
}


@dataclass
class Api:
    schema: OpenApiSchema
    store: Store

    def bearer(self, role: Role | None) -> dict[str, str]:
        """A fresh session of the user named after the role (none for anonymous)."""
        if role is None:
            return {}
        user = get_user(self.store, role.value)
        assert user is not None
        token, _, _ = open_session(self.store, user, 8.0)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The HMI on a migrated SQLite store with users, a quarantined cell and standing alarms."""
    tmp = tmp_path_factory.mktemp("hmi_fuzz")
    url = f"sqlite:///{tmp / 'plant.db'}"
    upgrade(url)
    cfg = tmp / "config"
    cfg.mkdir()
    (cfg / "plant.toml").write_text(
        f'[plant]\ndata_dir = "{tmp / "var"}"\n[database]\nurl = "{url}"\n'
    )
    (cfg / "routing.toml").write_text((REPO / "config" / "routing.toml").read_text())
    (cfg / "users.toml").write_text("[auth]\nargon2_time_cost = 1\nargon2_memory_kib = 64\n")
    use_hash_cost(1, 64)
    store = Store(url)
    for role in Role:
        add_user(store, role.value, role.value, "correct horse battery")
    store.add_cells(
        [
            {
                "line": "L1",
                "seq": seq,
                "passport_id": f"BP-{seq}",
                "chemistry": "UNKNOWN",
                "confidence": 0.4,
                "route": "quarantine",
                "reason": "low_confidence: 0.40",
                "state": "confirmed",
                "spectrum_ref": "missing/spectrum.msa" if seq == 2 else None,
            }
            for seq in (1, 2, 3)
        ]
    )
    alarms = Alarms(store, "L1")
    for code in ("a", "b", "c"):
        alarms.raise_("plc", code, "PLC unreachable")
    app = create_app(cfg, bus=EventBus(), store=store)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        yield Api(schema, store)
    finally:
        shutdown_lifespans()
        store.close()


def test_every_api_route_has_a_stated_role() -> None:
    """A new endpoint must be added to ROLES (and so to this suite) with the role it needs."""
    assert set(ROUTES) == set(ROLES)


def _expected(role_needed: Role | None, caller: Role | None) -> int | None:
    """The status an operation must answer this caller with, or None if it may proceed."""
    if role_needed is None:
        return None
    if caller is None:
        return 401
    return 403 if RANK[caller] < RANK[role_needed] else None


def _unparsed_body(response: Any) -> bool:
    """FastAPI refuses a body that is not UTF-8 JSON at all (400, or 422 `json_invalid`) before
    any dependency - the login and role check - runs: refused all the same, and it tells the
    caller nothing the public schema does not (docs/robustness.md)."""
    if response.status_code == 400:
        return bool(response.json().get("detail") == "There was an error parsing the body")
    if response.status_code != 422:
        return False
    errors = response.json().get("detail", [])
    return bool(errors) and all(e.get("type") == "json_invalid" for e in errors)


@pytest.mark.parametrize("caller", sorted(CALLERS))
@pytest.mark.parametrize("route", ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_no_500_and_roles_enforced(api: Api, route: tuple[str, str], caller: str) -> None:
    method, path = route
    operation = api.schema[path][method]
    role = CALLERS[caller]
    must = _expected(ROLES[route], role)
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    # Logging out ends the session: that operation gets a fresh one per request.
    fixed = None if route == ("POST", "/api/logout") else api.bearer(role)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        headers = fixed if fixed is not None else api.bearer(role)
        response = case.call(headers=headers)
        shown = (
            f"{case.as_curl_command(headers=headers)}\n-> {response.status_code} {response.text}"
        )
        # No 5xx: a missing or failing part (model registry, routing file, lot analyser) is a
        # 409 naming it, an answer the caller can act on.
        assert response.status_code < 500, shown
        # Every answer, error or not, is one the OpenAPI document declares, in its shape.
        case.validate_response(
            response, checks=[status_code_conformance, response_schema_conformance]
        )
        if headers and response.request.headers.get("Authorization") != headers["Authorization"]:
            # A negative case without (or with a mangled) bearer token: refused as anonymous.
            assert (
                ROLES[route] is None or response.status_code == 401 or _unparsed_body(response)
            ), shown
        elif must is not None:
            assert response.status_code == must or _unparsed_body(response), shown
        elif role is not None and ROLES[route] is not None:
            assert response.status_code not in (401, 403), shown

    check()
