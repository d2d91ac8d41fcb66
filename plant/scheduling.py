"""Real-time scheduling for the sort path: the controller's threads and its classifier process
preempt everything else on the machine, so a cell's many hand-offs do not queue behind other
work (docs/line.md, "Scheduling")."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

_NAMES = {
    os.SCHED_OTHER: "SCHED_OTHER",
    os.SCHED_BATCH: "SCHED_BATCH",
    os.SCHED_IDLE: "SCHED_IDLE",
    os.SCHED_FIFO: "SCHED_FIFO",
    os.SCHED_RR: "SCHED_RR",
}


def _threads() -> list[int]:
    """Kernel ids of this process's threads (Linux)."""
    return [int(t) for t in os.listdir(Path("/proc/self/task"))]


def policy_of(pid: int | None) -> str:
    """A process's (or thread's) scheduling policy and priority, e.g. `SCHED_RR 20`."""
    if pid is None:
        return "not running"
    try:
        policy = os.sched_getscheduler(pid)
        priority = os.sched_getparam(pid).sched_priority
    except OSError:
        return "not running"
    name = _NAMES.get(policy, str(policy))
    return f"{name} {priority}" if policy in (os.SCHED_FIFO, os.SCHED_RR) else name


def normal_priority(pid: int | None) -> None:
    """Put a child back to normal scheduling: children of a real-time process inherit it, and
    only the sort path should have it (the simulators and the hydromet line run as usual)."""
    if pid is None:
        return
    try:
        os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
    except OSError as exc:
        log.warning("process %s keeps real-time scheduling: %s", pid, exc)


class Realtime:
    """This process's threads at SCHED_RR `priority` from `start()` to `close()`; threads and
    child processes started meanwhile inherit it. Priority 0 leaves scheduling alone."""

    def __init__(self, priority: int) -> None:
        self.priority = priority
        self.applied = False
        self._before: tuple[int, int] = (os.SCHED_OTHER, 0)

    def start(self) -> None:
        """Switch every thread of this process; if the OS refuses, warn once and run as usual."""
        if self.priority <= 0:
            return
        self._before = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
        try:
            for tid in _threads():
                os.sched_setscheduler(tid, os.SCHED_RR, os.sched_param(self.priority))
        except PermissionError:
            self._restore()
            log.warning(
                "line.realtime_priority = %d not applied: not permitted (needs CAP_SYS_NICE or "
                "an RLIMIT_RTPRIO of at least %d, e.g. LimitRTPRIO=%d in the systemd unit); "
                "the line runs at normal priority",
                self.priority,
                self.priority,
                self.priority,
            )
            return
        self.applied = True

    def close(self) -> None:
        """Every thread back to the policy the process had before `start()`."""
        if self.applied:
            self._restore()
            self.applied = False

    def _restore(self) -> None:
        policy, priority = self._before
        for tid in _threads():
            try:
                os.sched_setscheduler(tid, policy, os.sched_param(priority))
            except ProcessLookupError:  # the thread ended meanwhile
                continue
