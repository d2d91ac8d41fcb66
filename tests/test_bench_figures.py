"""The bench's helper figures, without running a line (tests/test_bench.py runs the whole bench)."""

from __future__ import annotations

import time

from plant.commands.bench_harness import cpu_ticks, latency_run_size, steal_pct


def test_steal_is_the_share_of_all_cpu_time_between_two_readings() -> None:
    assert steal_pct((1000, 10), (1400, 110)) == 25.0
    assert steal_pct((1000, 10), (1400, 10)) == 0.0
    assert steal_pct(None, (1400, 10)) is None  # a kernel without /proc/stat
    assert steal_pct((1000, 10), (1000, 10)) is None  # no time passed: no share to give


def test_cpu_ticks_come_from_this_machines_kernel() -> None:
    before = cpu_ticks()
    assert before is not None  # Linux, as the bench's machine
    time.sleep(0.05)
    after = cpu_ticks()
    assert after is not None and after[0] > before[0] and after[1] >= before[1]
    pct = steal_pct(before, after)
    assert pct is not None and 0.0 <= pct <= 100.0


def test_latency_run_at_half_the_measured_throughput_unless_a_rate_is_asked() -> None:
    assert latency_run_size(220.0, 2000) == (110.0, 2000)
    assert latency_run_size(500.0, 2000) == (200.0, 2000)  # at most the 200 cells/s budget
    assert latency_run_size(220.0, 2000, rate=50.0) == (50.0, 1500)  # 30 s at the line's rate
    assert latency_run_size(None, 300) == (200.0, 300)


def test_the_table_caption_says_when_the_kernel_reports_no_steal() -> None:
    from plant.commands.bench import _steal

    runs = {"full_speed": {"cpu_steal_pct": 1.5}, "latency": {"cpu_steal_pct": None}}
    assert _steal({"runs": runs}) == "1.5 % / not reported (line runs)"
    assert _steal({}) == "-"
