"""Benchmark: Modbus TCP write+read round trip on loopback, bare pymodbus vs PlcClient.

The bare figure is the yardstick for the line's decision latency (docs/architecture.md: report
decision latency as a ratio to the raw pymodbus write round trip). Simulator and client share
one event loop, as in `plant run --simulate`.

Usage: python bench/modbus_rtt.py [--n 2000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path

from drivers.plc import PlcClient, load_tag_map
from drivers.sim.plc import SimPlc
from plant.commands.bench_harness import LINE_BLOCK, bare_modbus_rtt, time_pairs

PLC_TOML = Path(__file__).resolve().parent.parent / "config" / "plc.toml"


def _summary(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=100)
    return {
        "p50_us": round(q[49] * 1e6, 1),
        "p99_us": round(q[98] * 1e6, 1),
        "pairs_per_s": round(len(samples) / sum(samples), 1),
    }


async def measure(n: int = 2000) -> dict[str, dict[str, float] | float]:
    """Round-trip figures for n write+read pairs, bare pymodbus and through PlcClient."""
    tag_map = load_tag_map(PLC_TOML)
    async with SimPlc(tag_map, actuation_delay_s=0) as sim:
        bare_s = await bare_modbus_rtt("127.0.0.1", sim.port, tag_map, n)
        async with PlcClient("127.0.0.1", sim.port, tag_map) as client:

            async def driver() -> None:
                await client.write("infeed.taken_seq", 0)
                await client.read(*LINE_BLOCK)

            driver_s = await time_pairs(n, driver)
    bare_sum, driver_sum = _summary(bare_s), _summary(driver_s)
    return {
        "pymodbus_write_read": bare_sum,
        "plc_client_write_read": driver_sum,
        "driver_overhead_p50": round(driver_sum["p50_us"] / bare_sum["p50_us"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="write+read pairs to time")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = asyncio.run(measure(args.n))
    if args.json:
        print(json.dumps(result))
        return
    for name, figures in result.items():
        print(f"{name:24} {figures}")


if __name__ == "__main__":
    main()
