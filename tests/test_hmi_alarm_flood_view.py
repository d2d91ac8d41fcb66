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


def test_sound_on_rings_once_for_each_new_unacknowledged_alarm(
    browser: Browser,  # noqa: F811
    served: Served,  # noqa: F811
) -> None:
    page = login(browser, served, "operator")
    sound = page.locator("#sound")
    expect(sound).to_have_text("Sound off")
    sound.click()
    expect(sound).to_have_attribute("aria-pressed", "true")
    alarms = Alarms(served.store, "L1", served.bus)
    alarms.raise_("process", "leach.ph.high", "leach.ph 2.1 pH above 2.0 pH", AlarmPriority.high)
    expect(sound).to_have_attribute("data-rang", "1", timeout=WAIT_MS)
    a = alarms.raise_("plc", "comm_lost", "PLC unreachable", AlarmPriority.critical)
    expect(sound).to_have_attribute("data-rang", "2", timeout=WAIT_MS)
    Alarms(served.store, None, served.bus).ack(a.id, "operator")
    page.reload()  # the choice is remembered in this browser; standing alarms do not ring again
    expect(page.locator("#sound")).to_have_text("Sound on")
    expect(page.locator("#alarm-banner .alarm")).to_have_count(2, timeout=WAIT_MS)
    page.wait_for_timeout(2500)  # two more snapshots: nothing new, nothing rings
    assert page.locator("#sound").get_attribute("data-rang") is None
    page.close()
