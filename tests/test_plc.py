"""PLC driver: tag map validation, and the client against the simulated PLC over loopback."""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin
from typer.testing import CliRunner

from drivers.backoff import MIN_WAIT_S, backoff_delay
from drivers.plc import (
    LinkState,
    PlcClient,
    PlcConnectionError,
    PlcExceptionError,
    PlcTimeoutError,
    TagMap,
    TagMapError,
    TagValueError,
    UnknownTagError,
    load_tag_map,
    parse_tag_map,
)
from drivers.sim.plc import SimPlc
from plant.cli import app
from plant.commands.bench_harness import free_port_block

REPO = Path(__file__).resolve().parent.parent
PLC_TOML = REPO / "config" / "plc.toml"
LINE_BLOCK = (
    "infeed.cell_seq",
    "infeed.cell_mass_g",
    "diverter.ack_seq",
    "counters.hydromet",
    "counters.black_mass",
    "counters.reject",
    "counters.quarantine",
)
FC_READ_INPUT, FC_WRITE_REGISTERS = 4, 16


@pytest.fixture(scope="module")
def tag_map() -> TagMap:
    return load_tag_map(PLC_TOML)


def _map(**tags: dict[str, Any]) -> dict[str, Any]:
    return {"tags": tags}


def _tag(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "table": "input_register",
        "address": 0,
        "type": "uint16",
        "description": "test tag",
    }
    base.update(kw)
    return base


def run_with_sim(
    tag_map: TagMap,
    scenario: Callable[[SimPlc, PlcClient], Awaitable[None]],
    *,
    timeout_s: float | None = None,
    **sim_kw: Any,
) -> None:
    """Start a simulator on an ephemeral port and a client for it, run, clean up both."""

    async def main() -> None:
        async with SimPlc(tag_map, **sim_kw) as sim:
            client = PlcClient("127.0.0.1", sim.port, tag_map, timeout_s=timeout_s)
            try:
                await client.connect()
                await scenario(sim, client)
            finally:
                await client.close()

    asyncio.run(main())


# --------------------------------------------------------------------------- tag map


def test_shipped_tag_map_loads_with_the_line_block_in_one_request(tag_map: TagMap) -> None:
    assert len(tag_map.plan_reads(LINE_BLOCK)) == 1
    for name in ("infeed.taken_seq", "diverter.target", "diverter.seq"):
        assert tag_map.tag(name).writable
    # target and seq are adjacent: the mailbox is one write request
    assert len(tag_map.plan_writes({"diverter.target": 1, "diverter.seq": 7})) == 1


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            _map(
                **{
                    "a.one": _tag(address=3),
                    "a.two": _tag(address=2, type="uint32", word_order="big"),
                }
            ),
            "tag 'a.one': input_register address 3 overlaps tag 'a.two' (2..3)",
        ),
        (_map(**{"a.one": _tag(type="real")}), "tag 'a.one': type"),
        (_map(**{"a.flag": _tag(type="bool")}), "tag 'a.flag': type bool cannot live in"),
        (
            _map(**{"a.flag": _tag(table="coil", type="uint16")}),
            "tag 'a.flag': type uint16 cannot live in table coil",
        ),
        (
            _map(**{"a.one": {"table": "input_register", "address": 0, "type": "uint16"}}),
            "tag 'a.one': description: required field is missing",
        ),
        (_map(**{"a.big": _tag(type="float32")}), "tag 'a.big': float32 needs word_order"),
        (_map(**{"a.one": _tag(colour="red")}), "tag 'a.one': colour: unknown field"),
        (_map(**{"a.one": _tag(address=-1)}), "tag 'a.one': address"),
        (_map(**{"A b": _tag()}), "tag 'A b': names are lowercase"),
        (
            {"tags": {"a.one": _tag()}, "polling": {"p": {"interval_s": 1, "tags": ["a.one"]}}},
            "polling: unknown field",
        ),
    ],
)
def test_invalid_tag_maps_are_rejected_naming_the_tag(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(TagMapError) as info:
        parse_tag_map(data, "plc.toml")
    message = str(info.value)
    assert message.startswith("plc.toml: ")
    assert expected in message
    assert "\n" not in message


def test_load_tag_map_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(TagMapError, match=r"missing\.toml: file not found"):
        load_tag_map(tmp_path / "missing.toml")
    bad = tmp_path / "plc.toml"
    bad.write_text('[tags]\n"a.one" = { table = "coil"\n')
    with pytest.raises(TagMapError, match=r"plc\.toml: not valid TOML"):
        load_tag_map(bad)


def test_word_order_and_scale_are_applied_when_encoding_and_decoding() -> None:
    tm = parse_tag_map(
        _map(
            **{
                "a.big": _tag(type="float32", word_order="big"),
                "a.little": _tag(address=2, type="float32", word_order="little"),
                "a.scaled": _tag(address=4, type="int16", scale=0.1, unit="°C"),
            }
        )
    )
    big, little = tm.tag("a.big").encode(4.35), tm.tag("a.little").encode(4.35)
    assert big == list(reversed(little))
    assert tm.tag("a.little").decode(little) == 4.35
    scaled = tm.tag("a.scaled")
    assert scaled.encode(-12.5) == [(-125) & 0xFFFF]
    assert scaled.decode(scaled.encode(-12.5)) == pytest.approx(-12.5)
    with pytest.raises(TagValueError, match=r"tag 'a\.scaled': 4000 is outside"):
        scaled.encode(4000)


_PYMODBUS_TYPE = {
    "int16": ModbusClientMixin.DATATYPE.INT16,
    "uint16": ModbusClientMixin.DATATYPE.UINT16,
    "int32": ModbusClientMixin.DATATYPE.INT32,
    "uint32": ModbusClientMixin.DATATYPE.UINT32,
    "float32": ModbusClientMixin.DATATYPE.FLOAT32,
}


@given(
    data=st.data(),
    typ=st.sampled_from(sorted(_PYMODBUS_TYPE)),
    order=st.sampled_from(["big", "little"]),
)
def test_codec_agrees_with_pymodbus_converters(
    data: st.DataObject, typ: str, order: Literal["big", "little"]
) -> None:
    bits = int(typ[-2:])
    if typ == "float32":
        value: float = data.draw(st.floats(width=32, allow_nan=False, allow_infinity=False))
    elif typ.startswith("u"):
        value = data.draw(st.integers(0, 2**bits - 1))
    else:
        value = data.draw(st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    order = order if bits == 32 else "big"
    extra = {"word_order": order} if bits == 32 else {}
    tag = parse_tag_map(_map(**{"a.v": _tag(type=typ, **extra)})).tag("a.v")
    words = tag.encode(value)
    assert words == ModbusClientMixin.convert_to_registers(value, _PYMODBUS_TYPE[typ], order)
    assert tag.decode(words) == pytest.approx(value, rel=1e-7)


_MIXED_BLOCK = {
    "m.count": _tag(address=0, type="uint32", word_order="little"),
    "m.temp": _tag(address=2, type="int16", scale=0.1),
    # address 3 unmapped: the read spans the gap
    "m.mass": _tag(address=4, type="float32", word_order="big"),
    "m.mass_le": _tag(address=6, type="float32", word_order="little"),
    "m.offset": _tag(address=8, type="int32", word_order="big", scale=0.5),
    "m.code": _tag(address=10, type="uint16"),
}


@given(data=st.data())
def test_a_block_read_decodes_every_tag_as_the_tag_itself_does(data: st.DataObject) -> None:
    """The poll decodes its whole block with one unpack; each value must be what the tag's own
    decode (word order, scale, float32 rounding) gives for its words."""
    tm = parse_tag_map(_map(**_MIXED_BLOCK))
    (block,) = tm.plan_reads(tuple(_MIXED_BLOCK))
    words = [data.draw(st.integers(0, 0xFFFF)) for _ in range(block.count)]
    out: dict[str, Any] = {}
    block.decode(words, out)
    assert set(out) == set(_MIXED_BLOCK)
    for name, value in out.items():
        tag = tm.tag(name)
        expected = tag.decode(words[tag.address : tag.end])
        assert value == expected or (value != value and expected != expected), name  # NaN
    values = {"m.count": 123_456_789, "m.temp": -12.5, "m.mass": 61.3, "m.mass_le": 4.35}
    values |= {"m.offset": -1000.5, "m.code": 4}
    for name, value in values.items():
        tag = tm.tag(name)
        words[tag.address : tag.end] = tag.encode(value)
    block.decode(words, out)
    assert out == pytest.approx(values)


def test_writes_are_checked_before_anything_is_sent(tag_map: TagMap) -> None:
    with pytest.raises(
        TagValueError, match=r"tag 'counters\.reject' is a input_register: read-only"
    ):
        tag_map.plan_writes({"counters.reject": 0})
    with pytest.raises(TagValueError, match=r"tag 'diverter\.target': -1 is outside"):
        tag_map.plan_writes({"diverter.target": -1})
    with pytest.raises(TagValueError, match=r"tag 'leach\.ph_setpoint': nan is not a finite"):
        tag_map.plan_writes({"leach.ph_setpoint": float("nan")})
    with pytest.raises(UnknownTagError, match=r"did you mean: leach\.ph"):
        tag_map.plan_writes({"leach.pH": 1.0})


def test_backoff_is_capped_jittered_and_never_zero() -> None:
    rng = random.Random(3)
    for min_s, max_s in ((0.0, 0.0), (-1.0, -5.0)):
        delays = [backoff_delay(n, min_s, max_s, rng) for n in range(1, 40)]
        assert min(delays) >= MIN_WAIT_S / 2  # a zero/negative setting cannot busy-loop
    delays = [backoff_delay(n, 0.1, 5.0, rng) for n in range(1, 40)]
    assert max(delays) <= 5.0
    assert delays[0] <= 0.1 < delays[5]  # grows exponentially ...
    assert len({round(d, 6) for d in delays[20:]}) > 1  # ... and is jittered at the cap


# --------------------------------------------------------------------------- client


def test_batched_read_of_twenty_neighbouring_tags_is_one_request() -> None:
    tags = {f"bank.t{i:02d}": _tag(address=10 + i) for i in range(20)}
    tm = parse_tag_map({"tags": tags})

    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        before = sim.requests[FC_READ_INPUT]
        values = await client.read(*tags)
        assert sim.requests[FC_READ_INPUT] - before == 1
        assert set(values) == set(tags)

    run_with_sim(tm, scenario)


def test_line_block_and_mailbox_each_take_one_request(tag_map: TagMap) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        before = sim.request_count
        values = await client.read(*LINE_BLOCK)
        assert sim.request_count - before == 1
        assert values["infeed.cell_seq"] == 0  # nothing queued: seq 0
        await client.write("line.start_cmd", True)
        while sim.arrived < 1:
            await asyncio.sleep(0.005)
        before = sim.requests[FC_WRITE_REGISTERS]
        await client.write_many({"diverter.target": 3, "diverter.seq": 1})
        assert sim.requests[FC_WRITE_REGISTERS] - before == 1

    run_with_sim(tag_map, scenario, rate_cells_s=200, max_cells=1)


def test_dropped_connection_is_reconnected_quietly(
    tag_map: TagMap, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        await client.read("plc.heartbeat")
        assert sim.drop_connections() == 1
        await asyncio.sleep(0.01)  # the close reaches the client: an idle-closed gateway
        assert (await client.read("counters.reject"))["counters.reject"] == 0
        assert sim.connects == 2
        assert client.health.state is LinkState.connected

    with caplog.at_level(logging.INFO, logger="drivers.plc"):
        run_with_sim(tag_map, scenario)
    assert [r for r in caplog.records if r.name == "drivers.plc"] == []


def test_plc_down_logs_once_then_once_on_recovery(
    tag_map: TagMap, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        await sim.set_offline(True)
        failures = 0
        for _ in range(30):
            try:
                await client.read("plc.heartbeat")
            except PlcConnectionError as exc:
                failures += 1
                assert f"127.0.0.1:{sim.port}" in str(exc)
            await asyncio.sleep(0.002)
        assert failures == 30
        health = client.health
        assert health.state is LinkState.down
        assert health.last_error is not None and "cannot connect" in health.last_error
        await sim.set_offline(False)
        await client.wait_connected()
        await client.read("plc.heartbeat")
        assert client.health.state is LinkState.connected

    with caplog.at_level(logging.INFO, logger="drivers.plc"):
        run_with_sim(tag_map, scenario)
    lines = [r.getMessage() for r in caplog.records if r.name == "drivers.plc"]
    assert len(lines) == 2, lines
    assert "down" in lines[0]
    assert "connected again" in lines[1]


def test_stalled_response_times_out_and_is_reported(
    tag_map: TagMap, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        sim.faults.stall_s = 30.0
        for _ in range(3):  # a PLC that accepts connections but never answers
            await client.wait_connected()
            with pytest.raises(PlcTimeoutError, match=r"no answer within 0\.2 s to read of"):
                await client.read("leach.ph")
            assert client.health.state is LinkState.degraded
        sim.faults.stall_s = 0.0
        await client.wait_connected()
        assert (await client.read("leach.ph_setpoint"))["leach.ph_setpoint"] == 1.5
        assert client.health.state is LinkState.connected

    with caplog.at_level(logging.INFO, logger="drivers.plc"):
        run_with_sim(tag_map, scenario, timeout_s=0.2)
    lines = [r.getMessage() for r in caplog.records if r.name == "drivers.plc"]
    assert len(lines) == 2, lines  # one when it stopped answering, one on recovery
    assert "degraded" in lines[0]


def test_exception_response_is_a_typed_error_naming_the_tag(tag_map: TagMap) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        sim.faults.exception_code = 4
        sim.faults.exception_tags = frozenset({"leach.orp_mv"})
        with pytest.raises(PlcExceptionError) as info:
            await client.read("leach.orp_mv")
        assert info.value.code == 4
        assert info.value.tags == ("leach.orp_mv",)
        assert "leach.orp_mv" in str(info.value) and "device failure" in str(info.value)
        # other tags still read; the link itself is healthy
        assert (await client.read("counters.hydromet"))["counters.hydromet"] == 0
        assert client.health.state is LinkState.connected

    run_with_sim(tag_map, scenario)


def test_plc_rejecting_a_write_names_the_tags(tag_map: TagMap) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        with pytest.raises(PlcExceptionError) as info:  # seq 5 was never detected
            await client.write_many({"diverter.target": 1, "diverter.seq": 5})
        assert info.value.code == 3
        assert info.value.tags == ("diverter.target", "diverter.seq")

    run_with_sim(tag_map, scenario)


def test_tag_map_file_documents_zero_based_addresses() -> None:
    text = PLC_TOML.read_text()
    assert "0-BASED PROTOCOL ADDRESS" in text
    assert "mbpoll" in text
    tomllib.loads(text)


def test_docs_list_every_tag_with_its_addresses(tag_map: TagMap) -> None:
    docs = (REPO / "docs" / "plc.md").read_text()
    for name, tag in tag_map.tags.items():
        row = f"| `{name}` | {tag.table} | {tag.address} | {tag.address + 1} | {tag.type} |"
        assert row in docs, f"docs/plc.md is missing or has a stale row for {name}"


# --------------------------------------------------------------------------- plant plc


def _config_dir(tmp_path: Path, port: int) -> Path:
    (tmp_path / "plc.toml").write_text(PLC_TOML.read_text())
    (tmp_path / "plant.toml").write_text(f"[plc]\nport = {port}\n")
    return tmp_path


def test_cli_unknown_tag_suggests_close_matches(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["--config", str(_config_dir(tmp_path, 1)), "plc", "read", "leach.pH"]
    )
    assert result.exit_code == 2
    assert "unknown tag 'leach.pH' (did you mean: leach.ph" in result.output


def test_cli_unreachable_plc_names_host_and_port(tmp_path: Path) -> None:
    port = free_port_block(1)  # closed again: connections are refused
    result = CliRunner().invoke(
        app, ["--config", str(_config_dir(tmp_path, port)), "plc", "read", "counters.*"]
    )
    assert result.exit_code == 1
    assert f"PLC 127.0.0.1:{port}: cannot connect" in result.output
    assert "Traceback" not in result.output


def test_cli_write_with_yes_reaches_the_plc(tag_map: TagMap, tmp_path: Path) -> None:
    async def scenario(sim: SimPlc, client: PlcClient) -> None:
        cfg = _config_dir(tmp_path, sim.port)
        argv = ["-m", "plant.cli", "--config", str(cfg), "plc", "write"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            "leach.ph_setpoint",
            "1.75",
            "--yes",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output = (await proc.communicate())[0].decode()
        assert proc.returncode == 0, output
        assert "leach.ph_setpoint = 1.75 pH written" in output
        assert (await client.read("leach.ph_setpoint"))["leach.ph_setpoint"] == 1.75
        assert sim.tank.ph_setpoint == 1.75

    run_with_sim(tag_map, scenario)
