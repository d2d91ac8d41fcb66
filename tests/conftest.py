"""Shared fixtures: real databases (SQLite and PostgreSQL) and a leak check."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqttrig import Broker, need_mosquitto
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from plant.store import Store, upgrade

PG_ENV = "PLANT_TEST_PG_URL"
REQUIRE_PG_ENV = "PLANT_REQUIRE_PG"
REPO = Path(__file__).resolve().parent.parent


def _pg_admin_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        return None
    try:
        eng = create_engine(url, isolation_level="AUTOCOMMIT")
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
    except Exception as exc:
        if os.environ.get(REQUIRE_PG_ENV):
            raise RuntimeError(f"{PG_ENV}={url} is not reachable: {exc}") from exc
        return None
    return url


_PG = _pg_admin_url()


def _skip_pg_reason() -> str:
    if os.environ.get(REQUIRE_PG_ENV):
        raise RuntimeError(f"{REQUIRE_PG_ENV} is set but {PG_ENV} is not")
    return f"PostgreSQL not reachable (set {PG_ENV}, as .ci/run does)"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    if _PG is None:
        pytest.skip(_skip_pg_reason())
    name = f"plant_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(_PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(_PG).set(database=name).render_as_string(hide_password=False)
    admin.dispose()
    try:
        yield url
    finally:
        # A fresh connection: a test may have restarted the server meanwhile.
        admin = create_engine(_PG, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'plant.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty database URL, once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(scope="session")
def _migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head, copied for each test's store (a migration run per
    test cost about a second)."""
    path = tmp_path_factory.mktemp("template") / "plant.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def store(db_url: str, _migrated_sqlite: Path) -> Iterator[Store]:
    """A migrated store on each backend."""
    if db_url.startswith("sqlite:///"):
        shutil.copyfile(_migrated_sqlite, db_url.removeprefix("sqlite:///"))
    else:
        upgrade(db_url)
    s = Store(db_url)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves non-daemon threads running (as pymodbus's suite does)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    for t in leaked:
        t.join(timeout=2.0)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test leaked threads: {still}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say plainly whether the PostgreSQL tests ran, so CI output proves it."""
    ran = skipped = 0
    for key in ("passed", "failed", "error", "skipped"):
        for rep in terminalreporter.stats.get(key, []):
            if "postgresql" in getattr(rep, "nodeid", ""):
                if key == "skipped":
                    skipped += 1
                elif rep.when == "call" or key == "error":
                    ran += 1
    where = make_url(_PG).render_as_string(hide_password=True) if _PG else "no server"
    terminalreporter.write_line(f"PostgreSQL store tests: {ran} ran, {skipped} skipped ({where})")


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A mosquitto of its own on a free loopback port, for one test (tests/mqttrig.py)."""
    need_mosquitto()
    b = Broker()
    b.start()
    yield b
    b.stop()
