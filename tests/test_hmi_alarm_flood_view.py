"""During an alarm flood in real Chromium: the banner shows the 5 most urgent alarms and "+N
more" with the counts by priority, the overview counts every priority, and the alarm list is
ordered by priority, then newest first."""

from __future__ import annotations

from playwright.sync_api import Browser, expect
from test_hmi_browser import WAIT_MS, Served, browser, login, served  # noqa: F401 (fixtures)

from plant.alarms import Alarms
from plant.domain import AlarmPriority


def test_twelve_standing_alarms_show_five_and_plus_seven(browser: Browser, served: Served) -> None:  # noqa: F811
    alarms = Alarms(served.store, "L1", served.bus)
    mix = [AlarmPriority.low] * 6 + [AlarmPriority.medium] * 4 + [AlarmPriority.critical] * 2
    for i, p in enumerate(mix):
        alarms.raise_("process", f"test.{i}", f"test alarm {i} ({p.value})", p)
    page = login(browser, served, "operator")
    expect(page.locator("#alarm-banner .alarm")).to_have_count(5, timeout=WAIT_MS)
    expect(page.locator("#alarm-banner .alarm").first).to_contain_text("critical")
    expect(page.locator("#alarm-more")).to_contain_text(
        "+7 more standing alarms (all standing: critical 2 · medium 4 · low 6)"
    )
    for prio, n in (("critical", 2), ("high", 0), ("medium", 4), ("low", 6), ("diagnostic", 0)):
        box = page.locator(f"#alarm-counts .count-box[data-prio={prio}]")
        expect(box.locator(".n")).to_have_text(str(n))
    page.goto(f"{served.url}/alarms")
    rows = page.locator("#standing tbody tr td:nth-child(2)")
    expect(rows).to_have_text(["critical"] * 2 + ["medium"] * 4 + ["low"] * 6, timeout=WAIT_MS)
    # within a priority, newest first
    expect(page.locator("#standing tbody tr").first).to_contain_text("test alarm 11")
    page.close()
