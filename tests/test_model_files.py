"""Model files the registry must refuse with a clear RegistryError: pickles in any protocol,
random bytes, wrong or missing checksums, skops archives damaged or rewritten by someone who also
fixed the checksum, and archives that would build untrusted types. tests/test_classifier.py has
the basic pickle / tampered-zip / foreign-type cases; these add the rest (docs/robustness.md)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.classifier import Classifier, Rules, train
from models.features import N_FEATURES
from models.registry import (
    DEFAULT_DIR,
    META_FILE,
    MODEL_FILE,
    Registry,
    RegistryError,
    load_classifier,
    save_model,
)

pytestmark = pytest.mark.timeout(300)

FUZZ = settings(
    max_examples=50,
    deadline=None,  # pytest-timeout catches a hang; a deadline measured the loaded machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict[str, Any]]:
    """A small, genuine model file of ours and its metadata."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, N_FEATURES))
    y = np.repeat(["LFP", "NMC811", "CAN"], 20)
    x[y == "LFP", 0] += 4
    d = tmp_path_factory.mktemp("genuine")
    meta = save_model(
        train(x, list(y)),
        d / MODEL_FILE,
        d / META_FILE,
        name="genuine",
        rules=Rules(),
        data_fingerprint="f" * 64,
        metrics={},
    )
    return (d / MODEL_FILE).read_bytes(), meta


def _install(root: Path, name: str, content: bytes, meta: dict[str, Any]) -> Path:
    """Put a model file with its metadata into a registry directory, as an attacker could."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / MODEL_FILE).write_bytes(content)
    (d / META_FILE).write_text(json.dumps(meta))
    return d / MODEL_FILE


def _resigned(meta: dict[str, Any], content: bytes) -> dict[str, Any]:
    """Metadata whose sha256 was rewritten to match: the checksum alone no longer protects."""
    return meta | {"sha256": hashlib.sha256(content).hexdigest()}


def refused(root: Path, name: str, match: str) -> None:
    """Every way the plant would load it says no, with the same clear reason."""
    reg = Registry(root)
    with pytest.raises(RegistryError, match=match) as info:
        reg.activate(name)
    assert name in str(info.value)
    with pytest.raises(RegistryError, match=match):
        reg.load(name)
    assert reg.active_name() == "default"  # nothing was switched


def test_the_genuine_file_loads(tmp_path: Path, saved: tuple[bytes, dict[str, Any]]) -> None:
    """The baseline the refusals below are measured against."""
    content, meta = saved
    _install(tmp_path, "ok", content, meta)
    assert isinstance(Registry(tmp_path).load("ok").classifier, Classifier)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_pickle_of_any_protocol_is_refused_even_with_a_matching_checksum(
    tmp_path: Path, saved: tuple[bytes, dict[str, Any]], protocol: int
) -> None:
    _, meta = saved
    evil = pickle.dumps({"estimator": "anything"}, protocol=protocol)
    _install(tmp_path, "evil", evil, _resigned(meta, evil))
    refused(tmp_path, "evil", r"pickle|not a skops model file")


@pytest.mark.parametrize(
    ("name", "change", "match"),
    [
        ("wrong_sum", {"sha256": "0" * 64}, r"sha256 differs"),
        ("no_sum", {"sha256": None}, r"metadata has no sha256"),
        ("empty_sum", {"sha256": ""}, r"metadata has no sha256"),
        ("old_features", {"feature_version": "0-old"}, r"feature version"),
    ],
)
def test_metadata_that_does_not_vouch_for_the_file_is_refused(
    tmp_path: Path, saved: tuple[bytes, dict[str, Any]], name: str, change: dict[str, Any],
    match: str,
) -> None:  # fmt: skip
    content, meta = saved
    _install(tmp_path, name, content, meta | change)
    refused(tmp_path, name, match)


def test_unreadable_metadata_is_a_registry_error(
    tmp_path: Path, saved: tuple[bytes, dict[str, Any]]
) -> None:
    content, meta = saved
    _install(tmp_path, "m", content, meta)
    (tmp_path / "m" / META_FILE).write_bytes(b"\xff\xfe{not json")
    with pytest.raises(RegistryError, match=r"model metadata unreadable"):
        Registry(tmp_path).list_models()


def test_one_flipped_byte_is_refused(tmp_path: Path, saved: tuple[bytes, dict[str, Any]]) -> None:
    content, meta = saved
    flipped = bytearray(content)
    flipped[len(flipped) // 2] ^= 0x01
    _install(tmp_path, "flip", bytes(flipped), meta)
    refused(tmp_path, "flip", r"sha256 differs|not a skops model file")


def _rewrite(content: bytes, edit: dict[str, bytes | None]) -> bytes:
    """The skops zip with members replaced (bytes), removed (None) or added."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(content)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            if item.filename not in edit:
                dst.writestr(item, src.read(item))
        for name, data in edit.items():
            if data is not None:
                dst.writestr(name, data)
    return out.getvalue()


def test_a_rewritten_archive_building_an_untrusted_type_is_refused(
    tmp_path: Path, saved: tuple[bytes, dict[str, Any]]
) -> None:
    """An attacker who edits schema.json to build os.system and fixes the checksum."""
    content, meta = saved
    with zipfile.ZipFile(io.BytesIO(content)) as z:
        schema = json.loads(z.read("schema.json"))
    schema["__module__"], schema["__class__"] = "os", "system"
    evil = _rewrite(content, {"schema.json": json.dumps(schema).encode()})
    _install(tmp_path, "evil", evil, _resigned(meta, evil))
    refused(tmp_path, "evil", r"does not trust|not a readable skops file|cannot load model")
    assert not os.path.exists(tmp_path / "pwned")


def test_an_archive_without_its_schema_is_refused(
    tmp_path: Path, saved: tuple[bytes, dict[str, Any]]
) -> None:
    content, meta = saved
    broken = _rewrite(content, {"schema.json": None})
    _install(tmp_path, "broken", broken, _resigned(meta, broken))
    refused(tmp_path, "broken", r"not a readable skops file|cannot load model")


@FUZZ
@given(raw=st.binary(max_size=2048))
def test_random_bytes_with_a_matching_checksum_are_refused(
    tmp_path_factory: pytest.TempPathFactory, saved: tuple[bytes, dict[str, Any]], raw: bytes
) -> None:
    _, meta = saved
    path = tmp_path_factory.mktemp("random") / MODEL_FILE
    path.write_bytes(raw)
    with pytest.raises(RegistryError, match=str(path)):
        load_classifier(path, _resigned(meta, raw))


@FUZZ
@given(data=st.data())
def test_any_damage_inside_the_archive_is_refused_or_still_a_working_model(
    tmp_path_factory: pytest.TempPathFactory,
    saved: tuple[bytes, dict[str, Any]],
    data: st.DataObject,
) -> None:
    """Members cut, replaced with garbage or JSON of the wrong shape, checksum fixed up: a
    RegistryError naming the file, never another exception, never code run."""
    content, meta = saved
    with zipfile.ZipFile(io.BytesIO(content)) as z:
        names = z.namelist()
        member = data.draw(st.sampled_from(names))
        original = z.read(member)
    replacement = data.draw(
        st.sampled_from(
            [None, b"", b"{}", b"[]", b"null", b'{"__class__": "system", "__module__": "os"}']
        )
        | st.binary(max_size=256)
        | st.integers(0, max(0, len(original) - 1)).map(lambda n: original[:n])
    )
    damaged = _rewrite(content, {member: replacement})
    path = tmp_path_factory.mktemp("damaged") / MODEL_FILE
    path.write_bytes(damaged)
    try:
        model = load_classifier(path, _resigned(meta, damaged))
    except RegistryError as exc:
        assert str(path) in str(exc)
        return
    x = np.zeros((1, N_FEATURES))
    assert model.predict_features(x, np.array([1e5]))[0].chemistry  # it really works


def test_the_committed_default_passes_its_own_checks() -> None:
    """The built-in model is held to the same rules (sha256, trusted types only)."""
    meta = json.loads((DEFAULT_DIR / "default.json").read_text())
    assert isinstance(load_classifier(DEFAULT_DIR / "default.skops", meta), Classifier)
