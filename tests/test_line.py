"""The line engine against simulated hardware over real sockets: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from linerig import CONFIG, cells_of, each_cell_once, sim_line
from sqlalchemy import select

from drivers.plc import DONE_SEQ, NEXT_MASS, load_tag_map
from drivers.sim.cells import CellStream
from plant.cell_records import ROUTES
from plant.domain import CellState, Route
from plant.store import AlarmRow, LotRow, Store, upgrade


def test_every_cell_final_counts_match_plc(store: Store) -> None:
    n = 400

    async def scenario() -> dict[str, int]:
        async with sim_line(store, cells=n, rate=300.0) as rig:
            await rig.wait_final(n)
            await asyncio.sleep(0.1)
            return rig.plc_counters()

    plc = asyncio.run(scenario())
    cells = each_cell_once(store, n, plc)
    assert all(c.state in (CellState.confirmed, CellState.quarantined) for c in cells)
    assert all(c.reason for c in cells)  # every decision says why
    by_route = Counter(c.route for c in cells)
    # A stall of the loaded machine can trip the PLC watchdog (0.4 s): the cells then in flight
    # go to quarantine by design, say so, and the PLC alarm is on record. The classifier's own
    # quarantines (uncertain, faulty) stay a small share of the mix.
    plc_fault = [c for c in cells if c.reason and "PLC fault" in c.reason]
    assert by_route[Route.quarantine] - len(plc_fault) < 0.10 * n
    if plc_fault:
        with store.session() as s:
            assert s.scalars(select(AlarmRow).where(AlarmRow.source == "plc")).first()
    assert by_route[Route.hydromet] > 0 and by_route[Route.black_mass] > 0
    confirmed = [c for c in cells if c.state == CellState.confirmed and c.route != "quarantine"]
    assert all(c.lot_id for c in confirmed)  # every routed cell is in a lot


def test_cells_queued_at_the_infeed_are_taken_together_each_once_with_its_mass(
    sqlite_url: str,
) -> None:
    """The feeder outruns the controller: the queue builds, each poll shows the head and the
    cells behind it, and the controller records and takes several with one write."""
    upgrade(sqlite_url)
    store = Store(sqlite_url)
    n, limit = 300, 8

    async def scenario() -> tuple[dict[str, int], int, int]:
        async with sim_line(store, cells=n, rate=5000.0, settings={"max_in_flight": limit}) as rig:
            most = 0
            while rig.engine.stats.finished < n:
                most = max(most, rig.engine.in_flight)
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.1)
            return rig.plc_counters(), rig.plc_sim.requests[16], most

    plc, writes, most = asyncio.run(scenario())
    try:
        cells = each_cell_once(store, n, plc)
        truth = CellStream(1)
        for c in cells:  # the mass shown behind the head is booked to the right cell
            assert c.mass_g == pytest.approx(truth.truth(c.seq).mass_g, abs=1e-3)
        # one diverter write per cell, and fewer takes than cells: they went in groups
        assert n < writes < 2 * n
        assert most <= limit
    finally:
        store.close()


def test_a_plc_without_queue_view_or_execution_slots_gets_one_cell_and_command_at_a_time(
    sqlite_url: str, tmp_path: Path
) -> None:
    """An older PLC program: no `infeed.next.*` and no `diverter.done.*` in its map."""
    lines = (CONFIG / "plc.toml").read_text().splitlines()
    kept = [x for x in lines if not x.startswith(('"infeed.next.', '"diverter.done.'))]
    (tmp_path / "plc.toml").write_text("\n".join(kept) + "\n")
    tags = load_tag_map(tmp_path / "plc.toml")
    assert not tags.series(NEXT_MASS) and not tags.series(DONE_SEQ)
    upgrade(sqlite_url)
    store = Store(sqlite_url)
    n = 200

    async def scenario() -> tuple[dict[str, int], int]:
        async with sim_line(store, cells=n, rate=2000.0, tag_map=tags) as rig:
            await rig.wait_final(n)
            await asyncio.sleep(0.1)
            return rig.plc_counters(), rig.plc_sim.requests[16]

    plc, writes = asyncio.run(scenario())
    try:
        each_cell_once(store, n, plc)
        assert writes >= 2 * n  # a take and a diverter command per cell
    finally:
        store.close()


def test_misrouting_is_rare_with_default_mix(sqlite_url: str) -> None:
    from plant.store import upgrade

    upgrade(sqlite_url)
    store = Store(sqlite_url)
    n = 600

    async def scenario() -> int:
        async with sim_line(store, cells=n, rate=400.0, heads=4) as rig:
            await rig.wait_final(n)
            return rig.misrouted({c.seq: c.route or "" for c in cells_of(store)})

    misrouted = asyncio.run(scenario())
    assert misrouted <= 0.005 * n


def test_plc_drop_stops_alarms_and_resumes_without_loss(sqlite_url: str) -> None:
    from plant.store import upgrade

    upgrade(sqlite_url)
    store = Store(sqlite_url)
    n = 300

    async def scenario() -> tuple[dict[str, int], list[str]]:
        async with sim_line(store, cells=n, rate=150.0) as rig:
            await rig.wait_final(80)
            await rig.plc_sim.set_offline(True)  # PLC gone: connections refused
            rig.plc_sim.drop_connections()
            while rig.engine.plc_state != "down":
                await asyncio.sleep(0.02)
            states = [rig.engine.plc_state]
            await asyncio.sleep(1.0)
            await rig.plc_sim.set_offline(False)
            await rig.wait_final(n)
            states.append(rig.engine.plc_state)
            await asyncio.sleep(0.1)
            return rig.plc_counters(), states

    plc, states = asyncio.run(scenario())
    assert states == ["down", "ok"]
    cells = each_cell_once(store, n, plc)
    with store.session() as s:
        alarms = list(s.scalars(select(AlarmRow).where(AlarmRow.source == "plc")))
    assert alarms and alarms[0].code == "unreachable"
    assert alarms[0].state in ("rtn_unacked", "cleared")  # raised, and returned to normal
    faulted = [c for c in cells if c.reason and "PLC fault" in c.reason]
    assert all(c.route == Route.quarantine for c in faulted)  # cells in flight -> quarantine


def test_buffer_full_sends_route_to_quarantine(sqlite_url: str) -> None:
    from plant.store import upgrade

    upgrade(sqlite_url)
    store = Store(sqlite_url)
    n = 150

    async def scenario() -> None:
        async with sim_line(store, cells=n, rate=200.0) as rig:
            rig.plc_sim.set_buffer_full("hydromet", True)
            await rig.wait_final(n)

    asyncio.run(scenario())
    cells = cells_of(store)
    assert not [c for c in cells if c.route == Route.hydromet]
    assert any("buffer" in (c.reason or "") for c in cells if c.route == Route.quarantine)


def test_lots_close_and_carry_metal_estimates(sqlite_url: str) -> None:
    from plant.store import upgrade

    upgrade(sqlite_url)
    store = Store(sqlite_url)
    n = 200

    async def scenario() -> None:
        async with sim_line(store, cells=n, rate=300.0, settings={"lot_close_kg": 2.0}) as rig:
            await rig.wait_final(n)

    asyncio.run(scenario())
    with store.session() as s:
        lots = list(s.scalars(select(LotRow).where(LotRow.route == "hydromet")))
    closed = [lot for lot in lots if lot.state == "closed"]
    assert closed and all(lot.mass_g >= 2000 for lot in closed)
    assert all(lot.metals_g.get("Ni", 0) > 0 for lot in closed)
    assert sum(lot.cell_count for lot in lots) == sum(
        1 for c in cells_of(store) if c.route == "hydromet" and c.state == "confirmed"
    )
    assert set(ROUTES) >= {lot.route for lot in lots}
