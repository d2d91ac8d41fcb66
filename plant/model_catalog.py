"""The chemistry models as the HMI and the line see them: list, activate, roll back, reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.registry import Registry, RegistryError
from plant.promotion import Verdict, gate, reference_set
from plant.routing import load_rules
from plant.store import Store


class GateRefused(Exception):
    """The promotion gate refused a model; the message is the gate's one line."""


class ModelCatalog:
    """A plant-side view of the model registry under `<data_dir>/models`."""

    def __init__(self, data_dir: Path, config_dir: Path) -> None:
        self.registry = Registry(data_dir / "models")
        self.config_dir = config_dir

    def describe(self) -> dict[str, Any]:
        """Every model with its version, creation time and validation metrics; which is active."""
        try:
            active = self.registry.active_name()
            models = self.registry.list_models()
            ref = reference_set(self.registry.root)
        except RegistryError as exc:
            return {"available": False, "reason": str(exc), "models": []}
        return {
            "available": True,
            "active": active,
            "reference_set": ref.meta if ref else None,
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

    def activate(
        self,
        name: str,
        *,
        force: bool = False,
        reason: str = "",
        store: Store | None = None,
        user: str = "cli",
    ) -> tuple[str, Verdict]:
        """Make `name` the active model if the promotion gate lets it (or `force` with a
        reason); it is loaded first, so a bad file is refused. With a store the activation is
        audited in the same transaction (forced ones with their reason and the gate's line).
        Returns the previously active name and the gate's verdict. Unknown name ->
        LookupError; refused by the gate -> GateRefused; force without a reason -> ValueError;
        a file that cannot be loaded -> RuntimeError."""
        if force and not reason.strip():
            raise ValueError("reason: a forced activation needs a reason (it is audited)")
        old = self.registry.active_name()
        try:
            self.registry.get(name)
        except RegistryError as exc:
            raise LookupError(str(exc)) from None
        try:
            verdict = gate(self.registry, name, load_rules(self.config_dir))
            if not verdict.allowed and not force:
                raise GateRefused(verdict.line)
            if store is None:
                self.registry.activate(name)
                return old, verdict
            action, new = "model.activate", name
            if force:
                action, new = (
                    "model.activate_forced",
                    f"{name}; reason: {reason.strip()}; {verdict.line}",
                )
            with store.begin() as s:
                store.audit(s, user, action, "classifier", old, new)
                self.registry.activate(name)
        except RegistryError as exc:  # e.g. a tampered file: refused, nothing changes
            raise RuntimeError(str(exc)) from None
        return old, verdict
