"""The HMI in real headless Chromium: login, live overview, alarm ack, role refusal, screenshots.

Uvicorn serves the real app on an ephemeral port with a temporary SQLite store. Until the line
engine drives these tests, `FeedLine` plays the engine's part: it writes cells and the line
status to the store and publishes the same bus events the engine publishes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from sqlalchemy import func, select

from drivers.spectra import Spectrum, write_msa
from hmi.app import create_app
from plant.alarms import Alarms
from plant.domain import AlarmPriority
from plant.events import Event, EventBus
from plant.status import LineStatus, write_status
from plant.store import AlarmRow, AssayRow, BatchRow, CellRow, PassportRow, Store, upgrade
from plant.users import add_user, use_hash_cost

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# `make screenshots` refreshes the copies in docs/screenshots; a plain test run keeps its own
# screenshots out of the working tree.
SHOTS = Path(os.environ.get("PLANT_SCREENSHOTS") or Path(tempfile.gettempdir()) / "plant-hmi")
REPO = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"
WAIT_MS = 15_000  # how long the browser may take to show a change before the test fails

if not CHROMIUM.exists() and not os.environ.get("PLANT_REQUIRE_SERVICES"):
    pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.browser


@dataclass
class FeedLine:
    """Stands in for the line engine: cells into the store, status upserts, bus events."""

    store: Store
    bus: EventBus
    line: str = "L1"
    seq: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def feed(self, routes: list[str]) -> None:
        rows = []
        for route in routes:
            self.seq += 1
            chem = {"hydromet": "NMC811", "black_mass": "LFP", "reject": "NiCd"}.get(
                route, "UNKNOWN"
            )
            rows.append(
                {
                    "line": self.line,
                    "seq": self.seq,
                    "passport_id": f"BP-{self.seq:05d}",
                    "mass_g": 45.0,
                    "spectrum_ref": None,
                    "chemistry": chem,
                    "confidence": 0.98 if route != "quarantine" else 0.55,
                    "decision_source": "fused",
                    "route": route,
                    "reason": f"{chem} from spectrum, passport agrees"
                    if route != "quarantine"
                    else "confidence 0.55 below 0.90",
                    "model_version": "clf-demo-1",
                    "state": "confirmed",
                }
            )
            self.counts[route] = self.counts.get(route, 0) + 1
        self.store.add_cells(rows)
        total = sum(self.counts.values())
        status = LineStatus(
            self.line,
            running=True,
            plc_health="ok",
            xrf_health="ok",
            cells_per_min=float(total * 6),
            quarantine_rate=self.counts.get("quarantine", 0) / total,
            counts=dict(self.counts),
        )
        write_status(self.store, status)
        for r in rows:
            self.bus.publish_threadsafe(Event("cell", self.line, r))
        self.bus.publish_threadsafe(Event("counts", self.line, status.as_json()))


@dataclass
class Served:
    url: str
    store: Store
    bus: EventBus
    line: FeedLine


def _serve(app: Any, sock: socket.socket, server: uvicorn.Server) -> None:
    asyncio.run(server.serve(sockets=[sock]))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A fresh server per test, so its worker threads end before the leak check."""
    tmp = tmp_path
    url = f"sqlite:///{tmp / 'plant.db'}"
    upgrade(url)
    cfg = tmp / "config"
    cfg.mkdir()
    (cfg / "plant.toml").write_text(f'[database]\nurl = "{url}"\n\n[plant]\ndata_dir = "{tmp}"\n')
    (cfg / "users.toml").write_text("[auth]\nargon2_time_cost = 1\nargon2_memory_kib = 64\n")
    (cfg / "routing.toml").write_text((REPO / "config" / "routing.toml").read_text())
    use_hash_cost(1, 64)
    store = Store(url)
    for role in ("viewer", "operator", "engineer", "admin"):
        add_user(store, role, role, PASSWORD)
    seed_store(store, tmp)
    bus = EventBus()
    app = create_app(cfg, bus=bus, store=store)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=_serve, args=(app, sock, server), name="hmi-uvicorn")
    thread.start()
    while not server.started and thread.is_alive():
        threading.Event().wait(0.05)
    try:
        yield Served(f"http://127.0.0.1:{port}", store, bus, FeedLine(store, bus))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        store.close()


def seed_store(store: Store, tmp: Path) -> None:
    """A passport, a quarantined cell with a spectrum, and some assayed product batches."""
    e = 0.01 * np.arange(2048)
    counts = 20 + sum(
        a * np.exp(-0.5 * ((e - k) / 0.07) ** 2)
        for k, a in ((7.478, 900), (6.930, 150), (5.899, 140), (8.265, 130))
    )
    msa = write_msa(Spectrum(counts, 0.0, 0.01, 2.0, source="demo"), tmp / "cell-q.msa")
    with store.begin() as s:
        s.add(
            PassportRow(
                id="BP-Q-1",
                model="batterypass",
                chemistry="NMC",
                manufacturer="Demo Cells GmbH",
                mass_g=48.0,
                soh_pct=71.0,
                payload={},
            )
        )
        s.add(
            CellRow(
                line="L0",
                seq=1,
                passport_id="BP-Q-1",
                mass_g=47.5,
                spectrum_ref=str(msa),
                chemistry="NMC811",
                confidence=0.62,
                decision_source="fused",
                route="quarantine",
                reason="confidence 0.62 below 0.90",
                model_version="clf-demo-1",
                state="confirmed",
            )
        )
        batches = [("NiSO4·6H2O", 99.71), ("NiSO4·6H2O", 99.62), ("NiSO4·6H2O", 99.41)]
        batches += [("Li2CO3", 99.58), ("Li2CO3", 99.66)]
        for i, (product, purity) in enumerate(batches):
            s.add(BatchRow(id=f"B-{i + 1:03d}", product=product, mass_kg=500.0))
            s.flush()
            s.add(
                AssayRow(batch_id=f"B-{i + 1:03d}", source="lab", purity_pct=purity, composition={})
            )


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Chromium per test: Playwright's driver threads must end before the leak check."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def login(browser: Browser, served: Served, name: str) -> Page:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{served.url}/")
    expect(page).to_have_url(f"{served.url}/login?next=/")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("header .who")).to_contain_text(f"{name} ({name})")
    return page


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_operator_sees_live_counts_acks_alarm_and_is_refused_setpoints(
    browser: Browser, served: Served
) -> None:
    page = login(browser, served, "operator")
    expect(page.locator("#conn")).to_have_text("live", timeout=WAIT_MS)

    served.line.feed(["hydromet"] * 5 + ["black_mass"] * 2)
    hydromet = page.locator(".line-panel[data-line=L1] #count-hydromet")
    expect(hydromet).to_have_text("5", timeout=WAIT_MS)
    served.line.feed(["hydromet"] * 7 + ["reject", "quarantine"])
    expect(hydromet).to_have_text("12", timeout=WAIT_MS)
    expect(page.locator(".line-panel[data-line=L1] #count-quarantine")).to_have_text("1")
    expect(page.locator("#last-cells tbody tr").first).to_contain_text("quarantine")

    alarm = Alarms(served.store, "L1", served.bus).raise_(
        "plc", "comm_lost", "PLC unreachable: infeed stopped", AlarmPriority.critical
    )
    expect(page.locator("#alarm-banner")).to_contain_text("PLC unreachable", timeout=WAIT_MS)
    shot(page, "overview")

    page.click("header nav >> text=Alarms")
    row = page.locator(f"#standing tr[data-alarm='{alarm.id}']")
    expect(row).to_contain_text("active_unacked", timeout=WAIT_MS)
    page.fill("#ack-note", "maintenance called")
    row.locator("button", has_text="Ack").click()
    expect(row).to_contain_text("active_acked", timeout=WAIT_MS)
    with served.store.session() as s:
        acked = s.get(AlarmRow, alarm.id)
    assert acked is not None and (acked.acked_by, acked.ack_note) == (
        "operator",
        "maintenance called",
    )
    shot(page, "alarms")

    response = page.goto(f"{served.url}/setpoints")
    assert response is not None and response.status == 403
    expect(page.locator("#forbidden")).to_contain_text("needs the role engineer")
    expect(page.locator("header nav")).not_to_contain_text("Setpoints")
    page.close()


def test_operator_releases_quarantined_cell_from_its_page(browser: Browser, served: Served) -> None:
    page = login(browser, served, "operator")
    page.goto(f"{served.url}/cells")
    page.fill("input[name=passport_id]", "BP-Q-1")
    page.click("#cell-search button[type=submit]")
    rows = page.locator("#cell-table tbody tr")
    expect(rows).to_have_count(1, timeout=WAIT_MS)
    shot(page, "cells")
    rows.locator("a").click()
    expect(page.locator("#cell-fields")).to_contain_text("confidence 0.62 below 0.90")
    expect(page.locator("#passport-fields")).to_contain_text("Demo Cells GmbH")
    expect(page.locator("#spectrum canvas")).to_have_count(1, timeout=WAIT_MS)
    shot(page, "cell")
    page.fill("#release-form input[name=reason]", "label re-read by hand: NMC")
    page.select_option("#release-form select[name=route]", "hydromet")
    page.click("#release-form button[type=submit]")
    expect(page.locator("#cell-fields")).to_contain_text("released from quarantine by operator")
    with served.store.session() as s:
        route = s.scalar(select(CellRow.route).where(CellRow.passport_id == "BP-Q-1"))
    assert route == "hydromet"
    page.close()


def test_engineer_pages_purity_classifier_setpoints(browser: Browser, served: Served) -> None:
    page = login(browser, served, "engineer")
    page.goto(f"{served.url}/purity")
    expect(page.locator("#batches tbody tr")).to_have_count(5, timeout=WAIT_MS)
    expect(page.locator("#batches")).to_contain_text("OFF SPEC")
    expect(page.locator("#product-charts .chart canvas").first).to_be_visible()
    shot(page, "purity")
    page.goto(f"{served.url}/classifier")
    expect(page.locator("#per-class tbody tr").first).to_be_visible(timeout=WAIT_MS)
    shot(page, "classifier")
    page.goto(f"{served.url}/setpoints")
    row = page.locator("#setpoints tbody tr", has_text="Leach pH")
    expect(row).to_be_visible(timeout=WAIT_MS)
    row.locator("input").fill("1.3")
    page.once("dialog", lambda d: d.accept())
    row.locator("button").click()
    expect(page.locator("#setpoint-msg")).to_contain_text("Leach pH: 1 → 1.3 pH", timeout=WAIT_MS)
    shot(page, "setpoints")
    with served.store.session() as s:
        n = s.scalar(select(func.count()).select_from(CellRow))
    assert n is not None and n >= 1
    page.close()
