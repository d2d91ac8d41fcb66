"""HMI security against a real migrated SQLite store: sessions and WebSockets end on user
changes, login throttling per account and client, trusted proxies, browser headers, non-finite
numbers, the OpenAPI error answers, vendored API docs, the login form's CSRF token and the first
admin password file (docs/hmi.md, Security)."""

from __future__ import annotations

import math
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from test_hmi_api import CHEAP_HASH, PASSWORD, Hmi, make_hmi

from hmi.app import create_app
from hmi.auth import THROTTLE_KEYS_SWEEP, LoginThrottle
from plant.store import upgrade

SNAPSHOTS_BEFORE_CLOSE = 5  # the socket is checked twice a second and a snapshot sent once


@pytest.fixture
def hmi(sqlite_url: str, tmp_path: Path) -> Iterator[Hmi]:
    yield from make_hmi(sqlite_url, tmp_path)


@pytest.fixture
def hmi_both(db_url: str, tmp_path: Path) -> Iterator[Hmi]:
    """The HMI on SQLite and on PostgreSQL (sessions are rows in the store)."""
    yield from make_hmi(db_url, tmp_path)


def _ws_closed(hmi: Hmi, auth: dict[str, str], change: Any) -> int:
    """Open a WebSocket as `auth`, apply `change`, return the close code the server sends."""
    with hmi.client.websocket_connect("/ws", headers=auth) as ws:
        assert ws.receive_json()["topic"] == "snapshot"
        change()
        for _ in range(SNAPSHOTS_BEFORE_CLOSE):
            try:
                ws.receive_json()
            except WebSocketDisconnect as exc:
                return exc.code
    raise AssertionError("the WebSocket kept streaming after its session ended")


@pytest.mark.parametrize(
    "change",
    [{"password": "a-new-password-1"}, {"role": "viewer"}, {"active": False}],
    ids=["password", "role", "disable"],
)
def test_user_change_ends_sessions_and_websockets(hmi_both: Hmi, change: dict[str, Any]) -> None:
    admin = hmi_both.token("admin")
    op = hmi_both.token("operator")
    op_other = hmi_both.token("operator")  # a second session of the same user: ends too

    def patch() -> None:
        r = hmi_both.client.patch("/api/users/operator", headers=admin, json=change)
        assert r.status_code == 200, r.text

    assert _ws_closed(hmi_both, op, patch) == 1008
    assert hmi_both.client.get("/api/me", headers=op).status_code == 401
    assert hmi_both.client.get("/api/me", headers=op_other).status_code == 401
    assert hmi_both.client.get("/api/me", headers=admin).status_code == 200  # others keep theirs
    assert hmi_both.last_audit().action.startswith("user.")


def test_logout_ends_the_open_websocket(hmi: Hmi) -> None:
    op = hmi.token("operator")

    def logout() -> None:
        assert hmi.client.post("/api/logout", headers=op).status_code == 200

    assert _ws_closed(hmi, op, logout) == 1008


def test_user_api_is_admin_only_and_names_bad_input(hmi: Hmi) -> None:
    admin, eng = hmi.token("admin"), hmi.token("engineer")
    r = hmi.client.patch("/api/users/viewer", headers=eng, json={"active": False})
    assert r.status_code == 403
    r = hmi.client.patch("/api/users/nobody", headers=admin, json={"active": False})
    assert r.status_code == 404 and "nobody" in r.json()["detail"]
    r = hmi.client.patch("/api/users/viewer", headers=admin, json={"password": "short"})
    assert r.status_code == 422 and "at least 10 characters" in r.json()["detail"]
    listed = hmi.client.get("/api/users", headers=admin).json()
    assert {"name": "viewer", "role": "viewer", "active": True} in listed


def _login(hmi: Hmi, name: str, password: str, forwarded_for: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    body = {"name": name, "password": password}
    return hmi.client.post("/api/login", json=body, headers=headers).status_code


def test_correct_logins_in_between_do_not_reset_the_throttle(
    sqlite_url: str, tmp_path: Path
) -> None:
    for h in make_hmi(sqlite_url, tmp_path, "login_max_failures = 5\n"):
        codes = []
        for _ in range(3):  # 4 wrong + 1 right, repeated
            codes += [_login(h, "operator", "wrong") for _ in range(4)]
            codes.append(_login(h, "operator", PASSWORD))
        assert codes[:5] == [401, 401, 401, 401, 200]
        assert codes[-1] == 429 and 429 in codes[5:10]


def test_throttle_counts_per_account_across_clients(sqlite_url: str, tmp_path: Path) -> None:
    """Guessing one account's password from many (proxied) clients is throttled too."""
    for h in make_hmi(
        sqlite_url,
        tmp_path,
        "login_max_failures = 3\n",
        hmi_toml='trusted_proxies = ["127.0.0.1"]\n',
        client=("127.0.0.1", 40000),
    ):
        codes = [_login(h, "engineer", "wrong", f"203.0.113.{i}") for i in range(1, 5)]
        assert codes == [401, 401, 401, 429]
        # another account from a fresh client is not affected
        assert _login(h, "operator", PASSWORD, "203.0.113.50") == 200


def test_forwarded_for_is_honoured_only_from_trusted_proxies(
    sqlite_url: str, tmp_path: Path
) -> None:
    # Not a trusted proxy: a new X-Forwarded-For per request buys no guesses.
    for h in make_hmi(sqlite_url, tmp_path, "login_max_failures = 3\n", client=("127.0.0.1", 1)):
        codes = [_login(h, f"nobody{i}", "wrong", f"198.51.100.{i}") for i in range(4)]
        assert codes == [401, 401, 401, 429]
        assert h.last_audit().target == "client:127.0.0.1"


def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Behind a configured reverse proxy, the client it names is the one counted and audited."""
    for h in make_hmi(
        sqlite_url,
        tmp_path,
        "login_max_failures = 3\n",
        hmi_toml='trusted_proxies = ["127.0.0.0/8"]\n',
        client=("127.0.0.1", 1),
    ):
        codes = [_login(h, f"nobody{i}", "wrong", "10.9.8.7, 198.51.100.9") for i in range(4)]
        assert codes == [401, 401, 401, 429]
        assert h.last_audit().target == "client:198.51.100.9"
        assert _login(h, "nobody", "wrong", "198.51.100.10") == 401  # another client may try


def test_security_headers_on_every_response(hmi: Hmi) -> None:
    op = hmi.token("operator")
    c = hmi.client
    responses = {
        "login page": c.get("/login"),
        "api": c.get("/api/me", headers=op),
        "api error": c.get("/api/me"),
        "static": c.get("/static/hmi.js"),
        "not found": c.get("/no/such/page"),
        "openapi": c.get("/openapi.json"),
        "docs": c.get("/docs"),
        "metrics": c.get("/metrics"),
    }
    for what, r in responses.items():
        csp = r.headers.get("content-security-policy", "")
        script_src = re.search(r"script-src ([^;]*)", csp)
        assert script_src and "'unsafe-inline'" not in script_src.group(1), (what, csp)
        assert "frame-ancestors 'none'" in csp, what
        assert r.headers.get("x-frame-options") == "DENY", what
        assert r.headers.get("x-content-type-options") == "nosniff", what
        assert r.headers.get("referrer-policy") == "no-referrer", what


def test_pages_have_no_inline_script_and_docs_script_has_the_nonce(hmi: Hmi) -> None:
    c = hmi.client
    c.cookies.clear()
    token = re.search(r"name=csrf value='([^']+)'", c.get("/login").text)
    assert token
    data = {"name": "engineer", "password": PASSWORD, "csrf": token.group(1)}
    assert c.post("/login", data=data, follow_redirects=False).status_code == 303
    for path in ("/", "/cells", "/alarms", "/purity", "/classifier", "/setpoints", "/login"):
        html = c.get(path).text
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == [], path
        assert " style=" not in html and "<style" not in html, path
    for path in ("/docs", "/redoc"):
        r = c.get(path)
        nonce = re.search(r"'nonce-([^']+)'", r.headers["content-security-policy"])
        inline = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>", r.text)
        assert nonce and all(f'nonce="{nonce.group(1)}"' in attrs for attrs in inline), path


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PUT", "/api/alarm-limits", '{"tag":"leach.ph","kind":"low","limit":1,"deadband":NaN}',
         "deadband"),
        ("PUT", "/api/alarm-limits", '{"tag":"leach.ph","kind":"low","limit":Infinity}', "limit"),
        ("POST", "/api/alarms/1/shelve", '{"reason":"x","minutes":NaN}', "minutes"),
        ("POST", "/api/setpoints", '{"name":"leach.ph","value":-Infinity,"confirm":true}',
         "value"),
        ("POST", "/api/routing/thresholds", '{"name":"min_confidence","value":NaN,"confirm":true}',
         "value"),
    ],
)  # fmt: skip
def test_non_finite_numbers_are_refused_naming_the_field(
    hmi: Hmi, method: str, path: str, body: str, field: str
) -> None:
    headers = hmi.token("engineer") | {"Content-Type": "application/json"}
    r = hmi.client.request(method, path, content=body, headers=headers)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert [e["loc"][-1] for e in errors] == [field] and "finite" in errors[0]["msg"]
    assert not any(isinstance(e.get("input"), float) and math.isnan(e["input"]) for e in errors)


def test_openapi_declares_bearer_scheme_and_error_answers(hmi: Hmi) -> None:
    doc = hmi.client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes == {
        "HTTPBearer": {"type": "http", "scheme": "bearer", "description": schemes["HTTPBearer"]
                       ["description"]}
    }  # fmt: skip
    ops = {(m.upper(), p): op for p, item in doc["paths"].items() for m, op in item.items()}
    public = {("GET", "/api/health"), ("POST", "/api/login")}
    for key, op in ops.items():
        if key not in public:
            assert op.get("security") == [{"HTTPBearer": []}], key
            assert {"401", "403"} <= set(op["responses"]), key
    declared = {code for op in ops.values() for code in op["responses"]}
    assert {"401", "403", "404", "409", "422", "428", "429"} <= declared
    assert "429" in ops[("POST", "/api/login")]["responses"]
    assert "428" in ops[("POST", "/api/setpoints")]["responses"]
    assert {"404", "409"} <= set(ops[("POST", "/api/alarms/{alarm_id}/ack")]["responses"])


VENDORED = (
    "swagger-ui-bundle.js",
    "swagger-ui.css",
    "swagger-ui.LICENSE",
    "redoc.standalone.js",
    "redoc.LICENSE",
)


def test_docs_and_redoc_use_only_vendored_assets(hmi: Hmi) -> None:
    for path in ("/docs", "/redoc"):
        html = hmi.client.get(path).text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert urls and all(u.startswith("/static/vendor/") for u in urls), (path, urls)
        for u in urls:
            assert hmi.client.get(u).status_code == 200, u
    static = Path(__file__).resolve().parent.parent / "hmi" / "static" / "vendor"
    assert all((static / f).is_file() for f in VENDORED)


def test_login_form_needs_its_csrf_token(hmi: Hmi) -> None:
    c = hmi.client
    page = c.get("/login")
    token = re.search(r"name=csrf value='([^']+)'", page.text)
    assert token and "httponly" in page.headers["set-cookie"].lower()
    creds = {"name": "operator", "password": PASSWORD}
    for forged in ({}, {"csrf": "guessed"}):
        r = c.post("/login", data=creds | forged, follow_redirects=False)
        assert r.status_code == 403 and "log in again" in r.text
        assert "plant_session" not in r.headers.get("set-cookie", "")
    c.cookies.clear()  # a cross-site post: the form's token without the browser's cookie
    r = c.post("/login", data=creds | {"csrf": token.group(1)}, follow_redirects=False)
    assert r.status_code == 403
    token = re.search(r"name=csrf value='([^']+)'", c.get("/login").text)
    assert token
    r = c.post("/login", data=creds | {"csrf": token.group(1)}, follow_redirects=False)
    assert r.status_code == 303 and "plant_session=" in r.headers["set-cookie"]


def test_first_admin_password_goes_to_an_owner_only_file(
    sqlite_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    upgrade(sqlite_url)
    (tmp_path / "plant.toml").write_text(
        f'[database]\nurl = "{sqlite_url}"\n[plant]\ndata_dir = "{tmp_path / "var"}"\n'
    )
    (tmp_path / "users.toml").write_text(CHEAP_HASH)
    with TestClient(create_app(tmp_path)) as c:
        printed = capfd.readouterr().err
        m = re.search(r"user 'admin'; its password is in (\S+)", printed)
        assert m, printed
        path = Path(m.group(1))
        assert path == tmp_path / "var" / "admin-password.txt"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        password = path.read_text().strip()
        assert len(password) >= 10 and password not in printed
        r = c.post("/api/login", json={"name": "admin", "password": password})
        assert r.json()["role"] == "admin"
    with TestClient(create_app(tmp_path)):  # users exist: nothing created, nothing printed
        assert "admin" not in capfd.readouterr().err


def test_throttle_forgets_expired_names_when_many_were_tried() -> None:
    """Guessing with ever new user names does not grow the throttle's table without bound."""
    # A window long enough that a loaded machine fills the table well within it.
    throttle = LoginThrottle(max_failures=1, window_s=3.0)
    for i in range(THROTTLE_KEYS_SWEEP + 1):
        throttle.failed(f"user:n{i}")
    assert throttle.retry_after("user:n7") is not None
    time.sleep(3.1)
    throttle.failed("user:last")
    assert throttle.tracked() == 1
