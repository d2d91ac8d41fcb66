"""A third-party Modbus master (Debian's mbpoll) sees what `plant plc read` shows.

mbpoll reads the addresses of config/plc.toml with its 1-based reference numbers
(reference = address + 1, see docs/plc.md); the simulator's process values are held so that
nothing changes between the two reads.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from drivers.plc import PlcClient, Tag, TagMap, load_tag_map
from drivers.sim.plc import SimPlc

REPO = Path(__file__).resolve().parent.parent
PLC_TOML = REPO / "config" / "plc.toml"
REQUIRE_ENV = "PLANT_REQUIRE_SERVICES"
COMPARED = ("counters.hydromet", "counters.black_mass", "counters.reject", "counters.quarantine")
MBPOLL_LINE = re.compile(r"^\[(\d+)\]:\s+(\S+)\s*$", re.MULTILINE)
MBPOLL = shutil.which("mbpoll")


def _mbpoll_missing() -> None:
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{REQUIRE_ENV} is set but mbpoll is not installed (apt-get install mbpoll)")
    pytest.skip("mbpoll is not installed (Debian package mbpoll; .ci/run installs it)")


async def _run(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}: {stderr.decode()}"
    return stdout.decode()


async def _mbpoll(port: int, tag: Tag, kind: str) -> list[str]:
    """Values mbpoll prints for one tag; kind is int, float or hex (raw registers)."""
    table = {"input_register": "3", "holding_register": "4"}[tag.table]
    argv = [str(MBPOLL), "-m", "tcp", "-p", str(port), "-a", "1", "-1", "-o", "2"]
    argv += ["-t", f"{table}:{kind}", "-r", str(tag.address + 1)]  # 1-based reference
    argv += ["-c", str(tag.width if kind == "hex" else 1)]
    if tag.word_order == "big" and kind != "hex":
        argv.append("-B")
    argv.append("127.0.0.1")
    return [value for _ref, value in MBPOLL_LINE.findall(await _run(*argv))]


async def _setup_counters(sim: SimPlc, tag_map: TagMap) -> None:
    """Divert ten cells so every counter has a different, non-zero value."""
    targets = [1, 1, 1, 1, 2, 2, 2, 3, 3, 4]
    async with PlcClient("127.0.0.1", sim.port, tag_map) as client:
        await client.write("line.start_cmd", True)
        while sim.arrived < len(targets):
            await asyncio.sleep(0.005)
        for seq, target in enumerate(targets, start=1):
            await client.write_many({"diverter.target": target, "diverter.seq": seq})


def test_mbpoll_reads_the_same_values_as_plant_plc_read(tmp_path: Path) -> None:
    if MBPOLL is None:
        _mbpoll_missing()
    tag_map = load_tag_map(PLC_TOML)
    (tmp_path / "plc.toml").write_text(PLC_TOML.read_text())

    async def main() -> None:
        async with SimPlc(
            tag_map, hold_process=True, actuation_delay_s=0, rate_cells_s=1000, max_cells=10
        ) as sim:
            await _setup_counters(sim, tag_map)
            (tmp_path / "plant.toml").write_text(f"[plc]\nport = {sim.port}\n")
            shown = json.loads(
                await _run(
                    sys.executable,
                    "-m",
                    "plant.cli",
                    "--config",
                    str(tmp_path),
                    "plc",
                    "read",
                    "counters.*",
                    "leach.ph",
                    "--json",
                )
            )
            assert set(shown) == {*COMPARED, "leach.ph"}
            assert [shown[n] for n in COMPARED] == [4, 3, 2, 1]
            for name in COMPARED:
                assert await _mbpoll(sim.port, tag_map.tag(name), "int") == [str(shown[name])]
            ph = tag_map.tag("leach.ph")
            (as_float,) = await _mbpoll(sim.port, ph, "float")
            assert math.isclose(float(as_float), shown["leach.ph"], rel_tol=1e-5)  # %g display
            raw = [int(word, 16) for word in await _mbpoll(sim.port, ph, "hex")]
            assert ph.decode(raw) == shown["leach.ph"]  # bit for bit

    asyncio.run(main())
