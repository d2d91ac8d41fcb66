"""The chemistry models as the HMI and the line see them: list, activate, roll back, reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.registry import Registry, RegistryError


class ModelCatalog:
    """A plant-side view of the model registry under `<data_dir>/models`."""

    def __init__(self, data_dir: Path) -> None:
        self.registry = Registry(data_dir / "models")

    def describe(self) -> dict[str, Any]:
        """Every model with its version, creation time and validation metrics; which is active."""
        try:
            active = self.registry.active_name()
            models = self.registry.list_models()
        except RegistryError as exc:
            return {"available": False, "reason": str(exc), "models": []}
        return {
            "available": True,
            "active": active,
            "models": [
                {
                    "name": m.name,
                    "version": m.version,
                    "builtin": m.builtin,
                    "active": m.name == active,
                    "created": m.meta.get("created"),
                    "feature_version": m.meta.get("feature_version"),
                    "metrics": m.meta.get("metrics", {}),
                }
                for m in models
            ],
        }

    def activate(self, name: str) -> str:
        """Make `name` the active model (it is loaded first, so a bad file is refused);
        returns the previously active name. Unknown name -> LookupError."""
        old = self.registry.active_name()
        try:
            self.registry.get(name)
        except RegistryError as exc:
            raise LookupError(str(exc)) from None
        try:
            self.registry.activate(name)
        except RegistryError as exc:  # e.g. a tampered file: refused, nothing changes
            raise RuntimeError(str(exc)) from None
        return old
