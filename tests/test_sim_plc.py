"""Simulated PLC: the infeed FIFO and diverter mailbox handshakes, feeder, faults, process model.

Everything goes through a real PlcClient over loopback, as the line engine talks to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.plc import (
    DONE_SEQ,
    DONE_TARGET,
    NEXT_MASS,
    PlcClient,
    PlcExceptionError,
    TagMap,
    load_tag_map,
)
from drivers.sim.cells import CellStream
from drivers.sim.plc import ROUTE_NAMES, SimPlc, SimPlcError
from drivers.sim.process import LeachTank
from plant.domain import ROUTE_CODES

PLC_TOML = Path(__file__).resolve().parent.parent / "config" / "plc.toml"
HEAD = ("infeed.cell_present", "infeed.cell_seq", "infeed.cell_mass_g", "infeed.queue_len")
COUNTERS = tuple(f"counters.{r}" for r in ROUTE_NAMES.values())


@pytest.fixture(scope="module")
def tag_map() -> TagMap:
    return load_tag_map(PLC_TOML)


def run_with_sim(
    tag_map: TagMap, scenario: Callable[[SimPlc, PlcClient], Awaitable[None]], **sim_kw: Any
) -> None:
    async def main() -> None:
        async with SimPlc(tag_map, **sim_kw) as sim:
            client = PlcClient("127.0.0.1", sim.port, tag_map)
            try:
                await client.connect()
                await scenario(sim, client)
            finally:
                await client.close()

    asyncio.run(main())


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll until check() is true (the test's timeout bounds it)."""
    while not await check():
        await asyncio.sleep(0.002)


async def arrived(client: PlcClient, sim: SimPlc, n: int) -> None:
    async def ok() -> bool:
        return sim.arrived >= n

    await client.write("line.start_cmd", True)
    await until(ok)


def test_route_codes_match_the_domain() -> None:
    assert {code: route.value for route, code in ROUTE_CODES.items()} == ROUTE_NAMES


def test_infeed_fifo_presents_cells_in_order_and_pops_on_taken_seq(tag_map: TagMap) -> None:
    truth = CellStream(7)

    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        head = await client.read(*HEAD)
        assert head == {
            "infeed.cell_present": False,
            "infeed.cell_seq": 0,
            "infeed.cell_mass_g": 0.0,
            "infeed.queue_len": 0,
        }
        await arrived(client, sim, 4)
        assert (await client.read("line.start_cmd"))["line.start_cmd"] is False  # momentary
        for seq in range(1, 5):
            head = await client.read(*HEAD)
            assert head["infeed.cell_present"] is True
            assert head["infeed.cell_seq"] == seq
            assert head["infeed.cell_mass_g"] == pytest.approx(truth.truth(seq).mass_g, abs=1e-4)
            assert head["infeed.queue_len"] == 5 - seq
            await client.write("infeed.taken_seq", seq)
            await client.write("infeed.taken_seq", seq)  # a repeat is harmless
        head = await client.read(*HEAD, "line.running")
        assert head["infeed.cell_present"] is False and head["infeed.cell_seq"] == 0
        assert head["line.running"] is False  # max_cells reached: the feeder stopped

    run_with_sim(tag_map, scenario, seed=7, rate_cells_s=1000, max_cells=4)


def test_taking_a_cell_that_was_never_detected_is_refused(tag_map: TagMap) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        with pytest.raises(PlcExceptionError) as info:  # queue empty
            await client.write("infeed.taken_seq", 1)
        assert info.value.code == 3 and info.value.tags == ("infeed.taken_seq",)
        await arrived(client, sim, 3)
        with pytest.raises(PlcExceptionError):  # only 3 cells arrived
            await client.write("infeed.taken_seq", 4)
        assert (await client.read("infeed.cell_seq"))["infeed.cell_seq"] == 1

    run_with_sim(tag_map, scenario, rate_cells_s=1000, max_cells=3)


def test_cells_behind_the_head_are_shown_and_taken_with_one_write(tag_map: TagMap) -> None:
    truth = CellStream(3)
    behind = tag_map.series(NEXT_MASS)
    assert len(behind) == 7  # config/plc.toml shows 7 cells behind the head

    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        await arrived(client, sim, 5)
        view = await client.read(*HEAD, *behind)
        assert view["infeed.cell_seq"] == 1 and view["infeed.queue_len"] == 5
        masses = [view["infeed.cell_mass_g"], *(view[t] for t in behind)]
        for k in range(5):  # seq = head + k
            assert masses[k] == pytest.approx(truth.truth(1 + k).mass_g, abs=1e-4)
        assert masses[5:] == [0.0, 0.0, 0.0]  # fewer queued than shown
        await client.write("infeed.taken_seq", 3)  # takes cells 1, 2 and 3 at once
        view = await client.read(*HEAD, *behind)
        assert view["infeed.cell_seq"] == 4 and view["infeed.queue_len"] == 2
        assert view[behind[0]] == pytest.approx(truth.truth(5).mass_g, abs=1e-4)
        await client.write("infeed.taken_seq", 2)  # an old take repeated: nothing happens
        assert (await client.read("infeed.cell_seq"))["infeed.cell_seq"] == 4

    run_with_sim(tag_map, scenario, seed=3, rate_cells_s=1000, max_cells=5)


def test_stop_cmd_stops_arrivals_but_keeps_queued_cells(tag_map: TagMap) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        await arrived(client, sim, 2)
        await client.write("line.stop_cmd", True)
        queued = sim.arrived
        await asyncio.sleep(0.05)  # ten scans at 200 cells/s would bring new cells
        values = await client.read("line.running", "infeed.queue_len", "infeed.cell_seq")
        assert values == {
            "line.running": False,
            "infeed.queue_len": queued,
            "infeed.cell_seq": 1,
        }

    run_with_sim(tag_map, scenario, rate_cells_s=200)


def test_high_arrival_rates_bring_several_cells_per_scan(tag_map: TagMap) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        await arrived(client, sim, 300)
        assert (await client.read("infeed.queue_len"))["infeed.queue_len"] == 300
        assert sim.arrived == 300

    run_with_sim(tag_map, scenario, rate_cells_s=1000, max_cells=300, scan_s=0.02)


def test_diverter_mailbox_counts_and_acknowledges(tag_map: TagMap) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        await arrived(client, sim, 3)
        for seq, target in ((1, 2), (2, 1), (3, 2)):
            await client.write_many({"diverter.target": target, "diverter.seq": seq})

            async def acked(seq: int = seq) -> bool:
                return (await client.read("diverter.ack_seq"))["diverter.ack_seq"] == seq

            await until(acked)
        counters = await client.read(*COUNTERS)
        assert counters == {
            "counters.hydromet": 1,
            "counters.black_mass": 2,
            "counters.reject": 0,
            "counters.quarantine": 0,
        }
        assert sim.diverted == {1: 2, 2: 1, 3: 2}
        # a command repeated after a lost answer is acknowledged, not counted twice
        await client.write_many({"diverter.target": 2, "diverter.seq": 1})
        values = await client.read("diverter.ack_seq", "counters.black_mass")
        assert values == {"diverter.ack_seq": 1, "counters.black_mass": 2}

    run_with_sim(tag_map, scenario, rate_cells_s=1000, max_cells=3)


def test_zero_actuation_delay_acknowledges_before_the_next_read(tag_map: TagMap) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        await arrived(client, sim, 1)
        await client.write_many({"diverter.target": 4, "diverter.seq": 1})
        values = await client.read("diverter.ack_seq", "counters.quarantine")
        assert values == {"diverter.ack_seq": 1, "counters.quarantine": 1}

    run_with_sim(tag_map, scenario, rate_cells_s=1000, max_cells=1, actuation_delay_s=0)


def test_each_execution_is_shown_in_the_slot_of_its_seq(tag_map: TagMap) -> None:
    slots = list(zip(tag_map.series(DONE_SEQ), tag_map.series(DONE_TARGET), strict=True))
    assert len(slots) == 8  # config/plc.toml: up to 8 commands outstanding

    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        await arrived(client, sim, 10)
        for seq in range(1, 11):  # back to back, no waiting for acks: the PLC queues them
            await client.write_many({"diverter.target": 1 + seq % 4, "diverter.seq": seq})
        await client.write_many({"diverter.target": 4, "diverter.seq": 9})  # a repeat

        async def done() -> bool:  # all ten executed (the repeat of 9 may be acked again last)
            return len(sim.diverted) == 10 and (await client.read(slots[1][0]))[slots[1][0]] == 10

        await until(done)
        shown = await client.read(*(t for slot in slots for t in slot))
        # slot k holds the latest seq with (seq - 1) mod 8 = k - 1, and the route it took
        expect = {1: 9, 2: 10, **{k: k for k in range(3, 9)}}
        for k, (seq_tag, target_tag) in enumerate(slots, start=1):
            assert shown[seq_tag] == expect[k]
            assert shown[target_tag] == 1 + expect[k] % 4  # the repeat of 9 changed nothing
        assert sum(int(sim.value(f"counters.{r}")) for r in ROUTE_NAMES.values()) == 10

    run_with_sim(tag_map, scenario, rate_cells_s=1000, max_cells=10)


def test_commands_arriving_early_are_queued_and_run_in_order(tag_map: TagMap) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        await arrived(client, sim, 3)
        for seq, target in ((2, 3), (1, 1), (3, 3)):
            await client.write_many({"diverter.target": target, "diverter.seq": seq})

        async def all_done() -> bool:
            return len(sim.diverted) == 3

        await until(all_done)
        assert list(sim.diverted.items()) == [(2, 3), (1, 1), (3, 3)]
        values = await client.read("diverter.ack_seq", "counters.reject", "counters.hydromet")
        assert values == {"diverter.ack_seq": 3, "counters.reject": 2, "counters.hydromet": 1}

    run_with_sim(tag_map, scenario, rate_cells_s=1000, max_cells=3, actuation_delay_s=0.02)


def test_bad_diverter_commands_are_refused_whole(tag_map: TagMap) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        await arrived(client, sim, 1)
        for target, seq in ((9, 1), (1, 2), (0, 1)):  # unknown route, never-detected cell
            with pytest.raises(PlcExceptionError) as info:
                await client.write_many({"diverter.target": target, "diverter.seq": seq})
            assert info.value.code == 3
        assert (await client.read("diverter.target"))["diverter.target"] == 0  # not applied
        assert sim.diverted == {}

    run_with_sim(tag_map, scenario, rate_cells_s=1000, max_cells=1)


def test_stuck_diverter_does_not_acknowledge(tag_map: TagMap) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        await arrived(client, sim, 1)
        sim.faults.diverter_stuck = True
        await client.write_many({"diverter.target": 1, "diverter.seq": 1})
        values = await client.read("diverter.ack_seq", "counters.hydromet")
        assert values == {"diverter.ack_seq": 0, "counters.hydromet": 0}
        sim.faults.diverter_stuck = False
        await client.write_many({"diverter.target": 1, "diverter.seq": 1})
        values = await client.read("diverter.ack_seq", "counters.hydromet")
        assert values == {"diverter.ack_seq": 1, "counters.hydromet": 1}

    run_with_sim(tag_map, scenario, rate_cells_s=1000, max_cells=1, actuation_delay_s=0)


def test_buffer_full_flags(tag_map: TagMap) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        sim.set_buffer_full("reject", True)
        values = await client.read("buffer.reject_full", "buffer.hydromet_full")
        assert values == {"buffer.reject_full": True, "buffer.hydromet_full": False}
        with pytest.raises(SimPlcError, match="unknown route 'landfill'"):
            sim.set_buffer_full("landfill", True)

    run_with_sim(tag_map, scenario)


def test_ph_setpoint_written_over_modbus_reaches_the_process(tag_map: TagMap) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        await client.write("leach.ph_setpoint", 2.25)
        assert sim.tank.ph_setpoint == 2.25
        assert (await client.read("leach.ph_setpoint"))["leach.ph_setpoint"] == 2.25

    run_with_sim(tag_map, scenario)


def test_held_process_values_do_not_change(tag_map: TagMap) -> None:
    names = ("leach.ph", "leach.temp_c", "leach.orp_mv", "tank.feed_level_pct")

    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        first = await client.read(*names)
        await asyncio.sleep(0.05)  # five process periods
        assert await client.read(*names) == first

    run_with_sim(tag_map, scenario, hold_process=True, process_period_s=0.01)


def test_leach_tank_settles_at_a_new_setpoint() -> None:
    tank = LeachTank(noise=False)
    tank.ph_setpoint, tank.temp_setpoint_c = 2.5, 60.0
    for _ in range(1200):
        tank.step(1.0)
    v = tank.values()
    assert v["leach.ph"] == pytest.approx(2.5, abs=0.02)
    assert v["leach.temp_c"] == pytest.approx(60.0, abs=0.1)
    assert v["dosing.naoh_lpm"] == 0.0 and v["dosing.h2so4_lpm"] > 0
    assert v["leach.orp_mv"] < 650.0 - 59.2 * 1.5  # more alkaline: lower ORP than before


def test_leach_tank_noise_is_seeded() -> None:
    a, b = LeachTank(seed=3), LeachTank(seed=3)
    for _ in range(10):
        a.step(0.1)
        b.step(0.1)
    assert a.values() == b.values()
    assert np.isfinite(list(a.values().values())).all()
