"""Public files the tests read but the repository does not hold (tests/data/PUBLIC_DATA.md).

Files copied from other public repositories are not committed here. The tests that need them
read them from the directory named by `PLANT_PUBLIC_DATA` (layout: `real_spectra/<file>`,
`reference-passports/<folder>/<file>`) and skip when it is not set or lacks the file;
with `PLANT_REQUIRE_PUBLIC_DATA=1` a missing file fails the test instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PUBLIC_DATA_ENV = "PLANT_PUBLIC_DATA"
REQUIRE_PUBLIC_DATA_ENV = "PLANT_REQUIRE_PUBLIC_DATA"


def public_file(relpath: str) -> Path:
    """`$PLANT_PUBLIC_DATA/relpath` (a file or a folder); skips the test when it is not there."""
    root = os.environ.get(PUBLIC_DATA_ENV)
    if root:
        path = Path(root).resolve() / relpath
        if path.exists():
            return path
    why = f"public data {relpath} not here: set {PUBLIC_DATA_ENV} (tests/data/PUBLIC_DATA.md)"
    if os.environ.get(REQUIRE_PUBLIC_DATA_ENV) == "1":
        pytest.fail(why, pytrace=False)
    pytest.skip(why)
