"""Mistakes on the command line: each gives one `error:` line on stderr, never a traceback.

Every case runs `plant` as a process, as a user would type it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from linerig import config_copy, plant_env


def plant(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`plant ARGS...` in `cwd` (whose config/ does not exist unless made), environment clean."""
    return subprocess.run(
        [sys.executable, "-m", "plant.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**plant_env(), **(env or {})},
        timeout=120,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command, without its `error: ` prefix."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0].removeprefix("error: ")


@pytest.mark.parametrize(
    ("args", "names"),
    [
        ((), "Missing command"),
        (("foo",), "No such command 'foo'"),
        (("classify",), "Missing argument"),
        (("run", "--cells", "abc"), "'--cells'"),
        (("run", "--config"), "'--config' requires an argument"),
        (("db",), "plant db --help"),
        (("users", "list", "--confg", "x"), "--confg"),
    ],
    ids=[
        "no-command",
        "unknown-command",
        "classify-no-path",
        "cells-not-int",
        "config-no-dir",
        "group-no-command",
        "misspelt-option",
    ],
)
def test_usage_mistake_is_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], names: str
) -> None:
    result = plant(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert names in one_error_line(result)
    assert result.stdout == ""


@pytest.mark.parametrize("before", [True, False], ids=["before-subcommand", "after-subcommand"])
def test_config_works_before_and_after_the_subcommand(tmp_path: Path, before: bool) -> None:
    db = tmp_path / "given.db"
    cfg = config_copy(tmp_path, db_url=f"sqlite:///{db}")
    args = (
        ("--config", str(cfg), "db", "upgrade")
        if before
        else ("db", "upgrade", "--config", str(cfg))
    )
    result = plant(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert db.exists()  # the database of the given config, not of ./config


def test_missing_config_dir_after_the_subcommand_is_named(tmp_path: Path) -> None:
    result = plant("run", "--config", str(tmp_path / "nowhere"), "--cells", "1", cwd=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result) == f"{tmp_path / 'nowhere' / 'plant.toml'}: file not found"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", [("db", "upgrade"), ("users", "list")])
def test_unreachable_postgresql_is_one_line(tmp_path: Path, command: tuple[str, ...]) -> None:
    url = f"postgresql+psycopg://plant:secret@127.0.0.1:{closed_port()}/plant"
    cfg = config_copy(tmp_path, db_url=url)
    result = plant("--config", str(cfg), *command, cwd=tmp_path)
    assert result.returncode != 0
    line = one_error_line(result)
    assert line.startswith("cannot open database postgresql+psycopg://plant:***@127.0.0.1:")
    assert "secret" not in line


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("not-a-url", "not a database URL"),
        ("postgresql+nodriver://plant@db/plant", "unknown database driver 'postgresql+nodriver'"),
    ],
)
@pytest.mark.parametrize("command", [("db", "upgrade"), ("users", "list"), ("run", "--cells", "1")])
def test_malformed_database_url_in_environment_is_one_line(
    tmp_path: Path, url: str, problem: str, command: tuple[str, ...]
) -> None:
    cfg = config_copy(tmp_path, db_url=f"sqlite:///{tmp_path / 'plant.db'}")
    result = plant("--config", str(cfg), *command, cwd=tmp_path, env={"PLANT_DATABASE_URL": url})
    assert result.returncode == 2
    assert one_error_line(result).startswith(f"$PLANT_DATABASE_URL: {problem}")


def test_malformed_database_url_in_plant_toml_names_file_and_key(tmp_path: Path) -> None:
    cfg = config_copy(tmp_path, db_url="sqlite:///x.db")
    toml = cfg / "plant.toml"
    toml.write_text(toml.read_text().replace('"sqlite:///x.db"', '"sqlite//x.db"'))
    result = plant("--config", str(cfg), "db", "upgrade", cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith(f"{toml}: database.url: ")
    assert "not a database URL" in line


@pytest.mark.parametrize("command", [("bench",), ("bench", "store")])
def test_bench_refuses_the_plants_own_database(tmp_path: Path, command: tuple[str, ...]) -> None:
    cfg = config_copy(tmp_path, db_url="sqlite:///plant.db")  # relative: in the working directory
    own = f"sqlite:///{tmp_path / 'plant.db'}"
    result = plant("--config", str(cfg), *command, "--database", own, cwd=tmp_path)
    assert result.returncode == 2
    assert "is the plant's own database: give " in one_error_line(result)
    assert not (tmp_path / "plant.db").exists()  # nothing written to it
