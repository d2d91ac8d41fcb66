"""`plant run` in-process: a run that fails to start leaves nothing running behind it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from linerig import config_copy

from models.registry import ACTIVE_FILE, DEFAULT_DIR, DEFAULT_NAME, META_FILE, MODEL_FILE
from plant.children import running_children
from plant.classifier_process import ClassifierProcessError
from plant.commands.wiring import HYDROMET_CHILD, run_line
from plant.config import load_plant
from plant.runner import RunOptions
from plant.store import upgrade


def tampered_active_model(models: Path) -> None:
    """Activate a copy of the default model whose file was changed after it was saved."""
    bad = models / "tampered"
    bad.mkdir(parents=True)
    shutil.copy(DEFAULT_DIR / f"{DEFAULT_NAME}.json", bad / META_FILE)
    data = (DEFAULT_DIR / f"{DEFAULT_NAME}.skops").read_bytes()
    (bad / MODEL_FILE).write_bytes(data + b"\0")
    (models / ACTIVE_FILE).write_text(json.dumps({"active": "tampered", "history": []}))


def test_a_classifier_that_does_not_start_stops_the_run_and_leaves_no_child(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    upgrade(url)
    cfg_dir = config_copy(tmp_path, db_url=url)
    cfg = load_plant(cfg_dir)
    tampered_active_model(cfg.plant.data_dir / "models")
    switch = sys.getswitchinterval()

    async def scenario() -> None:
        with pytest.raises(ClassifierProcessError, match="sha256 differs"):
            await run_line(cfg, cfg_dir, RunOptions(simulate=True, cells=10, hmi=False))
        # The hydromet child was started beside the classifier: it is stopped and reaped.
        for module in (HYDROMET_CHILD, "plant.classifier_process", "plant.cli"):
            assert running_children(os.getpid(), module) == [], module

    asyncio.run(scenario())
    assert sys.getswitchinterval() == switch
