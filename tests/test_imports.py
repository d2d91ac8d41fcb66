"""The import rule of docs/architecture.md, checked over every tracked .py file (lazy imports too).

`hmi -> plant -> {models, drivers}`, and simulators are wired only by the command line:
- plant/ (except plant/cli.py and plant/commands/) never imports drivers.sim or hmi;
- models/ never imports plant or hmi, and from drivers only drivers.spectra;
- drivers/ outside drivers/sim/ never imports plant, hmi, models or drivers.sim;
- hmi/ never imports drivers.sim.
"""

from __future__ import annotations

import ast
import subprocess
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def forbidden(path: str, module: str) -> bool:
    """Whether the file at `path` (relative to the repository) may not import `module`."""
    top, mod_top = path.split("/")[0], module.split(".")[0]
    is_sim = module == "drivers.sim" or module.startswith("drivers.sim.")
    if top == "plant":
        root = path == "plant/cli.py" or path.startswith("plant/commands/")
        return not root and (is_sim or mod_top == "hmi")
    if top == "models":
        other_driver = (
            mod_top == "drivers"
            and module != "drivers"
            and not (module == "drivers.spectra" or module.startswith("drivers.spectra."))
        )
        return mod_top in ("plant", "hmi") or other_driver
    if top == "drivers" and not path.startswith("drivers/sim/"):
        return mod_top in ("plant", "hmi", "models") or is_sim
    if top == "hmi":
        return is_sim
    return False


def imports_of(path: str, source: str) -> Iterator[tuple[int, list[str]]]:
    """(line, candidate module names) of every import statement, relative ones resolved.

    `from a.b import c` gives ["a.b", "a.b.c"]: c may be a module (`from drivers import sim`).
    """
    package = path.removesuffix(".py").split("/")[:-1]
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, [alias.name]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield node.lineno, [module, *(f"{module}.{a.name}" for a in node.names)]


def violations(root: Path, files: list[str]) -> dict[tuple[str, str], int]:
    """(file, module) -> first line, for every import against the rule."""
    found: dict[tuple[str, str], int] = {}
    for path in files:
        for line, candidates in imports_of(path, (root / path).read_text(encoding="utf-8")):
            bad = next((m for m in candidates if forbidden(path, m)), None)
            if bad is not None:
                found.setdefault((path, bad), line)
    return found


def tracked_python_files(root: Path) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=root, capture_output=True, text=True, check=True
    )
    return listed.stdout.split()


def test_no_import_against_the_rule() -> None:
    found = violations(REPO, tracked_python_files(REPO))
    bad = sorted(f"{path}:{line} imports {mod}" for (path, mod), line in found.items())
    assert not bad, "imports against docs/architecture.md's rule:\n" + "\n".join(bad)


def test_checker_sees_lazy_relative_and_module_imports(tmp_path: Path) -> None:
    planted = {
        "plant/engine.py": "def start():\n    from drivers.sim import plc\n",  # lazy
        "plant/views.py": "from hmi import app\n",
        "plant/commands/sim.py": "from drivers.sim.plc import serve\n",  # composition root: fine
        "models/fit.py": "import drivers.xrf\nfrom drivers.spectra import Spectrum\n",
        "drivers/plc.py": "from .sim import plc\n",  # relative: drivers.sim
        "drivers/sim/plc.py": "from plant.domain import Route\n",  # simulators may
        "hmi/api.py": "if True:\n    import drivers.sim.cells as cells\n",
        "bench/run.py": "import drivers.sim.xrf\n",  # outside the layers
    }
    for name, text in planted.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)

    found = violations(tmp_path, tracked_python_files(tmp_path))
    assert found == {
        ("plant/engine.py", "drivers.sim"): 2,
        ("plant/views.py", "hmi"): 1,
        ("models/fit.py", "drivers.xrf"): 1,
        ("drivers/plc.py", "drivers.sim"): 1,
        ("hmi/api.py", "drivers.sim.cells"): 2,
    }
