"""Versioned chemistry models on disk: skops files (never pickle) + metadata, an active model.

Layout under the registry root (the plant's data dir, `var/models/`):
    <name>/model.skops   the estimator, written by skops.io
    <name>/model.json    metadata: version, created, training-data fingerprint, metrics,
                         FEATURE_VERSION, library versions, rules, sha256 of model.skops
    active.json          {"active": name, "history": [previous names, newest last]}
The committed default (models/data/default.skops + default.json) answers when nothing is
activated. Loading refuses anything that is not a skops file of ours: a pickle, a zip that is
not skops, a file whose sha256 differs from its metadata, or one that contains types outside
TRUSTED_TYPES (a skops file can only build those; it never runs code it carries).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.classifier import Classifier, Rules
from models.features import FEATURE_VERSION

DEFAULT_DIR = Path(__file__).parent / "data"
DEFAULT_NAME = "default"
MODEL_FILE = "model.skops"
META_FILE = "model.json"
ACTIVE_FILE = "active.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# Types our estimators need beyond skops' defaults (sklearn estimators and numpy are trusted by
# skops itself). Anything else in a file means it is not ours.
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)


class RegistryError(Exception):
    """A model cannot be saved, found, trusted or loaded; the message says which and why."""


@dataclass(frozen=True)
class ModelInfo:
    """One model in the registry (or the committed default)."""

    name: str
    path: Path  # the .skops file
    meta: dict[str, Any]
    builtin: bool = False

    @property
    def version(self) -> str:
        return str(self.meta.get("version", self.name))


@dataclass(frozen=True)
class LoadedModel:
    """An active model ready to classify; `version` is what the line records on each cell."""

    info: ModelInfo
    classifier: Classifier

    @property
    def version(self) -> str:
        return self.info.version


def fingerprint(items: list[tuple[str, str]]) -> str:
    """Training-data fingerprint: sha256 over (file content hash, label) pairs, sorted."""
    h = hashlib.sha256()
    for digest, label in sorted(items):
        h.update(f"{digest}\t{label}\n".encode())
    return h.hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions that must match for a model to behave as evaluated."""
    import numpy
    import scipy
    import sklearn
    import skops

    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "skops": skops.__version__,
    }


def check_name(name: str) -> str:
    """Model names become directory names: letters, digits, '.', '_', '-' only."""
    if not _NAME.match(name):
        raise RegistryError(
            f"model name {name!r}: use 1-64 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )
    return name


def save_model(
    estimator: Any,
    skops_path: Path,
    meta_path: Path,
    *,
    name: str,
    rules: Rules,
    data_fingerprint: str,
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write an estimator with skops and its metadata JSON; returns the metadata."""
    import skops.io as sio

    skops_path.parent.mkdir(parents=True, exist_ok=True)
    sio.dump(estimator, skops_path, compression=zipfile.ZIP_DEFLATED)
    foreign = sorted(set(sio.get_untrusted_types(file=skops_path)) - set(TRUSTED_TYPES))
    if foreign:
        skops_path.unlink()
        raise RegistryError(f"{name}: estimator needs types the loader would refuse: {foreign}")
    created = datetime.now(UTC)
    meta = {
        "name": name,
        "version": f"{name}@{created:%Y%m%dT%H%M%SZ}",
        "created": created.isoformat(timespec="seconds"),
        "feature_version": FEATURE_VERSION,
        "classes": [str(c) for c in estimator.classes_],
        "training_data_fingerprint": data_fingerprint,
        "metrics": metrics,
        "rules": rules.as_dict(),
        "libraries": library_versions(),
        "sha256": _sha256(skops_path),
        **(extra or {}),
    }
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def load_classifier(skops_path: Path, meta: dict[str, Any]) -> Classifier:
    """Load a skops model file after checking it is one of ours; RegistryError otherwise."""
    import skops.io as sio

    try:
        head = skops_path.read_bytes()[:4]
    except OSError as exc:
        raise RegistryError(f"{skops_path}: cannot read model file ({exc.strerror})") from None
    if head[:1] == b"\x80" or head[:2] in (b"cc", b"(d", b"(l"):
        raise RegistryError(
            f"{skops_path}: this is a Python pickle, refused (a pickle can run code when it is "
            "loaded; models must be saved with skops)"
        )
    if not zipfile.is_zipfile(skops_path):
        raise RegistryError(f"{skops_path}: not a skops model file (not a zip archive)")
    expected = meta.get("sha256")
    if not expected:
        raise RegistryError(f"{skops_path}: metadata has no sha256; refusing an unverified model")
    if _sha256(skops_path) != expected:
        raise RegistryError(
            f"{skops_path}: sha256 differs from its metadata: the file was changed after it was "
            "saved, refused"
        )
    if meta.get("feature_version") != FEATURE_VERSION:
        raise RegistryError(
            f"{skops_path}: model built for feature version {meta.get('feature_version')!r}, "
            f"this software computes {FEATURE_VERSION!r}: retrain it (plant train)"
        )
    try:
        untrusted = sio.get_untrusted_types(file=skops_path)
    except Exception as exc:  # a corrupt archive raises anything from zipfile/json
        raise RegistryError(f"{skops_path}: not a readable skops file ({exc})") from None
    foreign = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if foreign:
        raise RegistryError(f"{skops_path}: contains types this plant does not trust: {foreign}")
    try:
        estimator = sio.load(skops_path, trusted=list(untrusted))
        return Classifier(estimator, Rules.from_dict(meta.get("rules", {})))
    except Exception as exc:  # a damaged member raises anything from numpy/zipfile/skops
        raise RegistryError(f"{skops_path}: cannot load model ({exc!r})") from None


class Registry:
    """Models under one root directory, plus the committed default."""

    def __init__(self, root: Path, default_dir: Path = DEFAULT_DIR) -> None:
        self.root = root
        self.default_dir = default_dir

    # -- what is there
    def _default(self) -> ModelInfo | None:
        path = self.default_dir / f"{DEFAULT_NAME}.skops"
        meta_path = self.default_dir / f"{DEFAULT_NAME}.json"
        if not path.exists() or not meta_path.exists():
            return None
        return ModelInfo(DEFAULT_NAME, path, _read_meta(meta_path), builtin=True)

    def list_models(self) -> list[ModelInfo]:
        """The built-in default first, then registry models by creation time."""
        found = []
        if self.root.is_dir():
            for d in sorted(self.root.iterdir()):
                if (d / MODEL_FILE).exists() and (d / META_FILE).exists():
                    found.append(ModelInfo(d.name, d / MODEL_FILE, _read_meta(d / META_FILE)))
        found.sort(key=lambda m: str(m.meta.get("created", "")))
        default = self._default()
        return ([default] if default else []) + found

    def get(self, name: str) -> ModelInfo:
        for info in self.list_models():
            if info.name == name:
                return info
        names = ", ".join(m.name for m in self.list_models()) or "none"
        raise RegistryError(f"no model named {name!r} (available: {names})")

    # -- the active model
    def _state(self) -> dict[str, Any]:
        path = self.root / ACTIVE_FILE
        if not path.exists():
            return {"active": DEFAULT_NAME, "history": []}
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8 or not JSON
            raise RegistryError(f"{path}: unreadable ({exc})") from None
        if not isinstance(state, dict) or not isinstance(state.get("active"), str):
            raise RegistryError(f"{path}: expected {{'active': name, 'history': [...]}}")
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / (ACTIVE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.root / ACTIVE_FILE)

    def active_name(self) -> str:
        return str(self._state()["active"])

    def active_model(self) -> LoadedModel:
        """Load the active model (the committed default when none was activated)."""
        info = self.get(self.active_name())
        return LoadedModel(info, load_classifier(info.path, info.meta))

    def load(self, name: str) -> LoadedModel:
        info = self.get(name)
        return LoadedModel(info, load_classifier(info.path, info.meta))

    def activate(self, name: str) -> ModelInfo:
        """Make `name` the active model after checking it loads; the previous one is kept for
        rollback."""
        info = self.get(name)
        load_classifier(info.path, info.meta)  # refuse to activate what cannot be loaded
        state = self._state()
        if state["active"] != name:
            state["history"] = [*state.get("history", []), state["active"]][-20:]
            state["active"] = name
            self._write_state(state)
        return info

    def rollback(self) -> ModelInfo:
        """Go back to the model that was active before the last activation."""
        state = self._state()
        history = list(state.get("history", []))
        if not history:
            raise RegistryError("nothing to roll back to: no earlier active model")
        previous = history.pop()
        info = self.get(previous)
        state.update(active=previous, history=history)
        self._write_state(state)
        return info

    def model_dir(self, name: str) -> Path:
        """Where a new model of that name is written (refuses to overwrite one)."""
        check_name(name)
        if name == DEFAULT_NAME:
            raise RegistryError(f"{name!r} is the built-in model's name; choose another")
        d = self.root / name
        if (d / MODEL_FILE).exists():
            raise RegistryError(f"a model named {name!r} exists already ({d})")
        return d


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8 or not JSON
        raise RegistryError(f"{path}: model metadata unreadable ({exc})") from None
    if not isinstance(meta, dict):
        raise RegistryError(f"{path}: model metadata must be a JSON object")
    return meta
