"""The line's classifier process: same decisions as in the controller, survives its own death."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from linerig import CONFIG, tmp_registry

from drivers.sim.cells import CellStream
from drivers.sim.profiles import PROFILES
from drivers.sim.xrf import DEFAULT_PROFILE
from drivers.sim.xrfphysics import simulate_cell
from models.registry import Registry
from plant.classifier_frames import Frame
from plant.classifier_process import ClassifierProcess, ClassifierProcessError
from plant.decide import Evidence, InThread
from plant.routing import load_rules


def evidence(n: int) -> list[Evidence]:
    """Simulated cells' spectra, and one cell whose XRF failed."""
    stream = CellStream(7)
    rng = np.random.default_rng(7)
    profile = PROFILES[DEFAULT_PROFILE]
    spectra = [simulate_cell(stream.truth(s), profile, 0.05, rng) for s in range(n)]
    return [*(Evidence(spectrum=s) for s in spectra), Evidence(spectrum_error="XRF timeout")]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive: its parent has not reaped it yet
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_decides_as_the_controller_would_and_restarts_after_being_killed() -> None:
    registry = Registry(Path(tmp_registry()))
    model = registry.active_model()
    rules = load_rules(CONFIG)
    items = evidence(40)

    async def scenario() -> None:
        here = await InThread(model.classifier, rules, model.version).decide_batch(items)
        proc = ClassifierProcess(registry, model.info.name, rules)
        await proc.start()
        try:
            assert proc.model_version == model.version
            there = await proc.decide_batch(items)
            assert there == here
            assert there[-1].route == "quarantine"  # no spectrum, no passport
            assert {d.model_version for d in there[:-1]} == {model.version}

            first = proc.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            with pytest.raises(ClassifierProcessError, match="exited"):
                await proc.decide_batch(items[:3])
            # the next batch gets a new process, and the same answers
            assert await proc.decide_batch(items[:3]) == here[:3]
            assert proc.pid not in (None, first)
        finally:
            last = proc.pid
            await proc.close()
        assert last is not None and not alive(last)
        assert proc.pid is None

    asyncio.run(scenario())


def test_a_model_that_does_not_load_is_refused_and_the_old_one_keeps_deciding() -> None:
    registry = Registry(Path(tmp_registry()))
    model = registry.active_model()
    rules = load_rules(CONFIG)
    items = evidence(3)

    async def scenario() -> None:
        proc = ClassifierProcess(registry, model.info.name, rules)
        await proc.start()
        try:
            assert await proc.use(model.info.name) == model.version
            with pytest.raises(ClassifierProcessError, match="no-such-model"):
                await proc.use("no-such-model")
            decisions = await proc.decide_batch(items)
            assert {d.model_version for d in decisions[:-1]} == {model.version}
        finally:
            await proc.close()

    asyncio.run(scenario())


def test_a_model_that_does_not_load_at_start_says_so() -> None:
    registry = Registry(Path(tmp_registry()))
    rules = load_rules(CONFIG)

    async def scenario() -> None:
        proc = ClassifierProcess(registry, "no-such-model", rules)
        with pytest.raises(ClassifierProcessError, match="no-such-model"):
            await proc.start()
        assert proc.pid is None  # the child was stopped

    asyncio.run(scenario())


def test_a_classifier_that_cannot_start_is_retried_after_a_backoff_not_for_every_batch() -> None:
    """A model that will not load must not make every batch wait seconds for a start that fails
    again: batches fail at once (their cells go to quarantine, saying why) until the backoff
    has passed; an engineer's activation of a good model starts it at once."""
    registry = Registry(Path(tmp_registry()))
    model = registry.active_model()
    rules = load_rules(CONFIG)
    items = evidence(3)

    async def scenario() -> None:
        proc = ClassifierProcess(registry, "no-such-model", rules, restart_backoff_s=(0.5, 2.0))
        try:
            with pytest.raises(ClassifierProcessError, match="no-such-model"):
                await proc.decide_batch(items)
            assert proc.start_attempts == 1
            for _ in range(3):  # within the backoff: no new child, the reason is kept
                with pytest.raises(ClassifierProcessError, match=r"no-such-model.*next start"):
                    await proc.decide_batch(items)
            assert proc.start_attempts == 1 and proc.pid is None
            await asyncio.sleep(0.6)  # the backoff has passed: one more try, which fails again
            with pytest.raises(ClassifierProcessError, match="no-such-model"):
                await proc.decide_batch(items)
            assert proc.start_attempts == 2
            assert await proc.use(model.info.name) == model.version  # at once, no backoff
            decisions = await proc.decide_batch(items)
            assert {d.model_version for d in decisions[:-1]} == {model.version}
        finally:
            await proc.close()

    asyncio.run(scenario())


def test_a_child_whose_parent_was_killed_exits_without_a_traceback() -> None:
    """After SIGKILL of `plant run` the child's socket is reset (its last answer was never read):
    it ends quietly, it does not print a traceback into the plant's log."""
    parent, child = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "plant.classifier_process", str(child.fileno())],
        pass_fds=[child.fileno()],
        stderr=subprocess.PIPE,
        text=True,
    )
    child.close()
    # "decide" before "init" is not understood: the child answers with an error
    parent.sendall(Frame({"kind": "decide", "cells": []}).to_bytes())
    time.sleep(1.0)  # the answer waits, unread, in the parent's socket
    parent.close()  # with unread data: the child's next read is reset, as after SIGKILL
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "Traceback" not in err, err
