"""HMI security on a running plant: `plant run --simulate` as a process, used only through its
doors - the first admin's password file, `plant users` in another process ending sessions and
open WebSockets, X-Forwarded-For from loopback not buying login guesses, and the pages and API
docs in Chromium under the Content-Security-Policy with no network beyond the plant."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from linerig import config_copy, plant_cmd, plant_env, stop_run
from test_e2e_live_config import Api, until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from plant.store import upgrade

pytestmark = pytest.mark.e2e
PASSWORD = "engineer-password-1"
# The server checks each socket's session twice a second; this only bounds a failing test.
CLOSE_WAIT_S = 10.0


@dataclass
class Plant:
    cfg: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self) -> Api:
        return Api(f"http://127.0.0.1:{self.port}/api")

    def users(self, *args: str, stdin: str = "") -> None:
        """`plant users ARGS` in its own process, as an administrator would run it."""
        subprocess.run(
            plant_cmd(self.cfg, "users", *args),
            input=stdin,
            text=True,
            check=True,
            capture_output=True,
            env=plant_env(),
        )

    def login(self, name: str, password: str) -> str:
        status, out = self.api().call("POST", "/login", {"name": name, "password": password})
        assert status == 200, out
        return str(out["token"])


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    """`plant run --simulate` on a database without users (so it creates the first admin)."""
    tmp = tmp_path_factory.mktemp("hmisec")
    url = f"sqlite:///{tmp / 'plant.db'}"
    upgrade(url)
    cfg = config_copy(tmp, db_url=url, heads=2)
    port = tomllib.loads((cfg / "plant.toml").read_text())["hmi"]["port"]
    log_path = tmp / "run.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            plant_cmd(cfg, "run", "--simulate", "--rate", "20"),
            cwd=tmp,
            env=plant_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        plant = Plant(cfg, port, proc, log_path)
        try:

            def healthy() -> bool:
                try:
                    return plant.api().call("GET", "/health")[0] == 200
                except OSError:
                    return False

            until("the HMI answers", healthy, proc, 180)
            for name in ("erin", "bob"):
                plant.users("add", name, "--role", "engineer", stdin=f"{PASSWORD}\n{PASSWORD}\n")
            yield plant
        finally:
            stop_run(proc, tmp)


def test_first_admin_password_is_in_an_owner_only_file_not_in_the_log(plant: Plant) -> None:
    log = plant.log.read_text()
    m = re.search(r"user 'admin'; its password is in (\S+)", log)
    assert m, log
    path = Path(m.group(1))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = path.read_text().strip()
    assert password not in log
    api = plant.api()
    api.token = plant.login("admin", password)
    assert api.call("GET", "/me")[1]["role"] == "admin"


def _closed_by(plant: Plant, token: str, change: list[str], stdin: str = "") -> int | None:
    """Open a WebSocket with `token`, run `plant users CHANGE`, return the server's close code."""
    ws_url = f"ws://127.0.0.1:{plant.port}/ws"
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        assert json.loads(ws.recv(timeout=10))["topic"]
        plant.users(*change, stdin=stdin)
        deadline = time.monotonic() + CLOSE_WAIT_S
        try:
            while time.monotonic() < deadline:
                ws.recv(timeout=CLOSE_WAIT_S)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
    raise AssertionError(f"`plant users {' '.join(change)}`: the WebSocket kept streaming")


def test_plant_users_in_another_process_ends_sessions_and_websockets(plant: Plant) -> None:
    new_password = "engineer-password-2"
    changes = [
        (["passwd", "erin"], f"{new_password}\n{new_password}\n", new_password),
        (["role", "erin", "--role", "operator"], "", new_password),
        (["disable", "erin"], "", None),
    ]
    password = PASSWORD
    for change, stdin, next_password in changes:
        token = plant.login("erin", password)
        assert _closed_by(plant, token, change, stdin) == 1008, change
        api = plant.api()
        api.token = token
        assert api.call("GET", "/me")[0] == 401, change
        if next_password is not None:
            password = next_password
    status, _ = plant.api().call("POST", "/login", {"name": "erin", "password": password})
    assert status == 401  # disabled


def test_pages_and_api_docs_work_under_the_csp_without_network(plant: Plant) -> None:
    pytest.importorskip("playwright")
    from test_hmi_browser import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    from playwright.sync_api import Route, expect, sync_playwright

    base = f"http://127.0.0.1:{plant.port}"
    csp_errors: list[str] = []
    blocked: list[str] = []

    def local_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.route("**/*", local_only)
            page.on("console", lambda m: csp_errors.extend(_csp_refusals(m.text)))
            page.goto(f"{base}/login")
            page.fill("input[name=name]", "bob")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            expect(page.locator("#conn")).to_have_text("live", timeout=15_000)
            expect(page.locator("#count-hydromet")).not_to_have_text("–", timeout=30_000)
            for path in ("/cells", "/alarms", "/purity", "/classifier", "/setpoints"):
                page.goto(base + path)
                expect(page.locator("#conn")).to_have_text("live", timeout=15_000)
            page.goto(f"{base}/docs")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text(
                "Plant HMI", timeout=15_000
            )
            expect(page.locator(".opblock-summary-path").first).to_be_visible()
            page.goto(f"{base}/redoc")
            expect(page.locator("h1")).to_contain_text("Plant HMI", timeout=15_000)
        finally:
            browser.close()
    # Only requests to other hosts (Redoc's footer logo) may be refused by the policy: the
    # plant's own scripts, styles and WebSocket all pass it.
    assert all(re.search(r"'https://(?!127\.0\.0\.1)", m) for m in csp_errors), csp_errors
    assert blocked == []


def _csp_refusals(console_text: str) -> list[str]:
    return [console_text] if "Content Security Policy" in console_text else []


def _login_via(plant: Plant, name: str, forwarded_for: str) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{plant.port}/api/login",
        json.dumps({"name": name, "password": "wrong-password"}).encode(),
        {"Content-Type": "application/json", "X-Forwarded-For": forwarded_for},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_a_new_forwarded_for_per_request_buys_no_login_guesses(plant: Plant) -> None:
    """Last in this module: it leaves loopback throttled for the login window (60 s)."""
    codes = [_login_via(plant, f"nobody{i}", f"198.51.100.{i}") for i in range(6)]
    # at most 5 failures (default login_max_failures; earlier tests may have used some)
    assert 429 in codes[:5] and codes[5:] == [429], codes
