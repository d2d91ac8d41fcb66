"""An operator's shift on `plant run --simulate`, in real Chromium with no network beyond the
plant: products against their specs on the overview, an alarm raised by an engineer's limit on
leach.ph acknowledged, shelved with a preset and returned to service, the leach.ph trend with its
limit and the leach temperature's with its SPC limits, every page (screenshots for docs/hmi.md),
and /docs offline."""

from __future__ import annotations

import re
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from linerig import add_user, answers, config_copy, start_run, stop_run, until
from test_e2e_live_config import Api
from test_hmi_browser import CHROMIUM, CHROMIUM_ARGS, SHOTS  # skips without Chromium

from plant.commands.bench_harness import toml_text
from plant.store import upgrade

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
PASSWORDS = {"olga": "operator-password-1", "eve": "engineer-password-1", "ada": "admin-password-1"}
WAIT_MS = 30_000  # how long a page may take to show a change before the test fails


@dataclass
class Plant:
    base: str
    proc: subprocess.Popen[bytes]

    def api(self, user: str) -> Api:
        """The JSON API logged in as `user` (bearer token)."""
        api = Api(f"{self.base}/api")
        status, out = api.call("POST", "/login", {"name": user, "password": PASSWORDS[user]})
        assert status == 200, out
        api.token = str(out["token"])
        return api


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    """A running simulated line whose lots close at 1 kg, so campaigns make batches quickly."""
    tmp = tmp_path_factory.mktemp("shift")
    url = f"sqlite:///{tmp / 'plant.db'}"
    upgrade(url)
    cfg = config_copy(tmp, db_url=url, heads=2, lot_close_kg=1.0)
    data = tomllib.loads((cfg / "plant.toml").read_text())
    # A control chart of the leach temperature with limits after a few seconds.
    data["process_spc"] = {"tags": ["leach.temp_c"], "subgroup_s": 1, "baseline_points": 5}
    (cfg / "plant.toml").write_text(toml_text(data))
    for name, role in (("olga", "operator"), ("eve", "engineer"), ("ada", "admin")):
        add_user(cfg, tmp, name, role, PASSWORDS[name])
    port = tomllib.loads((cfg / "plant.toml").read_text())["hmi"]["port"]
    proc = start_run(cfg, tmp, "--rate", "15")
    try:
        base = f"http://127.0.0.1:{port}"
        until("the HMI answers", lambda: answers(f"{base}/api/health"), proc, timeout=180)
        yield Plant(base, proc)
    finally:
        stop_run(proc, tmp)


def test_an_operators_shift(plant: Plant) -> None:
    from playwright.sync_api import Page, Route, expect, sync_playwright

    blocked: list[str] = []
    csp: list[str] = []  # the pages' scripts run under the Content-Security-Policy, unrefused

    def local_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    def shot(page: Page, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def login(page: Page, user: str) -> None:
        page.goto(f"{plant.base}/login")
        page.fill("input[name=name]", user)
        page.fill("input[name=password]", PASSWORDS[user])
        page.click("button[type=submit]")
        expect(page.locator("#conn")).to_have_text("live", timeout=WAIT_MS)

    eve = plant.api("eve")
    specs = eve.call("GET", "/purity/batches?limit=1")[1]["specs"]
    assert specs, "config/products.toml gives the products"
    # An engineer sets a high limit on leach.ph below the simulated loop's pH (1.5): it alarms.
    status, out = eve.call(
        "PUT",
        "/alarm-limits",
        {"tag": "leach.ph", "kind": "high", "limit": 1.2, "priority": "high", "unit": "pH"},
    )
    assert status == 200, out

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1080})
            page.route("**/*", local_only)
            page.on(
                "console", lambda m: csp.extend([m.text] if "Content Security" in m.text else [])
            )
            login(page, "olga")

            # Overview: every product's last batch against its spec, the alarm counted.
            cards = page.locator(".product-card")
            expect(cards).to_have_count(len(specs), timeout=WAIT_MS)
            for name, spec in specs.items():
                card = page.locator(f".product-card[data-product='{name}']")
                if spec.get("min_purity_pct") is not None:
                    purity = card.locator(".gauge[data-gauge=purity] .gauge-spec")
                    expect(purity).to_have_text(f"spec ≥ {spec['min_purity_pct']:g} %")
                window = [spec.get("main_min_pct"), spec.get("main_max_pct")]
                if window != [None, None]:
                    text = ", ".join(
                        f"{op} {v:g}" for op, v in zip(("≥", "≤"), window, strict=True) if v
                    )
                    main = card.locator(f".gauge[data-gauge='{spec['metal']}'] .gauge-spec")
                    expect(main).to_have_text(f"spec {text} %")
                for analyte, cap in spec["impurity_limits_ppm"].items():
                    gauge = card.locator(f".gauge[data-gauge='{analyte}'] .gauge-spec")
                    expect(gauge).to_have_text(f"spec ≤ {cap:g} ppm")
            # campaigns run once lots close: wait for a batch of each product (the page
            # refreshes on each batch event and every 30 s)
            for name in specs:
                card = page.locator(f".product-card[data-product='{name}']")
                expect(card.locator(".verdict")).to_have_text(
                    re.compile("in spec|OFF SPEC"), timeout=240_000
                )
                # the batch's figures beside the limits: none is missing
                expect(card.locator(".gauge-value", has_text="–")).to_have_count(0)
            high = page.locator("#alarm-counts .count-box[data-prio=high] .n")
            expect(high).not_to_have_text("0", timeout=WAIT_MS)
            expect(page.locator("#alarm-banner")).to_contain_text("leach.ph")
            expect(page.locator(".spark[data-tag='leach.ph'] [data-f=value]")).not_to_have_text(
                "–", timeout=WAIT_MS
            )
            # each XRF head of the line (config_copy: 2) with its health
            heads = page.locator(".line-panel[data-line=L1] [data-head]")
            expect(heads).to_have_count(2, timeout=WAIT_MS)
            expect(heads.first).to_have_text(re.compile(r"\S+ ok"))
            shot(page, "shift-overview")

            # Alarms: acknowledge with a note, shelve with a preset, return to service.
            page.goto(f"{plant.base}/alarms")
            row = page.locator("#standing tbody tr", has_text="leach.ph")
            expect(row).to_have_count(1, timeout=WAIT_MS)
            expect(page.locator("#limit-form")).to_be_hidden()  # operators cannot set limits
            row.locator("input[type=checkbox]").check()
            page.fill("#ack-note", "pH loop checked, probe fine")
            page.click("#ack-selected")
            expect(row.locator("td").nth(2)).to_have_text("active_acked", timeout=WAIT_MS)
            row.locator("input[type=checkbox]").check()
            page.select_option("#shelve-preset", label="1 h")
            page.fill("#shelve-reason", "pH probe recalibration")
            page.click("#shelve-selected")
            shelved = page.locator("#hidden-alarms tbody tr", has_text="leach.ph")
            expect(shelved).to_contain_text("pH probe recalibration", timeout=WAIT_MS)
            expect(row).to_have_count(0)
            shelved.get_by_role("button", name="Return to service").click()
            expect(page.locator("#standing tbody tr", has_text="leach.ph")).to_have_count(
                1, timeout=WAIT_MS
            )
            page.fill("#alarm-search input[name=source]", "process")
            page.click("#alarm-search button[type=submit]")
            expect(page.locator("#history tbody")).to_contain_text("pH loop checked, probe fine")
            # the journal holds each step of this alarm, newest first
            alarm_id = row.get_attribute("data-alarm")
            page.fill("#journal-search input[name=alarm_id]", str(alarm_id))
            page.click("#journal-search button[type=submit]")
            events = page.locator("#journal tbody tr td:nth-child(5)")
            expect(events).to_have_text(
                ["unshelved", "shelved", "acknowledged", "raised"], timeout=WAIT_MS
            )
            shot(page, "shift-alarms")

            # Trends: leach.ph with its alarm limit and setpoint.
            page.goto(f"{plant.base}/trends")
            ph = page.locator(".trend[data-tag='leach.ph']")
            expect(ph.locator(".u-legend")).to_contain_text("high limit 1.2 pH", timeout=WAIT_MS)
            expect(ph.locator(".u-legend")).to_contain_text("setpoint (leach.ph_setpoint)")
            expect(ph.locator("canvas")).to_be_visible()
            temp = page.locator(".trend[data-tag='leach.temp_c']")
            expect(temp.locator(".u-legend")).to_contain_text("SPC UCL 70", timeout=WAIT_MS)
            expect(temp.locator(".u-legend")).to_contain_text("SPC LCL 69")
            shot(page, "shift-trends")

            for path, ready in (
                ("/cells", "#cell-table tbody tr"),
                ("/purity", "#product-charts .chart"),
                ("/classifier", "#models .model-card"),
            ):
                page.goto(plant.base + path)
                expect(page.locator(ready).first).to_be_visible(timeout=WAIT_MS)
                assert page.locator("pre").count() == 0, f"{path} shows raw JSON"
                shot(page, f"shift-{path.strip('/')}")
            expect(page.locator("#reasons tbody tr").first).to_be_visible()
            for code in page.locator("#reasons tbody tr td:first-child").all_text_contents():
                assert ":" not in code, code  # grouped by code, not by full text

            # The pH is back within a limit the engineer raises: the alarm returns to normal,
            # and "Acknowledge all" clears it.
            limit = {"tag": "leach.ph", "kind": "high", "limit": 14.0, "priority": "high"}
            assert eve.call("PUT", "/alarm-limits", limit)[0] == 200
            page.goto(f"{plant.base}/alarms")
            row = page.locator(f"#standing tbody tr[data-alarm='{alarm_id}']")
            expect(row.locator("td").nth(2)).to_have_text("rtn_unacked", timeout=WAIT_MS)
            page.click("#ack-all")
            expect(row).to_have_count(0, timeout=WAIT_MS)
            page.fill("#journal-search input[name=alarm_id]", str(alarm_id))
            page.click("#journal-search button[type=submit]")
            expect(events.first).to_have_text("cleared", timeout=WAIT_MS)
            expect(events).to_have_text(
                [
                    "cleared",
                    "acknowledged",
                    "returned",
                    "unshelved",
                    "shelved",
                    "acknowledged",
                    "raised",
                ]
            )

            page.goto(f"{plant.base}/docs")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text(
                "Plant HMI", timeout=WAIT_MS
            )
            shot(page, "shift-docs")

            for user, path, ready in (
                ("eve", "/setpoints", "#setpoints tbody tr"),
                ("eve", "/audit", "#audit tbody tr"),
                ("ada", "/users", "#users tbody tr"),
            ):
                page.context.clear_cookies()
                login(page, user)
                page.goto(plant.base + path)
                expect(page.locator(ready).first).to_be_visible(timeout=WAIT_MS)
                if path == "/setpoints":  # the measured pH beside its setpoint
                    ph = page.locator("#setpoints tbody tr", has_text="Leach pH")
                    expect(ph.locator("[data-f=measured]")).to_contain_text(" pH", timeout=WAIT_MS)
                shot(page, f"shift-{path.strip('/')}")
        finally:
            browser.close()
    assert blocked == []
    assert csp == []
