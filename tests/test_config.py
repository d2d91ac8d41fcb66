"""Config files: typos and wrong types are refused with one readable line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plant.config import ConfigError, load_plant

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cfg_dir(tmp_path: Path) -> Path:
    d = tmp_path / "config"
    shutil.copytree(REPO / "config", d)
    return d


def run_plant(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PLANT_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "plant.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def test_shipped_config_loads() -> None:
    cfg = load_plant(REPO / "config")
    assert cfg.hmi.host == "127.0.0.1"
    assert cfg.database.url.startswith("sqlite:///")


def test_unknown_section_names_file_and_key(cfg_dir: Path) -> None:
    (cfg_dir / "plant.toml").write_text(
        (cfg_dir / "plant.toml").read_text() + "\n[databse]\nurl='x'\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_plant(cfg_dir)
    assert "plant.toml" in str(exc.value)
    assert "databse: unknown key" in str(exc.value)


def test_wrong_type_names_key(cfg_dir: Path) -> None:
    text = (cfg_dir / "plant.toml").read_text().replace("port = 8000", 'port = "eighty"')
    (cfg_dir / "plant.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"plant\.toml: hmi\.port: .*eighty"):
        load_plant(cfg_dir)


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (lambda t: t + "\n[bogus]\nx = 1\n", "bogus: unknown key"),
        (lambda t: t.replace("xrf_heads = 8", 'xrf_heads = "four"'), "sim.xrf_heads"),
        (lambda t: t + "\n[[[not toml", "not valid TOML"),
    ],
)
def test_plant_run_bad_config_exits_with_one_line(
    cfg_dir: Path, tmp_path: Path, edit, expect
) -> None:  # type: ignore[no-untyped-def]
    (cfg_dir / "plant.toml").write_text(edit((cfg_dir / "plant.toml").read_text()))
    proc = run_plant("--config", str(cfg_dir), "run", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "plant.toml" in lines[0] and expect in lines[0]


def test_env_config_dir_and_database_url(cfg_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    proc = run_plant("db", "upgrade", cwd=tmp_path, env={"PLANT_CONFIG_DIR": str(cfg_dir)})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "var" / "plant.db").exists()
    proc = subprocess.run(
        [sys.executable, "-m", "plant.cli", "db", "upgrade"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PLANT_CONFIG_DIR": str(cfg_dir), "PLANT_DATABASE_URL": url},
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "other.db").exists()


def test_run_refuses_outdated_schema(cfg_dir: Path, tmp_path: Path) -> None:
    proc = run_plant("--config", str(cfg_dir), "run", cwd=tmp_path)
    assert proc.returncode != 0
    assert "plant db upgrade" in proc.stderr
    assert "Traceback" not in proc.stderr
