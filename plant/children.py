"""What the controller's child processes (classifier, hydromet) share: restart backoff, stopping,
and their CPU and pids from Linux /proc (for `plant bench`, the soak and tests)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from pathlib import Path


async def reap(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for a child told to exit; kill it if it has not within `timeout` s."""
    try:
        await asyncio.to_thread(proc.wait, timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        await asyncio.to_thread(proc.wait)


def running_children(parent: int, module: str) -> list[int]:
    """Pids of the `python -m <module>` processes that process `parent` started and that still
    run (zombies excluded)."""
    pids = []
    for proc in Path("/proc").iterdir():
        stat = _stat(proc.name) if proc.name.isdigit() else None
        if stat is None or int(stat[1]) != parent or stat[0] == "Z":
            continue
        with contextlib.suppress(OSError):  # gone meanwhile
            if module.encode() in (proc / "cmdline").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
    return pids


def cpu_of(proc: subprocess.Popen[bytes] | None) -> float:
    """User + system CPU seconds of a running child, 0.0 once it is gone."""
    stat = _stat(str(proc.pid)) if proc is not None else None
    if stat is None:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), None if gone."""
    try:
        return (Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
