"""The HMI on a running simulated line, in real Chromium: counts rise as cells are sorted."""

from __future__ import annotations

import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from linerig import config_copy, start_run, stop_run
from playwright.sync_api import expect, sync_playwright
from test_hmi_browser import CHROMIUM, CHROMIUM_ARGS, SHOTS  # skips without Chromium

from plant.store import Store, upgrade
from plant.users import add_user, use_hash_cost

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.e2e]


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "plant run exited early"
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def test_overview_counts_rise_while_the_simulated_line_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    upgrade(url)
    use_hash_cost(1, 64)
    store = Store(url)
    add_user(store, "olga", "operator", "operator-password-1")
    store.close()
    cfg = config_copy(tmp_path, db_url=url, heads=2)
    port = tomllib.loads((cfg / "plant.toml").read_text())["hmi"]["port"]
    proc = start_run(cfg, tmp_path, "--rate", "15")
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/api/health", proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/")
            page.fill("input[name=name]", "olga")
            page.fill("input[name=password]", "operator-password-1")
            page.click("button[type=submit]")
            expect(page.locator("#conn")).to_have_text("live", timeout=30_000)
            panel = page.locator(".line-panel[data-line=L1]")
            expect(panel).to_be_visible(timeout=60_000)
            total = (
                "() => ['hydromet','black_mass','reject','quarantine']"
                ".map(r => parseInt(document.querySelector("
                "`.line-panel[data-line=L1] #count-${r}`)?.textContent || '0'))"
                ".reduce((a, b) => a + b, 0)"
            )
            # Functions, not expressions: the page's CSP forbids evaluating strings (eval).
            page.wait_for_function(f"() => ({total})() >= 5", timeout=90_000)
            first = page.evaluate(total)
            page.wait_for_function(f"() => ({total})() >= {first + 20}", timeout=90_000)
            expect(page.locator("#last-cells tbody tr").first).to_be_visible()
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "overview-live.png"), full_page=True)
            browser.close()
    finally:
        stop_run(proc, tmp_path)
