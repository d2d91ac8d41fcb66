"""Real-time scheduling of the sort path (plant/scheduling.py), on this machine's kernel."""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
import threading

import pytest

from plant.scheduling import Realtime, normal_priority, policy_of

PRIORITY = 20


def _permitted() -> bool:
    return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_RTPRIO)[0] >= PRIORITY


needs_rt = pytest.mark.skipif(
    not _permitted(), reason="real-time scheduling needs root or an RLIMIT_RTPRIO >= 20 (CI: root)"
)


def _policies() -> set[str]:
    return {policy_of(int(t)) for t in os.listdir("/proc/self/task")}


@needs_rt
def test_every_thread_and_child_runs_real_time_until_close() -> None:
    rt = Realtime(PRIORITY)
    rt.start()
    try:
        assert rt.applied and _policies() == {"SCHED_RR 20"}
        seen: list[str] = []
        t = threading.Thread(target=lambda: seen.append(policy_of(threading.get_native_id())))
        t.start()
        t.join()
        assert seen == ["SCHED_RR 20"]  # a thread started during the run inherits it
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
        try:
            assert policy_of(child.pid) == "SCHED_RR 20"  # so does the classifier process
            normal_priority(child.pid)  # the simulators and the hydromet line do not keep it
            assert policy_of(child.pid) == "SCHED_OTHER"
        finally:
            child.kill()
            child.wait()
    finally:
        rt.close()
    assert not rt.applied and _policies() == {"SCHED_OTHER"}


def test_a_refused_request_warns_once_and_leaves_scheduling_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unprivileged user (simulated: this suite runs as root in CI)."""
    real = os.sched_setscheduler

    def refuse(pid: int, policy: int, param: os.sched_param) -> None:
        if policy != os.SCHED_OTHER:
            raise PermissionError(1, "Operation not permitted")
        real(pid, policy, param)

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    rt = Realtime(PRIORITY)
    with caplog.at_level(logging.WARNING, logger="plant.scheduling"):
        rt.start()
    assert not rt.applied and _policies() == {"SCHED_OTHER"}
    [record] = caplog.records
    assert "line.realtime_priority = 20 not applied" in record.getMessage()
    assert "LimitRTPRIO=20" in record.getMessage()
    rt.close()
    assert _policies() == {"SCHED_OTHER"}


def test_priority_zero_changes_nothing() -> None:
    rt = Realtime(0)
    rt.start()
    assert not rt.applied and _policies() == {"SCHED_OTHER"}
    rt.close()


def test_policy_of_a_process_that_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert policy_of(child.pid) == "not running"
    assert policy_of(None) == "not running"
